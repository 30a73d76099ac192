"""Image processor for MCMAE (ConvMAE): the official evaluation transform.

Resize the short side to 256 (bicubic), center crop 224, rescale to [0, 1], normalise with the ImageNet mean/std
(official `main_finetune.py` eval transform: crop ratio 224 / 256 = 0.875), giving `pixel_values` `(B, 3, 224, 224)`.
Pretraining augmentation (random resized crop + flip) lives in the training data pipeline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.utils import IMAGE_PROCESSOR_NAME, PROCESSOR_NAME


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

    # Copied from hfvision.models.lps.image_processing_lps.LpsImageProcessor.save_pretrained
    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> list[str]:
        """Save as `{"image_processor": {...}}` in `processor_config.json` (transformers 5's nested layout).

        Why not the legacy `preprocessor_config.json`: transformers 5.24's `AutoVideoProcessor`, which every image
        pipeline also tries, reads a legacy file whose `auto_map` names a remote `AutoImageProcessor` as the promise
        of a remote video processor (the same entry with "Image" replaced by "Video"). When the image processor is
        also known locally (hfvision imported) and `trust_remote_code` is unset, it then asks in a terminal whether
        to run that code (15 s timeout) for a class that does not exist. The nested layout is what `ProcessorMixin`
        writes; `from_pretrained` and `AutoImageProcessor` read it first, with its `auto_map` for remote code, and
        `AutoVideoProcessor` finds no video or legacy image-processor config in it, so it stops without asking.

        Args:
            save_directory: folder to write into (created if missing); an existing `processor_config.json` there
                keeps its other entries.
            push_to_hub: also upload the folder's processor files with `push_to_hub` (`repo_id` from `kwargs`,
                else the folder name).
            kwargs: passed on to `push_to_hub`.

        Returns:
            The path of the written `processor_config.json`.
        """
        repo_id = kwargs.pop("repo_id", Path(save_directory).name)
        super().save_pretrained(save_directory)  # the legacy file, and the remote-code file with `auto_map` set
        legacy_file = Path(save_directory) / IMAGE_PROCESSOR_NAME
        nested_file = Path(save_directory) / PROCESSOR_NAME
        nested = json.loads(nested_file.read_text(encoding="utf-8")) if nested_file.is_file() else {}
        nested["image_processor"] = json.loads(legacy_file.read_text(encoding="utf-8"))
        nested_file.write_text(json.dumps(nested, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        legacy_file.unlink()
        if push_to_hub:
            self.push_to_hub(repo_id, **kwargs)
        return [str(nested_file)]

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
