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
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_transforms import resize as np_resize
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    PILImageResampling,
)
from transformers.processing_utils import ImagesKwargs
from transformers.utils import IMAGE_PROCESSOR_NAME, PROCESSOR_NAME


# Copied from hfvision.models.pyramidclip.image_processing_pyramidclip.to_8bit_images
def to_8bit_images(images: Any, name: str = "images") -> Any:
    """Map high-bit-depth images to 8-bit grayscale by their real range; leave every other image as it is.

    PIL's `convert("RGB")`, which transformers' image processors apply, clips 16-bit, 32-bit and float pixels to
    [0, 255] (a 16-bit photo comes out almost all white, a float image in [0, 1] almost all black). The rules here:

    - `I;16*` (16-bit) and `I` (32-bit integer, what Pillow also opens 16-bit PNGs as) PIL images and uint16 arrays:
      the full 16-bit range maps to [0, 255] (value / 257). The type's range, not the image's own: an image stored
      with fewer significant bits (a 12-bit scan, 0..4095) comes out proportionally dark rather than stretched, so
      its intensities keep their meaning; scale it yourself (`array * 16`) to use the whole range. `I` values
      outside [0, 65535] raise.
    - `F` PIL images and float arrays: values in [0, 1] are multiplied by 255, values in [0, 255] (any with a
      maximum above 1) are kept; negative, larger or non-finite values raise.
    - 2-D numpy arrays (or tensors) are `(H, W)` grayscale images, as PIL's `L`: uint8 as is, bool as 0 / 255,
      uint16 and float by the rules above; other integer types (e.g. int64) raise, as their range is ambiguous.

    Args:
        images: one image (PIL, numpy, torch) or a (nested) list of them.
        name: the argument name used in error messages.

    Returns:
        `images` with each such image replaced by an 8-bit PIL image of mode `L` (same nesting).

    Raises:
        ValueError: an empty list of images, or a pixel range the rules above do not cover.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError(f"`{name}` is an empty list; expected at least one image.")
        return type(images)(to_8bit_images(image, name) for image in images)
    if isinstance(images, Image.Image):
        if not (images.mode.startswith("I;16") or images.mode in ("I", "F")):
            return images
        pixels = np.asarray(images)
    elif getattr(images, "ndim", None) == 2 and hasattr(images, "shape"):
        pixels = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)
    else:
        return images
    kind = f"mode {images.mode}" if isinstance(images, Image.Image) else f"{pixels.dtype} (H, W)"
    if pixels.dtype == np.bool_:
        return Image.fromarray(pixels.astype(np.uint8) * 255)
    if pixels.dtype == np.uint8:
        return Image.fromarray(pixels)
    if np.issubdtype(pixels.dtype, np.integer):
        if pixels.dtype != np.uint16 and not isinstance(images, Image.Image):
            raise ValueError(
                f"`{name}`: a 2-D {pixels.dtype} array has no standard pixel range; pass uint8 (0..255), uint16 "
                "(0..65535) or float (0..1) pixels."
            )
        if pixels.dtype.itemsize > 2 and (pixels.min() < 0 or pixels.max() > 65535):
            raise ValueError(
                f"`{name}`: a {kind} image must hold 16-bit values in [0, 65535], got [{pixels.min()}, "
                f"{pixels.max()}]; rescale it to uint8 or float in [0, 1] first."
            )
        scaled = pixels.astype(np.float32) / 257.0  # 65535 -> 255
    else:
        pixels = pixels.astype(np.float32)
        if not np.isfinite(pixels).all():
            raise ValueError(f"`{name}`: a {kind} image holds NaN or infinite values; expected finite pixels.")
        low, high = float(pixels.min()), float(pixels.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"`{name}`: a {kind} image must hold values in [0, 1] or [0, 255], got [{low}, {high}]; "
                "rescale it first."
            )
        scaled = pixels * 255.0 if high <= 1.0 else pixels
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


class LpsImagesKwargs(ImagesKwargs, total=False):
    size_divisor: int
    do_circular_pad: bool


class LpsImageProcessor(PilBackend):
    r"""Resize (to `size`, then to the nearest multiples of `size_divisor`), rescale to [0, 1], normalise.

    Args:
        size (`dict`, *optional*, defaults to `{"height": 224, "width": 224}`): target size, or `{"shortest_edge": n}`
            to keep the aspect ratio.
        size_divisor (`int`, *optional*, defaults to 32): the resized height and width are rounded to multiples of
            this (use the model's `config.total_stride`).
        do_circular_pad (`bool`, *optional*, defaults to `False`): with `do_resize=False`, pad each image at the
            bottom and right by wrapping it around (`np.pad(mode="wrap")`) to the next multiples of `size_divisor`.
            Without it, such an image raises a `ValueError` here, as the model would: a size that is not a multiple
            of the total stride silently voids the exact shift invariance. The padded image is periodic with the
            padded size, so invariance then holds for circular shifts of the padded image.
        Other arguments as transformers' image processors (`resample`, `image_mean`, `image_std`, `do_resize`, ...).
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = LpsImagesKwargs
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 224, "width": 224}
    size_divisor = 32
    do_circular_pad = False
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def _preprocess(self, images: list[np.ndarray], **kwargs: Any) -> BatchFeature:
        """transformers' `_preprocess`; without resizing, sizes must be multiples of `size_divisor` (or are padded)."""
        divisor = kwargs.get("size_divisor") or self.size_divisor
        if not kwargs.get("do_resize"):
            for index, image in enumerate(images):
                height, width = image.shape[-2:]  # images are (C, H, W) here
                pad = ((0, 0), (0, -height % divisor), (0, -width % divisor))
                if pad[1][1] or pad[2][1]:
                    if not kwargs.get("do_circular_pad"):
                        raise ValueError(
                            f"`images` item {index} is {height}x{width}, not a multiple of `size_divisor` = {divisor} "
                            "(the model's total stride), which voids LPS's exact shift invariance; resize "
                            "(`do_resize=True`) or pad it (`do_circular_pad=True`)."
                        )
                    images[index] = np.pad(image, pad, mode="wrap")
        return super()._preprocess(images, **kwargs)

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

    def preprocess(self, images: Any, *args: Any, **kwargs: Any) -> BatchFeature:
        """transformers' `preprocess`, after [`to_8bit_images`] has mapped 16-bit, 32-bit and float images to 8 bits."""
        return super().preprocess(to_8bit_images(images), *args, **kwargs)

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
