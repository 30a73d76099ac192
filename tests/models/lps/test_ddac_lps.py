"""DDAC (Zou et al. 2020), the paper's second anti-aliasing variant: the layer's low-pass and shift properties, and
LPS + DDAC / the DDAC baseline inside the LPS-ResNet."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

from hfvision.models.lps import DdacLowPassFilter, LpsResNetConfig, LpsResNetForImageClassification

IMAGE_SIZE = 16


def trained_statistics(layer: DdacLowPassFilter) -> DdacLowPassFilter:
    """Non-trivial BatchNorm statistics and affine parameters (the layer at init has mean 0, var 1), in eval mode."""
    generator = torch.Generator().manual_seed(7)
    norm = layer.normalization
    with torch.no_grad():
        norm.weight.copy_(torch.rand(norm.num_features, generator=generator) + 0.5)
        norm.bias.copy_(torch.randn(norm.num_features, generator=generator))
        norm.running_mean.copy_(torch.randn(norm.num_features, generator=generator))
        norm.running_var.copy_(torch.rand(norm.num_features, generator=generator) + 0.5)
    return layer.eval()


def rolled_reference(layer: DdacLowPassFilter, hidden_states: torch.Tensor) -> torch.Tensor:
    """The filter written tap by tap with circular rolls: channel c of group g = c // (C / groups) is the sum over the
    k x k taps (i, j) of weight[g, i * k + j] times the input moved so that pixel (y + i - k // 2, x + j - k // 2)
    lands on (y, x)."""
    weights = layer.filter_weights(hidden_states)  # (B, G, k * k, H, W)
    size, groups, channels = layer.filter_size, layer.groups, hidden_states.shape[1]
    group_of_channel = torch.arange(channels) // (channels // groups)
    output = torch.zeros_like(hidden_states)
    for i in range(size):
        for j in range(size):
            neighbour = torch.roll(hidden_states, (size // 2 - i, size // 2 - j), dims=(2, 3))
            output += weights[:, group_of_channel, i * size + j] * neighbour
    return output


def test_filter_shape_and_taps_are_a_per_pixel_convex_combination():
    layer = trained_statistics(DdacLowPassFilter(channels=8, filter_size=3, groups=4))
    hidden_states = torch.randn(2, 8, 6, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        weights = layer.filter_weights(hidden_states)
        output = layer(hidden_states)
    assert weights.shape == (2, 4, 9, 6, 10) and output.shape == hidden_states.shape
    assert bool((weights >= 0).all())
    # the official softmax runs over groups and taps together: all taps of all groups sum to 1 at every pixel
    torch.testing.assert_close(weights.sum(dim=(1, 2)), torch.ones(2, 6, 10))
    torch.testing.assert_close(output, rolled_reference(layer, hidden_states), rtol=1e-5, atol=1e-6)


def test_one_group_filter_is_low_pass():
    """With one group the k x k taps sum to 1: a constant map is kept, and every output lies between the smallest and
    the largest value of its neighbourhood (a per-pixel weighted average, never an amplification)."""
    layer = trained_statistics(DdacLowPassFilter(channels=3, filter_size=3, groups=1))
    constant = torch.full((1, 3, 8, 8), 2.5)
    hidden_states = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(layer(constant), constant)
        output = layer(hidden_states)
    padded = torch.nn.functional.pad(hidden_states, (1, 1, 1, 1), mode="circular")
    windows = padded.unfold(2, 3, 1).unfold(3, 3, 1).flatten(-2)  # (1, 3, 8, 8, 9)
    assert bool((output >= windows.amin(-1) - 1e-6).all() and (output <= windows.amax(-1) + 1e-6).all())
    # a high-frequency checkerboard is attenuated
    checkerboard = (torch.arange(8)[:, None] + torch.arange(8)[None]).remainder(2).float().mul(2).sub(1)
    with torch.no_grad():
        filtered = layer(checkerboard.expand(1, 3, 8, 8))
    assert float(filtered.abs().max()) < 1.0


def test_filter_commutes_with_circular_shifts():
    layer = trained_statistics(DdacLowPassFilter(channels=8, filter_size=5, groups=2))
    hidden_states = torch.randn(1, 8, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        output = layer(hidden_states)
        for shift in [(1, 0), (0, 3), (5, 7)]:
            torch.testing.assert_close(
                layer(torch.roll(hidden_states, shift, dims=(2, 3))), torch.roll(output, shift, dims=(2, 3))
            )


def ddac_config(**overrides) -> LpsResNetConfig:
    settings = {"num_labels": 4, "antialias": "ddac", "lowpass_filter_size": 3, "antialias_groups": 4}
    return LpsResNetConfig.from_preset("lps-resnet18-tiny", **{**settings, **overrides})


def max_logit_change_over_all_shifts(config: LpsResNetConfig) -> float:
    """Largest logit change over all 256 circular shifts of a 16 x 16 image, at init (eval mode); the classifier is
    drawn with std 1 so that the logits are O(1) and the thresholds mean the same for every model."""
    config.initializer_range = 1.0
    torch.manual_seed(0)
    model = LpsResNetForImageClassification(config).eval()
    image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(3))
    shifted = torch.cat([torch.roll(image, (dy, dx), dims=(2, 3)) for dy in range(16) for dx in range(16)])
    with torch.no_grad():
        logits = model(pixel_values=shifted).logits
    return float((logits - logits[:1]).abs().max())


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_lps_with_ddac_is_invariant_and_the_ddac_baseline_is_not(stem):
    """LPS + DDAC keeps the exact circular-shift invariance; DDAC before plain subsampling (Zou et al.) does not."""
    assert max_logit_change_over_all_shifts(ddac_config(stem=stem)) < 1e-5
    assert max_logit_change_over_all_shifts(ddac_config(stem=stem, downsample="blurpool")) > 1e-3


def test_every_downsampling_layer_and_shortcut_learns_its_own_filter():
    model = LpsResNetForImageClassification(ddac_config(stem="imagenet"))
    filters = {name: module for name, module in model.named_modules() if isinstance(module, DdacLowPassFilter)}
    # ImageNet stem: the second downsampler only (the first has no anti-aliasing, as officially); two stage
    # transitions with a main-branch and a shortcut filter each
    assert len(filters) == 5, sorted(filters)
    pixel_values = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(4))
    model.train()
    model(
        pixel_values=pixel_values, labels=torch.tensor([0, 1, 2]), generator=torch.Generator().manual_seed(0)
    ).loss.backward()
    for name, module in filters.items():
        gradient = module.convolution.weight.grad
        assert gradient is not None and float(gradient.abs().sum()) > 0, name


def test_ddac_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    model = LpsResNetForImageClassification(ddac_config()).eval()
    pixel_values = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(5))
    model.save_pretrained(tmp_path)
    reloaded = LpsResNetForImageClassification.from_pretrained(tmp_path).eval()
    assert reloaded.config.antialias == "ddac" and reloaded.config.antialias_groups == 4
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values).logits, model(pixel_values).logits, rtol=0, atol=0)


def test_bad_ddac_settings_raise():
    with pytest.raises(StrictDataclassClassValidationError, match="odd"):
        ddac_config(lowpass_filter_size=2)
    with pytest.raises(StrictDataclassClassValidationError, match="odd"):
        ddac_config(downsample="blurpool", blurpool_filter_size=4)
    with pytest.raises(StrictDataclassClassValidationError, match="antialias"):
        ddac_config(antialias="gaussian")
    with pytest.raises(StrictDataclassClassValidationError, match="antialias_groups"):
        ddac_config(antialias_groups=0)
    with pytest.raises(ValueError, match="antialias_groups"):
        LpsResNetForImageClassification(ddac_config(antialias_groups=3))  # 8 stem channels
    with pytest.raises(ValueError, match="filter_size"):
        DdacLowPassFilter(channels=4, filter_size=1)
