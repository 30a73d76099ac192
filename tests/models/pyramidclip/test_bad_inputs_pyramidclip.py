"""PyramidCLIP inputs: a clear `ValueError` naming the argument, or the right answer, never a silent wrong one.

High-bit-depth images are converted by their real range ([`to_8bit_images`]); bad pixel values, token ids, boxes
and region features raise at the processor or model boundary.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hfvision.models.pyramidclip import (
    PyramidClipConfig,
    PyramidClipImageProcessor,
    PyramidClipModel,
    PyramidClipProcessor,
)

from .conftest import CAPTIONS

VOCAB_SIZE = 64
RAMP = np.tile(np.linspace(0.0, 1.0, 40, dtype=np.float32), (36, 1))  # (36, 40) grayscale ramp in [0, 1]
EIGHT_BIT = np.rint(RAMP * 255).astype(np.uint8)
SIXTEEN_BIT = np.rint(RAMP * 65535).astype(np.uint16)
# The same ramp in every representation the processors must read by its real range; all equal PIL "L" of EIGHT_BIT.
SAME_RAMP = {
    "I;16": lambda: Image.fromarray(SIXTEEN_BIT),
    "I": lambda: Image.fromarray(SIXTEEN_BIT.astype(np.int32)),
    "F in [0, 1]": lambda: Image.fromarray(RAMP),
    "F in [0, 255]": lambda: Image.fromarray(RAMP * 255),
    "2-D uint8": lambda: EIGHT_BIT,
    "2-D uint16": lambda: SIXTEEN_BIT,
    "2-D float": lambda: RAMP,
    "2-D tensor": lambda: torch.from_numpy(RAMP),
}


def image_processor() -> PyramidClipImageProcessor:
    return PyramidClipImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def model() -> PyramidClipModel:
    torch.manual_seed(0)
    return PyramidClipModel(PyramidClipConfig.from_preset("pyramidclip-tiny", text_config={"vocab_size": VOCAB_SIZE}))


def model_inputs(**overrides: torch.Tensor) -> dict[str, torch.Tensor]:
    inputs = {"input_ids": torch.randint(0, VOCAB_SIZE, (2, 7)), "pixel_values": torch.randn(2, 3, 32, 32)}
    return {**inputs, **overrides}


@pytest.mark.parametrize("mode", list(SAME_RAMP))
def test_high_bit_depth_and_2d_images_match_their_8bit_version(mode):
    processor = image_processor()
    reference = processor(Image.fromarray(EIGHT_BIT), return_tensors="np")["pixel_values"]
    converted = processor(SAME_RAMP[mode](), return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(converted, reference, atol=1e-4)
    pyramid = processor.preprocess_pyramid([SAME_RAMP[mode]()], seed=0, return_tensors="np")["pixel_values"]
    reference_pyramid = processor.preprocess_pyramid([Image.fromarray(EIGHT_BIT)], seed=0, return_tensors="np")
    np.testing.assert_allclose(pyramid, reference_pyramid["pixel_values"], atol=1e-4)


def test_16bit_is_scaled_by_the_full_16bit_range():
    """The documented rule: a 12-bit image stored as 16 bits (max 4095) keeps its meaning, 4095 / 257 -> 16."""
    from hfvision.models.pyramidclip.image_processing_pyramidclip import to_8bit_images

    converted = to_8bit_images(Image.fromarray(np.full((2, 2), 4095, np.uint16)))
    assert converted.mode == "L" and np.asarray(converted).max() == 16


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.arange(12, dtype=np.int64).reshape(3, 4), "images.*int64.*uint8"),
        (Image.fromarray(np.full((2, 2), -3.0, np.float32)), r"images.*\[0, 1\] or \[0, 255\]"),
        (Image.fromarray(np.full((2, 2), np.nan, np.float32)), "images.*NaN"),
        (Image.fromarray(np.full((2, 2), 70000, np.int32)), r"images.*\[0, 65535\]"),
        ([], "images.*at least one image"),
    ],
    ids=["2-D int64", "negative float", "NaN float", "I above 16 bits", "empty batch"],
)
def test_unconvertible_images_raise(image, match):
    with pytest.raises(ValueError, match=match):
        image_processor()(image)


@pytest.mark.parametrize(
    ("boxes", "match"),
    [
        ([[100, 100, 120, 130]], "boxes.*entirely outside"),
        ([[-5, 0, 10, 10]], "boxes.*non-negative"),
        ([[0, 0, 10]], r"boxes.*4 numbers"),
        ([[0, 0, 10], [1, 1, 5], [2, 2, 6], [3, 3, 7]], r"boxes.*4 numbers"),  # 12 numbers: not three boxes of four
        ([[0, 0, 10, 10], [0, 0, 10]], r"boxes.*4 numbers"),
        ([[0, 0, float("nan"), 10]], "boxes.*finite"),
    ],
    ids=["outside", "negative", "three coordinates", "four boxes of three", "ragged", "NaN"],
)
def test_bad_boxes_raise(boxes, match):
    image = Image.fromarray(np.zeros((36, 40, 3), np.uint8))
    with pytest.raises(ValueError, match=match):
        image_processor().preprocess_pyramid([image], boxes=[boxes])


def test_boxes_past_the_edge_are_clipped():
    image = Image.fromarray(np.zeros((36, 40, 3), np.uint8))
    roi = image_processor().preprocess_pyramid([image], boxes=[[[20, 10, 400, 300]]], return_tensors="np")
    np.testing.assert_allclose(roi["roi_features"][0, 0, -4:], [0.5, 10 / 36, 1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize(
    "roi_features",
    [
        [np.zeros((2, 8)), np.zeros((3, 6))],
        [np.zeros((2, 8)), np.zeros(8)],
        [np.zeros((2, 8)), np.zeros((0, 8))],
        [np.zeros((2, 8)), np.full((1, 8), np.nan)],
    ],
    ids=["mixed dims", "1-D", "no regions", "NaN"],
)
def test_bad_roi_features_raise(roi_features):
    images = [Image.fromarray(np.zeros((36, 40, 3), np.uint8))] * 2
    with pytest.raises(ValueError, match="roi_features"):
        image_processor().preprocess_pyramid(images, roi_features=roi_features)


def test_processor_rejects_an_empty_text_batch(tiny_processor: PyramidClipProcessor):
    with pytest.raises(ValueError, match=r"`text`.*at least one"):
        tiny_processor(text=[])
    assert tiny_processor(text=CAPTIONS[:1])["input_ids"].shape[0] == 1


@pytest.mark.parametrize(
    ("pixel_values", "match"),
    [
        (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), "pixel_values.*torch.float32"),
        (torch.randn(2, 3, 32, 32).half(), "pixel_values.*torch.float32"),
        (torch.randn(2, 3, 32, 32).index_fill_(2, torch.tensor([3]), float("nan")), "pixel_values.*NaN"),
        (torch.randn(0, 3, 32, 32), r"pixel_values.*batch >= 1"),
    ],
    ids=["uint8", "float16", "NaN", "empty batch"],
)
def test_bad_pixel_values_raise(model, pixel_values, match):
    with pytest.raises(ValueError, match=match):
        model(**model_inputs(pixel_values=pixel_values))
    with pytest.raises(ValueError, match=match):
        model.get_image_features(pixel_values)


@pytest.mark.parametrize(
    ("input_ids", "match"),
    [
        (torch.rand(2, 7) * 10, "input_ids.*integer"),
        (torch.full((2, 7), VOCAB_SIZE), rf"input_ids.*\[0, {VOCAB_SIZE}\)"),
        (torch.full((2, 7), -1), rf"input_ids.*\[0, {VOCAB_SIZE}\)"),
        (torch.zeros(0, 7, dtype=torch.long), r"input_ids.*batch >= 1"),
    ],
    ids=["float", "past the vocabulary", "negative", "empty batch"],
)
def test_bad_input_ids_raise(model, input_ids, match):
    with pytest.raises(ValueError, match=match):
        model(**model_inputs(input_ids=input_ids))


def test_pyramid_inputs_are_named(model):
    pyramid = {
        "pixel_values_local": torch.randn(2, 3, 32, 32),
        "summary_input_ids": torch.randint(0, VOCAB_SIZE, (2, 5)),
        "attribute_input_ids": torch.full((2, 5), VOCAB_SIZE + 3),
        "roi_features": torch.randn(2, 3, model.config.vision_config.roi_feature_dim),
    }
    with pytest.raises(ValueError, match="attribute_input_ids"):
        model(**model_inputs(), **pyramid, return_loss=True)
    pyramid["attribute_input_ids"] = pyramid["summary_input_ids"]
    pyramid["pixel_values_local"] = pyramid["pixel_values_local"].double()
    with pytest.raises(ValueError, match="pixel_values_local"):
        model(**model_inputs(), **pyramid, return_loss=True)
