"""LPS speed paths: the fast forms compute what the official forms compute (issue #19)."""

from __future__ import annotations

import pytest
import torch

from hfvision.models.lps import LpsForSemanticSegmentation, LpsResNetConfig, polyphase_components


@pytest.mark.parametrize(
    "overrides",
    [
        {"stem": "imagenet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]},
        {"layer_type": "bottleneck", "embedding_size": 8, "hidden_sizes": [16, 32, 32], "depths": [1, 1, 1]},
    ],
    ids=["basic-imagenet-stem", "bottleneck"],
)
def test_strided_path_equals_official_stride_one_then_subsample(overrides):
    """`downsample="stride"` strides its convolutions and max-pool; the official form (stride-1 conv, then component
    0, which `blurpool` with a size-1 filter computes) gives the same logits and phases from the same weights, in eval.
    """
    config = LpsResNetConfig.from_preset("lps-resnet18-tiny", num_labels=3, **overrides)
    torch.manual_seed(0)
    strided = LpsForSemanticSegmentation(config.__class__(**{**config.to_dict(), "downsample": "stride"})).eval()
    official = LpsForSemanticSegmentation(
        config.__class__(**{**config.to_dict(), "downsample": "blurpool", "blurpool_filter_size": 1})
    ).eval()
    assert strided.state_dict().keys() == official.state_dict().keys()  # checkpoints load either way
    official.load_state_dict(strided.state_dict())
    pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fast = strided(pixel_values, output_hidden_states=True)
        reference = official(pixel_values, output_hidden_states=True)
        phases = strided.lps_resnet(pixel_values).phase_probs, official.lps_resnet(pixel_values).phase_probs
    strided_convs = [m for m in strided.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided_convs) >= 2  # the fast path really strides (main branch and shortcut)
    torch.testing.assert_close(fast.logits, reference.logits, rtol=1e-4, atol=1e-5)
    for left, right in zip(fast.hidden_states, reference.hidden_states, strict=True):
        torch.testing.assert_close(left, right, rtol=1e-4, atol=1e-5)
    for left, right in zip(*phases, strict=True):
        assert torch.equal(left, right)


def test_polyphase_split_is_one_contiguous_copy():
    """The split hands the scoring CNN a contiguous `(B, 4, C, h, w)` tensor: its `(B * 4, C, h, w)` view is free."""
    hidden_states = torch.randn(2, 3, 6, 8)
    components = polyphase_components(hidden_states)
    assert components.is_contiguous() and components.shape == (2, 4, 3, 3, 4)
    for k in range(4):
        assert torch.equal(components[:, k], hidden_states[..., k // 2 :: 2, k % 2 :: 2])
