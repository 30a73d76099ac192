"""The shift-consistency metric modules: hand-worked cases, the shift helpers, and LPS models at 100%."""

import numpy as np
import pytest
import torch

from hfvision.metrics import available_metrics, load_metric
from hfvision.models.lps import LpsForSemanticSegmentation, LpsResNetConfig, LpsResNetForImageClassification


@pytest.fixture(scope="module")
def circular():
    return load_metric("shift_consistency", config_name="circular")


def test_hand_worked_cases(circular):
    assert "shift_consistency" in available_metrics()
    result = circular.compute(predictions=[[1, 1, 1], [0, 2, 0]], references=[1, 0])
    # image 2: pairs (0,1) no, (0,2) yes, (1,2) no -> 1/3; pairwise mean (1 + 1/3) / 2; accuracy 3 + 2 of 6
    assert result == pytest.approx(
        {"circular_consistency": 0.5, "circular_pairwise_consistency": 2 / 3, "accuracy": 5 / 6}
    )
    standard = load_metric("shift_consistency", config_name="standard")
    assert standard.compute(predictions=[[3, 3], [1, 2]], references=[-1, -1]) == {
        "standard_consistency": 0.5,
        "standard_pairwise_consistency": 0.5,
    }
    with pytest.raises(ValueError, match="S >= 2"):
        circular.compute(predictions=[[1], [2]], references=[1, 2])


def test_shift_helpers(circular):
    images = torch.arange(2 * 5 * 6, dtype=torch.float32).view(2, 1, 5, 6)
    assert torch.equal(circular.shift_images(images, (2, -1)), torch.roll(images, (2, -1), dims=(2, 3)))
    shifted = circular.shift_images(images, (2, -1), mode="standard")
    assert torch.equal(shifted[..., 2:, :5], images[..., :3, 1:])  # the content moved down 2, left 1
    assert shifted[..., :2, :].abs().sum() == 0 and shifted[..., :, 5:].abs().sum() == 0  # zero-filled border
    array = images.numpy()
    np.testing.assert_array_equal(
        circular.shift_images(array, (1, 3), mode="standard"),
        circular.shift_images(images, (1, 3), mode="standard").numpy(),
    )
    np.testing.assert_array_equal(circular.shift_images(array, (1, 3)), np.roll(array, (1, 3), axis=(2, 3)))


def test_lps_is_fully_circular_consistent(circular):
    torch.manual_seed(0)
    model = LpsResNetForImageClassification(LpsResNetConfig.from_preset("lps-resnet18-tiny", num_labels=10)).eval()
    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    shifts = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)]  # the paper's 49 shifts
    with torch.no_grad():
        predictions = torch.stack(
            [model(pixel_values=circular.shift_images(images, shift)).logits.argmax(-1) for shift in shifts], dim=1
        )
    result = circular.compute(predictions=predictions.tolist(), references=[-1] * 8)
    assert result == {"circular_consistency": 1.0, "circular_pairwise_consistency": 1.0}


# --- segmentation_shift_consistency ---


def test_segmentation_hand_worked_cases():
    metric = load_metric("segmentation_shift_consistency")
    # one image, 1 x 4 pixels, 3 copies: pixels 0 and 3 agree everywhere, pixel 1 in one pair of 3, pixel 2 in none
    maps = [[[[0, 1, 2, 1]], [[0, 1, 0, 1]], [[0, 2, 1, 1]]]]
    reference = [[[0, 1, 255, 1]]]
    result = metric.compute(predictions=maps, references=reference, num_labels=3)
    assert result["circular_consistency"] == 0.5
    assert result["circular_pairwise_consistency"] == pytest.approx((2 / 4 + 3 / 4 + 2 / 4) / 3)
    # pixel 2 is ignored; class 0: I 3, U 3; class 1: I 5 (pixels 1 and 3), U 6; class 2: I 0, U 1
    assert result["per_class_iou"] == pytest.approx([1.0, 5 / 6, 0.0])
    assert result["mean_iou"] == pytest.approx((1 + 5 / 6 + 0) / 3)
    with pytest.raises(ValueError, match="S >= 2"):
        metric.compute(predictions=[[[[0, 1]]]], references=[[[0, 1]]], num_labels=2)


def test_lps_segmenter_is_fully_shift_consistent():
    torch.manual_seed(0)
    config = LpsResNetConfig.from_preset("lps-resnet18-tiny", num_labels=3)
    model = LpsForSemanticSegmentation(config).eval()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    shifts = [(0, 0), (1, 2), (-3, 1), (5, -7)]
    with torch.no_grad():
        aligned = [
            torch.roll(model(pixel_values=torch.roll(images, s, (2, 3))).logits.argmax(1), (-s[0], -s[1]), (1, 2))
            for s in shifts
        ]
    predictions = torch.stack(aligned, dim=1)  # (N, S, H, W)
    references = predictions[:, 0]
    metric = load_metric("segmentation_shift_consistency", config_name="circular")
    result = metric.compute(predictions=predictions.tolist(), references=references.tolist(), num_labels=3)
    assert result["circular_consistency"] == 1.0 and result["circular_pairwise_consistency"] == 1.0
    assert result["mean_iou"] == 1.0  # every copy equals the first one, taken as the reference
