"""Image processor for MCMAE (ConvMAE): the official evaluation transform.

Resize the short side to 256 (bicubic), center crop 224, rescale to [0, 1], normalise with the ImageNet mean/std
(official `main_finetune.py` eval transform: crop ratio 224 / 256 = 0.875), giving `pixel_values` `(B, 3, 224, 224)`.
Pretraining augmentation (random resized crop + flip) lives in the training data pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling


class McMaeImageProcessor(PilBackend):
    r"""Resize, center crop, rescale and normalise images for MCMAE.

    Args (all optional, as [`ViTImageProcessor`] / [`CLIPImageProcessor`]):
        size (`dict`, defaults to `{"shortest_edge": 256}`): resize target of the short side.
        crop_size (`dict`, defaults to `{"height": 224, "width": 224}`): center-crop size (the model's `image_size`).
        resample (defaults to bicubic), `image_mean` / `image_std` (ImageNet), `do_resize`, `do_center_crop`,
        `do_rescale`, `do_normalize`, `do_convert_rgb`.
    """

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 256}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def to_pil_images(self, pixel_values: torch.Tensor) -> list[Image.Image]:
        """Undo `normalize` and `rescale`: `(B, 3, H, W)` model inputs -> RGB PIL images (values clipped)."""
        mean = np.asarray(self.image_mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.image_std, dtype=np.float32).reshape(1, -1, 1, 1)
        pixels = pixel_values.detach().float().cpu().numpy() * std + mean  # (B, 3, H, W) in [0, 1]
        pixels = np.clip(np.rint(pixels / self.rescale_factor), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        return [Image.fromarray(np.ascontiguousarray(image)) for image in pixels]

    def reconstruction_grid(self, columns: Sequence[torch.Tensor], padding: int = 2) -> Image.Image:
        """One row per image, one column per tensor: e.g. original / masked / reconstruction / visible + prediction.

        Args:
            columns: tensors `(B, 3, H, W)` of normalised pixels, all the same shape (the outputs of
                `McMaeForPreTraining.reconstruct`, with `pixel_values` first).
            padding: white pixels between cells.

        Returns:
            An RGB image of `B` rows and `len(columns)` columns.
        """
        if not columns or any(column.shape != columns[0].shape for column in columns):
            raise ValueError(f"`columns` must be tensors of one shape, got {[tuple(c.shape) for c in columns]}.")
        cells = [self.to_pil_images(column) for column in columns]  # [column][row]
        batch_size, _, height, width = columns[0].shape
        grid = Image.new(
            "RGB",
            (len(columns) * (width + padding) + padding, batch_size * (height + padding) + padding),
            (255, 255, 255),
        )
        for col, images in enumerate(cells):
            for row, image in enumerate(images):
                grid.paste(image, (padding + col * (width + padding), padding + row * (height + padding)))
        return grid


__all__ = ["McMaeImageProcessor"]
