"""LpsImageProcessor: sizes divisible by the total stride, normalisation, segmentation post-processing."""

from __future__ import annotations

import json

import numpy as np
import torch
from transformers import AutoImageProcessor
from transformers.modeling_outputs import SemanticSegmenterOutput

from hfvision.models.lps import LpsImageProcessor
from tests.models.lps.conftest import random_image, tiny_image_processor


def test_sizes_are_multiples_of_the_divisor():
    processor = tiny_image_processor()
    for height, width in ((40, 48), (90, 30), (16, 16), (17, 61)):
        pixel_values = processor(random_image(0, height, width), return_tensors="pt").pixel_values
        out_height, out_width = pixel_values.shape[-2:]
        assert pixel_values.shape[:2] == (1, 3) and out_height % 4 == 0 and out_width % 4 == 0
        assert min(out_height, out_width) == 16  # the short side is already a multiple
    fixed = LpsImageProcessor(size={"height": 30, "width": 50}, size_divisor=8)
    assert fixed(random_image(1), return_tensors="pt").pixel_values.shape[-2:] == (32, 48)


def test_rescale_and_normalise_with_imagenet_statistics():
    processor = LpsImageProcessor(size={"height": 8, "width": 8}, size_divisor=4)
    image = random_image(2, 8, 8)  # no resampling at the same size
    pixel_values = processor(image, return_tensors="np").pixel_values[0]
    expected = (
        np.asarray(image, np.float32).transpose(2, 0, 1) / 255 - np.array(processor.image_mean)[:, None, None]
    ) / np.array(processor.image_std)[:, None, None]
    np.testing.assert_allclose(pixel_values, expected, rtol=1e-5, atol=1e-5)


def test_post_process_semantic_segmentation(tmp_path):
    logits = torch.zeros(2, 3, 4, 4)
    logits[0, 1] = 1.0
    logits[1, 2, :, :2] = 1.0
    maps = LpsImageProcessor().post_process_semantic_segmentation(
        SemanticSegmenterOutput(logits=logits), target_sizes=[(8, 8), (4, 6)]
    )
    assert maps[0].shape == (8, 8) and (maps[0] == 1).all()
    assert maps[1].shape == (4, 6) and set(maps[1].unique().tolist()) == {0, 2}
    processor = tiny_image_processor()
    processor.save_pretrained(tmp_path)
    assert LpsImageProcessor.from_pretrained(tmp_path).size_divisor == 4


def test_saved_in_the_nested_processor_config(tmp_path, local_hub):
    """`save_pretrained` writes `processor_config.json` -> `image_processor` (see its docstring), keeps other entries
    of that file, and the Auto class, `from_pretrained` and `push_to_hub` work with it."""
    (tmp_path / "processor_config.json").write_text(json.dumps({"other": {"kept": True}}))
    processor = LpsImageProcessor(size={"height": 24, "width": 40}, size_divisor=8, image_mean=[0.5] * 3)
    assert processor.save_pretrained(tmp_path) == [str(tmp_path / "processor_config.json")]
    assert not (tmp_path / "preprocessor_config.json").exists()
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["other"] == {"kept": True} and saved["image_processor"]["image_processor_type"] == "LpsImageProcessor"
    processor.push_to_hub("org/lps-image-processor")
    for source in (tmp_path, "org/lps-image-processor"):
        for loaded in (LpsImageProcessor.from_pretrained(source), AutoImageProcessor.from_pretrained(source)):
            assert type(loaded) is LpsImageProcessor and loaded.size_divisor == 8
            assert loaded.to_dict() == processor.to_dict()
