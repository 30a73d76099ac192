"""Video processor for VATT: clips of frames -> `pixel_values_videos` `(B, T, 3, H, W)` in [-1, 1].

Paper Sec. 4.1: 32 frames (10 fps) per clip, resized and cropped to 224x224, pixel values scaled to [-1, 1]. The
processor samples `num_frames` frames uniformly from each clip (when a clip has another count), resizes the short
side to `size["shortest_edge"]`, center-crops to `crop_size`, rescales to [0, 1] and normalises with mean = std = 0.5.
Pretraining augmentation (the temporally consistent random resized crop, flip and colour jitter) is
`preprocess(..., do_augment=True)`, seeded by `seed`: one crop and one flip for all frames of a clip.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs


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


class VattVideosKwargs(ImagesKwargs, total=False):
    num_frames: int
    do_sample_frames: bool
    do_augment: bool
    crop_scale: tuple[float, float]
    do_flip: bool
    seed: int


def _is_frame(item: Any) -> bool:
    """One frame: a PIL image, or an array/tensor of rank 2 (grey) or 3 (H, W, C or C, H, W)."""
    return isinstance(item, Image.Image) or getattr(item, "ndim", None) in (2, 3)


def make_list_of_videos(videos: Any) -> list[list[Any]]:
    """Normalise the accepted layouts to a list of clips, each a list of frames.

    Accepted: one clip (a list of frames, or a `(T, H, W, C)` / `(T, C, H, W)` array or tensor) or a batch of clips (a
    list of such clips, or a `(B, T, ...)` array or tensor).

    Raises:
        ValueError: naming `videos`, for an empty input or a layout that is neither a clip nor a batch of clips.
    """
    if getattr(videos, "ndim", None) == 4:
        return [list(videos)]
    if getattr(videos, "ndim", None) == 5:
        return [list(video) for video in videos]
    if not isinstance(videos, (list, tuple)) or not videos:
        raise ValueError(
            "`videos` must be a clip (a list of frames, or a (frames, height, width, 3) array) or a list of clips, "
            f"got {type(videos).__name__}{' (empty)' if isinstance(videos, (list, tuple)) else ''}."
        )
    if all(_is_frame(item) for item in videos):
        return [list(videos)]
    clips = []
    for index, video in enumerate(videos):
        is_array_clip = getattr(video, "ndim", None) == 4
        is_list_clip = isinstance(video, (list, tuple)) and video and all(_is_frame(frame) for frame in video)
        if is_array_clip or is_list_clip:
            clips.append(list(video))
        else:
            raise ValueError(
                f"`videos` item {index} is not a clip: expected a non-empty list of frames or a (frames, height, "
                f"width, 3) array, got {type(video).__name__}."
            )
    return clips


def sample_frame_indices(num_available: int, num_frames: int) -> np.ndarray:
    """`num_frames` indices spread uniformly over `num_available` frames (repeating frames of a shorter clip)."""
    return np.linspace(0, num_available - 1, num_frames).round().astype(np.int64)


class VattVideoProcessor(PilBackend):
    r"""Frames of clips -> `pixel_values_videos` `(B, T, 3, H, W)` in [-1, 1] (transformers' video layout).

    Args:
        num_frames (`int`, *optional*, defaults to 32): frames per clip; clips with another count are sampled
            uniformly (`do_sample_frames=True`) or rejected.
        do_sample_frames (`bool`, *optional*, defaults to `True`): resample clips to `num_frames` frames.
        do_augment (`bool`, *optional*, defaults to `False`): pretraining augmentation (paper Sec. 4.1): one random
            resized crop (area `crop_scale`, aspect in [0.5, 2]) and one horizontal flip per clip.
        crop_scale (`tuple[float, float]`, *optional*, defaults to `(0.08, 1.0)`): area range of that crop.
        do_flip (`bool`, *optional*, defaults to `True`): include the random horizontal flip in the augmentation; turn
            it off where left and right carry meaning (the synthetic clips' captions and soundtracks name the
            direction of motion, which a flip would contradict).
        seed (`int`, *optional*): seed of the augmentation.
        Other arguments as transformers' image processors (`size`, `crop_size`, `resample`, `image_mean`, ...).
    """

    model_input_names = ["pixel_values_videos"]
    valid_kwargs = VattVideosKwargs
    resample = PILImageResampling.BILINEAR
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"shortest_edge": 224}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    num_frames = 32
    do_sample_frames = True
    do_augment = False
    crop_scale = (0.08, 1.0)
    do_flip = True
    seed = None

    def preprocess(
        self,
        videos: Any,
        num_frames: int | None = None,
        do_sample_frames: bool | None = None,
        do_augment: bool | None = None,
        crop_scale: tuple[float, float] | None = None,
        do_flip: bool | None = None,
        seed: int | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Preprocess one clip or a batch of clips.

        Args:
            videos: see [`make_list_of_videos`]; frames are PIL images, `(H, W, C)` uint8 arrays, or anything
                transformers' image processors accept (16-bit and float frames go through `to_8bit_images`).
            num_frames, do_sample_frames, do_augment, crop_scale, do_flip, seed: override the processor's attributes.
            return_tensors: `"pt"` (default), `"np"` or `None`.
            kwargs: transformers' image-processing overrides (`size`, `crop_size`, ...).

        Returns:
            `BatchFeature` with `pixel_values_videos` `(B, num_frames, 3, crop_h, crop_w)`.
        """
        clips = make_list_of_videos(videos)
        num_frames = num_frames or self.num_frames
        do_sample_frames = self.do_sample_frames if do_sample_frames is None else do_sample_frames
        do_augment = self.do_augment if do_augment is None else do_augment
        sampled = []
        for index, clip in enumerate(clips):
            if len(clip) != num_frames:
                if not do_sample_frames:
                    raise ValueError(
                        f"`videos` item {index} has {len(clip)} frames but `num_frames` is {num_frames}; pass "
                        "`do_sample_frames=True` to sample them uniformly."
                    )
                clip = [clip[i] for i in sample_frame_indices(len(clip), num_frames)]
            sampled.append(to_8bit_images(clip, name="videos"))
        if do_augment:
            rng = np.random.default_rng(self.seed if seed is None else seed)
            crop_scale = tuple(self.crop_scale if crop_scale is None else crop_scale)
            if len(crop_scale) != 2 or not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
                raise ValueError(f"`crop_scale` must be (low, high) with 0 < low <= high <= 1, got {crop_scale}.")
            do_flip = self.do_flip if do_flip is None else do_flip
            sampled = [self._augment(clip, rng, crop_scale, do_flip) for clip in sampled]
            kwargs = {**kwargs, "do_resize": False, "do_center_crop": False}
        frames = [frame for clip in sampled for frame in clip]
        pixel_values = super().preprocess(frames, return_tensors=None, **kwargs)["pixel_values"]
        pixel_values = np.stack(pixel_values).astype(np.float32)  # (B * T, 3, H, W)
        pixel_values = pixel_values.reshape(len(sampled), num_frames, *pixel_values.shape[1:])
        return BatchFeature(data={"pixel_values_videos": pixel_values}, tensor_type=return_tensors)

    def _augment(
        self, clip: list[Any], rng: np.random.Generator, crop_scale: tuple[float, float], do_flip: bool
    ) -> list[Image.Image]:
        """One random resized crop and one flip for every frame of a clip (temporally consistent, paper Sec. 4.1)."""
        frames = [self._to_pil(frame) for frame in clip]
        width, height = frames[0].size
        area = width * height
        crop_w, crop_h = min(width, height), min(width, height)
        for _ in range(10):
            target_area = area * rng.uniform(*crop_scale)
            aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
            w, h = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                crop_w, crop_h = w, h
                break
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        flip = bool(rng.random() < 0.5) and do_flip
        target = (self.crop_size["width"], self.crop_size["height"])
        box = (left, top, left + crop_w, top + crop_h)
        out = [frame.resize(target, self.resample, box=box) for frame in frames]
        return [frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for frame in out] if flip else out

    def _to_pil(self, frame: Any) -> Image.Image:
        array = self.process_image(frame, do_convert_rgb=True)  # (3, H, W) uint8
        return Image.fromarray(np.ascontiguousarray(np.moveaxis(array, 0, -1)))


__all__ = ["VattVideoProcessor", "make_list_of_videos", "sample_frame_indices", "to_8bit_images"]
