"""The Trap and Replace image processor: [0, 1] pixels without normalisation, grayscale, 16-bit images, saving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hfvision.models.trap_replace import TrapReplaceImageProcessor


def test_defaults_keep_pixels_in_unit_range_without_normalisation():
    image = Image.fromarray((np.arange(32 * 32 * 3) % 256).astype(np.uint8).reshape(32, 32, 3))
    pixel_values = TrapReplaceImageProcessor()(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 32, 32)
    expected = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    torch.testing.assert_close(pixel_values[0], expected)  # same size: no resampling, just ToTensor's scaling


def test_grayscale_output_equals_the_gray_image():
    gray = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    processor = TrapReplaceImageProcessor(num_channels=1)
    from_gray = processor(Image.fromarray(gray, mode="L"), return_tensors="pt")["pixel_values"]
    from_rgb = processor(Image.fromarray(gray, mode="L").convert("RGB"), return_tensors="pt")["pixel_values"]
    assert from_gray.shape == (1, 1, 32, 32)
    torch.testing.assert_close(from_gray[0, 0], torch.from_numpy(gray.astype(np.float32) / 255))
    assert torch.equal(from_gray, from_rgb)


def test_16_bit_images_use_their_full_range():
    image = np.full((32, 32), 65535, dtype=np.uint16)
    pixel_values = TrapReplaceImageProcessor(num_channels=1)(image, return_tensors="pt")["pixel_values"]
    assert torch.all(pixel_values == 1.0)


def test_bad_inputs_and_save_load(tmp_path):
    with pytest.raises(ValueError, match="num_channels"):
        TrapReplaceImageProcessor(num_channels=2)(Image.new("L", (32, 32)), return_tensors="pt")
    with pytest.raises(ValueError, match="images"):
        TrapReplaceImageProcessor()([], return_tensors="pt")
    processor = TrapReplaceImageProcessor(size={"height": 16, "width": 16}, num_channels=1)
    processor.save_pretrained(tmp_path)
    reloaded = TrapReplaceImageProcessor.from_pretrained(tmp_path)
    assert reloaded.num_channels == 1 and reloaded.size["height"] == 16
