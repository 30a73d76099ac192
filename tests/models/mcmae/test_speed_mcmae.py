"""MCMAE's channels-last conv block computes the official NCHW block, from the same `Conv2d` weights (issue #19)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hfvision.models.mcmae import McMaeConfig
from hfvision.models.mcmae.modeling_mcmae import McMaeConvBlock


def layer_norm_over_channels(hidden_states: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    """LayerNorm over the channels of a `(B, C, H, W)` map (the official `CBlock`'s norm)."""
    normed = F.layer_norm(hidden_states.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return normed.permute(0, 3, 1, 2)


def test_channels_last_block_equals_the_nchw_block_with_1x1_convolutions():
    config = McMaeConfig.from_preset("mcmae-tiny")
    torch.manual_seed(0)
    block = McMaeConvBlock(config, hidden_size=8, mlp_ratio=2.0).eval()
    for module in block.modules():  # non-trivial norms, so a wrong axis would show
        if isinstance(module, torch.nn.LayerNorm):
            torch.nn.init.normal_(module.weight)
            torch.nn.init.normal_(module.bias)
    assert block.conv_in.weight.shape == (8, 8, 1, 1) and block.fc1.weight.shape == (16, 8, 1, 1)  # checkpoint shapes
    generator = torch.Generator().manual_seed(0)
    hidden_states = torch.randn(2, 8, 6, 6, generator=generator)
    visible = (torch.rand(2, 1, 6, 6, generator=generator) > 0.5).float()
    with torch.no_grad():
        mixed = block.conv_in(layer_norm_over_channels(hidden_states, block.layernorm_before)) * visible
        expected = hidden_states + block.conv_out(block.spatial_conv(mixed))
        mlp = block.fc2(block.activation(block.fc1(layer_norm_over_channels(expected, block.layernorm_after))))
        expected = expected + mlp
        actual = block(hidden_states.permute(0, 2, 3, 1), visible.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
