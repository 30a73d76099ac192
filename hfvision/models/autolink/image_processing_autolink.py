"""Image processor for AutoLink: resize to the detector size, map pixels to [-1, 1]; keypoints back to pixels.

The official pipeline resizes to 128 px and normalises with mean = std = 0.5. Its random horizontal flip is a training
augmentation and belongs to the training data pipeline: the processor stays deterministic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling
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


class AutoLinkImageProcessor(PilBackend):
    r"""Resize to `size` (bilinear), rescale to [0, 1], normalise with mean = std = 0.5 (so pixels lie in [-1, 1]).

    Args (all optional, as transformers' image processors):
        size (`dict`, defaults to `{"height": 128, "width": 128}`): the model's `image_size`.
        resample (defaults to bilinear), `image_mean` / `image_std` (0.5), `do_resize`, `do_rescale`,
        `do_normalize`, `do_convert_rgb`.
    """

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"height": 128, "width": 128}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

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

    def post_process_keypoint_detection(
        self,
        outputs: Mapping[str, torch.Tensor],
        target_sizes: Sequence[Sequence[int]] | torch.Tensor | None = None,
        edge_threshold: float = 0.5,
    ) -> list[dict[str, object]]:
        """Keypoints in pixel coordinates and the graph's strong edges, per image.

        Normalised keypoints (align-corners: -1 / +1 are the centres of the outermost pixels) map to
        `(x + 1) / 2 * (width - 1)` and `(y + 1) / 2 * (height - 1)`, so they lie inside the image.

        Args:
            outputs: an [`AutoLinkModelOutput`] (or a dict) with `keypoints` `(B, K, 2)` and `edge_weights` `(K, K)`
                (one graph for every image) or `(B, K, K)`.
            target_sizes: per image, the `(height, width)` of the original image; `None` uses the processor's
                `size` (the model input's pixels).
            edge_threshold: keep the pairs whose weight is at least this fraction of the strongest edge's (in
                [0, 1]); the graph's scale is arbitrary (the decoder can rescale the edge map), so the threshold is
                relative.

        Returns:
            One dict per image: `"keypoints"`, a `(K, 2)` float tensor of pixel (x, y); `"edges"`, a list of
            `(i, j, weight)` with i < j, strongest first (`weight` is the raw edge weight).
        """
        keypoints = outputs["keypoints"].detach().float().cpu()
        edge_weights = outputs["edge_weights"].detach().float().cpu()
        batch_size, num_keypoints = keypoints.shape[:2]
        if edge_weights.shape == (num_keypoints, num_keypoints):
            edge_weights = edge_weights.expand(batch_size, num_keypoints, num_keypoints)
        if edge_weights.shape != (batch_size, num_keypoints, num_keypoints):
            raise ValueError(
                f"`outputs['edge_weights']` must have shape ({num_keypoints}, {num_keypoints}) or ({batch_size}, "
                f"{num_keypoints}, {num_keypoints}), got {tuple(edge_weights.shape)}."
            )
        if not 0.0 <= edge_threshold <= 1.0:
            raise ValueError(
                f"`edge_threshold` must be in [0, 1] (relative to the strongest edge), got {edge_threshold}."
            )
        if target_sizes is None:
            target_sizes = [(self.size["height"], self.size["width"])] * batch_size
        sizes = torch.as_tensor(target_sizes, dtype=torch.float32, device="cpu")
        if sizes.shape != (batch_size, 2):
            raise ValueError(f"`target_sizes` needs one (height, width) per image ({batch_size}), got {sizes.shape}.")
        scale = (sizes.flip(-1) - 1)[:, None, :] / 2  # (B, 1, 2): (width - 1) / 2, (height - 1) / 2
        pixel_keypoints = (keypoints + 1) * scale  # (B, K, 2) pixel (x, y)

        first, second = torch.triu_indices(num_keypoints, num_keypoints, offset=1)
        results = []
        for index in range(batch_size):
            weights = edge_weights[index, first, second]  # (P,)
            strongest = weights.max()
            keep = weights >= edge_threshold * strongest if strongest > 0 else torch.zeros_like(weights, dtype=bool)
            order = torch.argsort(weights[keep], descending=True)
            edges = [
                (int(i), int(j), float(w))
                for i, j, w in zip(first[keep][order], second[keep][order], weights[keep][order], strict=True)
            ]
            results.append({"keypoints": pixel_keypoints[index], "edges": edges})
        return results


__all__ = ["AutoLinkImageProcessor"]
