"""AutoLink inputs: a clear `ValueError` naming the argument, or the right answer, never a silent wrong one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hfvision.models.autolink import AutoLinkConfig, AutoLinkForSelfSupervisedKeypoints, AutoLinkImageProcessor

RAMP = np.tile(np.linspace(0.0, 1.0, 40, dtype=np.float32), (36, 1))  # (36, 40) grayscale ramp in [0, 1]
EIGHT_BIT = np.rint(RAMP * 255).astype(np.uint8)
SIXTEEN_BIT = np.rint(RAMP * 65535).astype(np.uint16)
SAME_RAMP = {  # the ramp in every representation read by its real range; all equal PIL "L" of EIGHT_BIT
    "I;16": lambda: Image.fromarray(SIXTEEN_BIT),
    "I": lambda: Image.fromarray(SIXTEEN_BIT.astype(np.int32)),
    "F": lambda: Image.fromarray(RAMP),
    "2-D uint8": lambda: EIGHT_BIT,
    "2-D uint16": lambda: SIXTEEN_BIT,
    "2-D float": lambda: RAMP,
}
BAD_PIXEL_VALUES = {
    "uint8": (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), "pixel_values.*torch.float32"),
    "float16": (torch.randn(2, 3, 32, 32).half(), "pixel_values.*torch.float32"),
    "NaN": (torch.randn(2, 3, 32, 32).index_fill_(3, torch.tensor([5]), float("nan")), "pixel_values.*NaN"),
    "empty batch": (torch.randn(0, 3, 32, 32), r"pixel_values.*batch >= 1"),
}


@pytest.fixture(scope="module")
def model() -> AutoLinkForSelfSupervisedKeypoints:
    torch.manual_seed(0)
    return AutoLinkForSelfSupervisedKeypoints(AutoLinkConfig.from_preset("autolink-tiny")).eval()


@pytest.mark.parametrize("mode", list(SAME_RAMP))
def test_high_bit_depth_and_2d_images_match_their_8bit_version(mode):
    processor = AutoLinkImageProcessor(size={"height": 32, "width": 32})
    reference = processor(Image.fromarray(EIGHT_BIT), return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(processor(SAME_RAMP[mode](), return_tensors="np")["pixel_values"], reference, atol=1e-4)


@pytest.mark.parametrize(("images", "match"), [(RAMP.astype(np.int64), "images.*int64"), ([], "images.*at least")])
def test_unconvertible_images_raise(images, match):
    with pytest.raises(ValueError, match=match):
        AutoLinkImageProcessor()(images)


@pytest.mark.parametrize("case", list(BAD_PIXEL_VALUES))
def test_bad_pixel_values_raise(model, case):
    pixel_values, match = BAD_PIXEL_VALUES[case]
    with pytest.raises(ValueError, match=match):
        model(pixel_values=pixel_values)
    with pytest.raises(ValueError, match=match):
        model.autolink(pixel_values=pixel_values)
