"""Image processor for PyramidCLIP: the inference view, and the visual pyramid used in pretraining.

Inference (`processor(images)`): CLIP preprocessing - resize the short side (bicubic), center crop, rescale,
normalise with CLIP's mean/std - giving `pixel_values`.

Pretraining (`preprocess_pyramid(images, boxes)`), paper Sec. 3.1:
- global view G: a random resized crop covering `global_crop_scale` of the image area -> `pixel_values`;
- local view L: a random resized crop covering `local_crop_scale` (smaller) -> `pixel_values_local`;
- region sequence R: one feature per box -> `roi_features` `(B, M, 3 * roi_pool_size**2 + 4)` and `roi_mask`.
The paper takes R from a Visual-Genome Faster R-CNN (2048-d features + box). No such detector ships offline, so the
region feature here is a stand-in: the box's pixels resized to `roi_pool_size` x `roi_pool_size` and normalised,
followed by the box corners divided by the image size. Precomputed detector features can be passed instead (the
processor then only pads them). An image without boxes gets one box covering the whole image.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling, make_flat_list_of_images
from transformers.processing_utils import ImagesKwargs


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


class PyramidClipImagesKwargs(ImagesKwargs, total=False):
    global_crop_scale: tuple[float, float]
    local_crop_scale: tuple[float, float]
    roi_pool_size: int
    max_regions: int


class PyramidClipImageProcessor(PilBackend):
    r"""CLIP preprocessing plus the global/local views and region inputs of PyramidCLIP.

    Args:
        global_crop_scale (`tuple[float, float]`, *optional*, defaults to `(0.9, 1.0)`): area range of the global view.
        local_crop_scale (`tuple[float, float]`, *optional*, defaults to `(0.5, 1.0)`): area range of the local view.
        roi_pool_size (`int`, *optional*, defaults to 4): side of the pixel grid of a stand-in region feature.
        max_regions (`int`, *optional*, defaults to 10): regions kept per image (the paper's M = 10).
        Other arguments as [`CLIPImageProcessor`] (`size`, `crop_size`, `resample`, `image_mean`, `image_std`, ...).
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = PyramidClipImagesKwargs
    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"shortest_edge": 224}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    global_crop_scale = (0.9, 1.0)
    local_crop_scale = (0.5, 1.0)
    roi_pool_size = 4
    max_regions = 10

    @property
    def roi_feature_dim(self) -> int:
        """Size of one stand-in region feature: pooled RGB pixels plus 4 box coordinates."""
        return 3 * self.roi_pool_size**2 + 4

    def preprocess(self, images: Any, *args: Any, **kwargs: Any) -> BatchFeature:
        """transformers' `preprocess`, after [`to_8bit_images`] has mapped 16-bit, 32-bit and float images to 8 bits."""
        return super().preprocess(to_8bit_images(images), *args, **kwargs)

    def _to_pil(self, image: object) -> Image.Image:
        array = self.process_image(image, do_convert_rgb=True)  # (3, H, W) uint8
        return Image.fromarray(np.ascontiguousarray(np.moveaxis(array, 0, -1)))

    def _normalize(self, images: list[Image.Image]) -> np.ndarray:
        """Stack same-size PIL images into `(N, 3, H, W)` float32, rescaled and normalised (vectorised)."""
        pixels = np.stack([np.asarray(image, dtype=np.float32) for image in images])  # (N, H, W, 3)
        pixels = (pixels * self.rescale_factor - np.asarray(self.image_mean, np.float32)) / np.asarray(
            self.image_std, np.float32
        )
        return pixels.transpose(0, 3, 1, 2)

    def _random_resized_crop(
        self, image: Image.Image, scale: tuple[float, float], rng: np.random.Generator
    ) -> Image.Image:
        """A crop of `scale` area fraction and aspect ratio in [3/4, 4/3], resized to `crop_size` (torchvision's)."""
        width, height = image.size
        area = width * height
        for _ in range(10):
            target_area = area * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            crop_w, crop_h = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                break
        else:  # fall back to the largest centred square-ish crop
            crop_w, crop_h = min(width, height), min(width, height)
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        target = (self.crop_size["width"], self.crop_size["height"])
        return image.resize(target, self.resample, box=(left, top, left + crop_w, top + crop_h))

    @staticmethod
    def check_boxes(boxes: Any, width: int, height: int, index: int = 0) -> np.ndarray:
        """Validate one image's boxes and clip them to the image.

        Args:
            boxes: `[x0, y0, x1, y1]` pixel boxes, `(M, 4)` (a single box may be given flat); `None` or empty: the
                whole image.
            width, height: the image's size; boxes reaching past its right or bottom edge are clipped to it.
            index: the image's position in the batch, for error messages.

        Returns:
            `(M, 4)` float32 boxes inside the image.

        Raises:
            ValueError: boxes that are not 4 finite coordinates, are negative, empty (x1 <= x0 or y1 <= y0), or lie
                entirely outside the image.
        """
        if boxes is None or len(boxes) == 0:
            return np.asarray([[0, 0, width, height]], dtype=np.float32)
        try:
            boxes_array = np.asarray(boxes, dtype=np.float32)
        except (TypeError, ValueError) as error:  # ragged lists, e.g. a box of three coordinates among fours
            raise ValueError(f"`boxes[{index}]` must be [x0, y0, x1, y1] boxes of 4 numbers, got {boxes!r}.") from error
        if boxes_array.shape == (4,):
            boxes_array = boxes_array[None]
        if boxes_array.ndim != 2 or boxes_array.shape[1] != 4:
            raise ValueError(
                f"`boxes[{index}]` must be [x0, y0, x1, y1] boxes of 4 numbers, shape (M, 4); got shape "
                f"{boxes_array.shape}: {boxes!r}."
            )
        if not np.isfinite(boxes_array).all() or (boxes_array < 0).any():
            raise ValueError(f"`boxes[{index}]` must hold finite, non-negative pixel coordinates, got {boxes!r}.")
        if (boxes_array[:, 2] <= boxes_array[:, 0]).any() or (boxes_array[:, 3] <= boxes_array[:, 1]).any():
            raise ValueError(
                f"`boxes[{index}]` must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0, got {boxes_array.tolist()}."
            )
        if (boxes_array[:, 0] >= width).any() or (boxes_array[:, 1] >= height).any():
            raise ValueError(
                f"`boxes[{index}]` has a box entirely outside its {width}x{height} image (x0 >= width or "
                f"y0 >= height): {boxes_array.tolist()}."
            )
        return np.minimum(boxes_array, np.asarray([width, height, width, height], dtype=np.float32))

    def _region_features(self, image: Image.Image, boxes: Any, index: int = 0) -> np.ndarray:
        """`(M, 3 * roi_pool_size**2 + 4)` stand-in features of the boxes (or of the whole image)."""
        width, height = image.size
        boxes_array = self.check_boxes(boxes, width, height, index)[: self.max_regions]
        side = (self.roi_pool_size, self.roi_pool_size)
        crops = [image.resize(side, PILImageResampling.BILINEAR, box=tuple(box)) for box in boxes_array.tolist()]
        pixels = self._normalize(crops).reshape(len(crops), -1)  # (M, 3 * s * s)
        coords = boxes_array / np.asarray([width, height, width, height], dtype=np.float32)
        return np.concatenate([pixels, coords], axis=1)

    def preprocess_pyramid(
        self,
        images: object,
        boxes: list[list[list[float]] | None] | None = None,
        roi_features: list[np.ndarray] | None = None,
        seed: int | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Build the visual pyramid of a batch.

        Args:
            images: one image or a list (PIL, numpy or torch; any size; 16-bit and float images are mapped to 8 bits
                by [`to_8bit_images`]).
            boxes: per image, a list of `[x0, y0, x1, y1]` pixel boxes (or `None`: the whole image); boxes reaching
                past the right or bottom edge are clipped, invalid ones raise (see [`check_boxes`]).
            roi_features: per image, precomputed `(M_i, D)` region features (e.g. detector outputs), `M_i >= 1` and
                one `D` for all; overrides `boxes`.
            seed: seed of the random crops, for reproducible batches.
            return_tensors: `"pt"`, `"np"` or `None`.

        Returns:
            `BatchFeature` with `pixel_values` (global view) and `pixel_values_local`, both `(B, 3, H, W)`,
            `roi_features` `(B, M, D)` zero-padded to the longest region list, and `roi_mask` `(B, M)`.
        """
        pil_images = [self._to_pil(image) for image in make_flat_list_of_images(to_8bit_images(images))]
        for name, per_image in (("boxes", boxes), ("roi_features", roi_features)):
            if per_image is not None and len(per_image) != len(pil_images):
                raise ValueError(f"`{name}` must have one entry per image ({len(pil_images)}), got {len(per_image)}.")
        rng = np.random.default_rng(seed)
        global_views = [self._random_resized_crop(image, self.global_crop_scale, rng) for image in pil_images]
        local_views = [self._random_resized_crop(image, self.local_crop_scale, rng) for image in pil_images]
        if roi_features is None:
            regions = [
                self._region_features(image, None if boxes is None else boxes[i], i)
                for i, image in enumerate(pil_images)
            ]
        else:
            regions = [np.asarray(features, dtype=np.float32) for features in roi_features]
            for i, region in enumerate(regions):
                if region.ndim != 2 or len(region) == 0 or region.shape[-1] != regions[0].shape[-1]:
                    raise ValueError(
                        f"`roi_features` must be one (regions >= 1, dim) array per image, with one dim for all; "
                        f"got shapes {[np.shape(features) for features in roi_features]} (item {i} differs)."
                    )
                if not np.isfinite(region).all():
                    raise ValueError(f"`roi_features[{i}]` holds NaN or infinite values; expected finite features.")
            regions = [region[: self.max_regions] for region in regions]
        num_regions = max(len(region) for region in regions)
        padded = np.zeros((len(regions), num_regions, regions[0].shape[-1]), dtype=np.float32)
        mask = np.zeros((len(regions), num_regions), dtype=np.int64)
        for i, region in enumerate(regions):
            padded[i, : len(region)], mask[i, : len(region)] = region, 1
        data = {
            "pixel_values": self._normalize(global_views),
            "pixel_values_local": self._normalize(local_views),
            "roi_features": padded,
            "roi_mask": mask,
        }
        return BatchFeature(data=data, tensor_type=return_tensors)


__all__ = ["PyramidClipImageProcessor"]
