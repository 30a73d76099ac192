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

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling, make_flat_list_of_images
from transformers.processing_utils import ImagesKwargs


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

    def _region_features(self, image: Image.Image, boxes: list[list[float]] | None) -> np.ndarray:
        """`(M, 3 * roi_pool_size**2 + 4)` stand-in features of the boxes (or of the whole image)."""
        width, height = image.size
        boxes_array = np.asarray(boxes if boxes else [[0, 0, width, height]], dtype=np.float32).reshape(-1, 4)
        boxes_array = boxes_array[: self.max_regions]
        if (boxes_array[:, 2] <= boxes_array[:, 0]).any() or (boxes_array[:, 3] <= boxes_array[:, 1]).any():
            raise ValueError(f"`boxes` must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0, got {boxes_array.tolist()}.")
        boxes_array = np.clip(boxes_array, 0, [width, height, width, height])
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
            images: one image or a list (PIL, numpy or torch; any size).
            boxes: per image, a list of `[x0, y0, x1, y1]` pixel boxes (or `None`: the whole image).
            roi_features: per image, precomputed `(M_i, D)` region features (e.g. detector outputs); overrides `boxes`.
            seed: seed of the random crops, for reproducible batches.
            return_tensors: `"pt"`, `"np"` or `None`.

        Returns:
            `BatchFeature` with `pixel_values` (global view) and `pixel_values_local`, both `(B, 3, H, W)`,
            `roi_features` `(B, M, D)` zero-padded to the longest region list, and `roi_mask` `(B, M)`.
        """
        pil_images = [self._to_pil(image) for image in make_flat_list_of_images(images)]
        for name, per_image in (("boxes", boxes), ("roi_features", roi_features)):
            if per_image is not None and len(per_image) != len(pil_images):
                raise ValueError(f"`{name}` must have one entry per image ({len(pil_images)}), got {len(per_image)}.")
        rng = np.random.default_rng(seed)
        global_views = [self._random_resized_crop(image, self.global_crop_scale, rng) for image in pil_images]
        local_views = [self._random_resized_crop(image, self.local_crop_scale, rng) for image in pil_images]
        if roi_features is None:
            regions = [
                self._region_features(image, None if boxes is None else boxes[i]) for i, image in enumerate(pil_images)
            ]
        else:
            regions = [np.asarray(features, dtype=np.float32)[: self.max_regions] for features in roi_features]
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
