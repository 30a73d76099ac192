"""Image processor for LPS-ResNet: resize to a multiple of the total stride, rescale, normalise.

Exact circular-shift invariance needs input sizes divisible by the network's total stride (2 ** number of
downsampling layers), so the resized height and width are rounded to multiples of `size_divisor`. Also turns
segmentation logits into label maps (`post_process_semantic_segmentation`, used by the image-segmentation pipeline).
`save_pretrained` writes transformers 5's nested `processor_config.json` instead of the legacy
`preprocessor_config.json` (see its docstring for why).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_backends import PilBackend
from transformers.image_transforms import resize as np_resize
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    PILImageResampling,
)
from transformers.processing_utils import ImagesKwargs
from transformers.utils import IMAGE_PROCESSOR_NAME, PROCESSOR_NAME


class LpsImagesKwargs(ImagesKwargs, total=False):
    size_divisor: int


class LpsImageProcessor(PilBackend):
    r"""Resize (to `size`, then to the nearest multiples of `size_divisor`), rescale to [0, 1], normalise.

    Args:
        size (`dict`, *optional*, defaults to `{"height": 224, "width": 224}`): target size, or `{"shortest_edge": n}`
            to keep the aspect ratio.
        size_divisor (`int`, *optional*, defaults to 32): the resized height and width are rounded to multiples of
            this (use the model's `config.total_stride`).
        Other arguments as transformers' image processors (`resample`, `image_mean`, `image_std`, `do_resize`, ...).
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = LpsImagesKwargs
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 224, "width": 224}
    size_divisor = 32
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def resize(self, image: np.ndarray, size: object, resample: object = None, **kwargs: object) -> np.ndarray:
        """Resize a `(C, H, W)` array to `size`, with height and width rounded to multiples of `size_divisor`."""
        resized = super().resize(image, size, resample=resample, **kwargs)
        height, width = resized.shape[-2:]
        divisor = self.size_divisor
        target = (max(divisor, round(height / divisor) * divisor), max(divisor, round(width / divisor) * divisor))
        if target == (height, width):
            return resized
        return np_resize(
            image,
            size=target,
            resample=resample if resample is not None else self.resample,
            data_format=ChannelDimension.FIRST,
            input_data_format=ChannelDimension.FIRST,
        )

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

    def post_process_semantic_segmentation(
        self, outputs: object, target_sizes: list[tuple[int, int]] | None = None
    ) -> list[torch.Tensor]:
        """Label maps from [`LpsForSemanticSegmentation`] outputs.

        Args:
            outputs: model output with `logits` `(B, num_labels, H, W)`.
            target_sizes: per image, the `(height, width)` to resize the logits to (bilinear) before the argmax.

        Returns:
            One `(height, width)` long tensor of class ids per image.
        """
        logits = outputs.logits
        if target_sizes is not None and len(target_sizes) != len(logits):
            raise ValueError(f"`target_sizes` needs one entry per image ({len(logits)}), got {len(target_sizes)}.")
        maps = []
        for index, image_logits in enumerate(logits):
            if target_sizes is not None:
                size = tuple(int(value) for value in target_sizes[index])
                image_logits = F.interpolate(image_logits[None], size=size, mode="bilinear", align_corners=False)[0]
            maps.append(image_logits.argmax(dim=0))
        return maps


__all__ = ["LpsImageProcessor"]
