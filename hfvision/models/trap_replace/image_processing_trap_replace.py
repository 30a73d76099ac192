"""Image processor for Trap and Replace: resize to the training size, rescale to [0, 1], optionally to grayscale.

The paper's CIFAR recipe feeds the network `ToTensor()` pixels in [0, 1] without normalisation (the decoder's sigmoid
redraws them), so `do_normalize` defaults to False. `num_channels=1` turns every image into one luminance channel
(ITU-R 601, as PIL's `L`), for grayscale data such as Fashion-MNIST. 16-bit, 32-bit and float images are mapped to
8 bits by their real range first (`to_8bit_images`). `save_pretrained` writes transformers 5's nested
`processor_config.json` (see its docstring for why).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs
from transformers.utils import IMAGE_PROCESSOR_NAME, PROCESSOR_NAME

LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2, PIL's "L" conversion


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


class TrapReplaceImagesKwargs(ImagesKwargs, total=False):
    num_channels: int


class TrapReplaceImageProcessor(PilBackend):
    r"""Resize to `size`, rescale to [0, 1]; `num_channels=1` keeps one luminance channel.

    Args:
        size (`dict`, *optional*, defaults to `{"height": 32, "width": 32}`): the training resolution (its height
            and width must be multiples of the model's `config.stem_stride`).
        num_channels (`int`, *optional*, defaults to 3): 3 (RGB) or 1 (luminance, for grayscale models).
        do_normalize (`bool`, *optional*, defaults to `False`): the paper feeds [0, 1] pixels; if you normalise, put
            the same `image_mean` / `image_std` into the model config so its reconstruction target is de-normalised.
        Other arguments as transformers' image processors (`resample`, `image_mean`, `image_std`, `do_resize`, ...).
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = TrapReplaceImagesKwargs
    resample = PILImageResampling.BILINEAR
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"height": 32, "width": 32}
    num_channels = 3
    do_resize = True
    do_rescale = True
    do_normalize = False
    do_convert_rgb = True

    def _preprocess(self, images: list[np.ndarray], **kwargs: Any) -> BatchFeature:
        """transformers' `_preprocess`, after reducing `(3, H, W)` images to `(1, H, W)` luminance if asked."""
        num_channels = kwargs.pop("num_channels", None) or self.num_channels
        if num_channels not in (1, 3):
            raise ValueError(f"`num_channels` must be 1 or 3, got {num_channels!r}.")
        if num_channels == 1:
            weights = np.asarray(LUMINANCE_WEIGHTS, dtype=np.float32)[:, None, None]
            converted = []
            for image in images:
                if image.shape[0] == 3:  # images are (C, H, W) here; an RGB copy of a gray image is exact
                    gray = (image.astype(np.float32) * weights).sum(axis=0, keepdims=True)
                    image = np.clip(np.rint(gray), 0, 255).astype(image.dtype) if image.dtype == np.uint8 else gray
                converted.append(image)
            images = converted
            if kwargs.get("do_normalize"):
                kwargs["image_mean"] = _first_channel(kwargs.get("image_mean"))
                kwargs["image_std"] = _first_channel(kwargs.get("image_std"))
        return super()._preprocess(images, **kwargs)

    def preprocess(self, images: Any, *args: Any, **kwargs: Any) -> BatchFeature:
        """transformers' `preprocess`, after [`to_8bit_images`] has mapped 16-bit, 32-bit and float images to 8 bits."""
        return super().preprocess(to_8bit_images(images), *args, **kwargs)

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


def _first_channel(values: Any) -> Any:
    """A per-channel mean / std reduced to the single channel of a grayscale image."""
    if isinstance(values, (list, tuple)) and len(values) > 1:
        return [values[0]]
    return values


__all__ = ["TrapReplaceImageProcessor", "to_8bit_images"]
