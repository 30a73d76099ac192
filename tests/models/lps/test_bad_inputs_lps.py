"""LPS inputs: a clear `ValueError` naming the argument, or the right answer, never a silent wrong one.

Besides the checks every model makes, LPS refuses sizes that are not multiples of `config.total_stride` (they would
run but void the exact shift invariance); its image processor resizes to multiples, or pads circularly when asked.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hfvision.models.lps import LpsImageProcessor, LpsResNetConfig, LpsResNetForImageClassification

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
    "uint8": (torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8), "pixel_values.*torch.float32"),
    "float16": (torch.randn(2, 3, 16, 16).half(), "pixel_values.*torch.float32"),
    "NaN": (torch.randn(2, 3, 16, 16).index_fill_(3, torch.tensor([5]), float("nan")), "pixel_values.*NaN"),
    "empty batch": (torch.randn(0, 3, 16, 16), r"pixel_values.*batch >= 1"),
    "18x16 (stride 4)": (torch.randn(2, 3, 18, 16), "pixel_values.*multiples of `config.total_stride` = 4"),
}


@pytest.fixture(scope="module")
def model() -> LpsResNetForImageClassification:
    torch.manual_seed(0)
    return LpsResNetForImageClassification(LpsResNetConfig.from_preset("lps-resnet18-tiny", num_labels=3)).eval()


@pytest.mark.parametrize("mode", list(SAME_RAMP))
def test_high_bit_depth_and_2d_images_match_their_8bit_version(mode):
    processor = LpsImageProcessor(size={"height": 32, "width": 32}, size_divisor=4)
    reference = processor(Image.fromarray(EIGHT_BIT), return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(processor(SAME_RAMP[mode](), return_tensors="np")["pixel_values"], reference, atol=1e-4)


@pytest.mark.parametrize(("images", "match"), [(RAMP.astype(np.int64), "images.*int64"), ([], "images.*at least")])
def test_unconvertible_images_raise(images, match):
    with pytest.raises(ValueError, match=match):
        LpsImageProcessor()(images)


@pytest.mark.parametrize("case", list(BAD_PIXEL_VALUES))
def test_bad_pixel_values_raise(model, case):
    pixel_values, match = BAD_PIXEL_VALUES[case]
    with pytest.raises(ValueError, match=match):
        model(pixel_values=pixel_values)


def test_processor_without_resizing_refuses_or_pads_circularly(model):
    image = np.random.default_rng(0).integers(0, 256, (18, 13, 3), dtype=np.uint8)  # neither side a multiple of 4
    processor = LpsImageProcessor(size_divisor=4, do_resize=False)
    with pytest.raises(ValueError, match=r"images.*18x13.*do_circular_pad"):
        processor(image)
    padded = processor(image, do_circular_pad=True, return_tensors="pt")["pixel_values"]  # (1, 3, 20, 16)
    unpadded = processor(image[:16, :12], return_tensors="pt")["pixel_values"]
    assert padded.shape == (1, 3, 20, 16)
    torch.testing.assert_close(padded[..., :18, :13][..., :16, :12], unpadded)
    torch.testing.assert_close(padded[..., 18:, :13], padded[..., :2, :13])  # wrapped: the bottom rows repeat the top
    torch.testing.assert_close(padded[..., :18, 13:], padded[..., :18, :3])
    assert model(pixel_values=padded).logits.shape == (1, 3)


def test_other_float_dtypes_pass_under_autocast_or_in_a_model_of_that_dtype(model):
    """The dtype check's positive control: autocast casts inputs itself, and a bfloat16 model takes bfloat16."""
    pixel_values = torch.randn(2, 3, 16, 16).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(pixel_values=pixel_values).logits.shape == (2, 3)
    half_model = LpsResNetForImageClassification(model.config).eval().to(torch.bfloat16)
    assert half_model(pixel_values=pixel_values).logits.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"pixel_values.*torch\.bfloat16"):
        half_model(pixel_values=pixel_values.float())
