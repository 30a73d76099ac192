"""Data for hfvision: offline data set builders, WebDataset shard writing and the streaming loader.

- `SyntheticScenes`: seeded shape scenes with compositional captions, boxes and class ids.
- `TuxpaintStamps`: captioned real cut-out images from Debian's `tuxpaint-stamps-default`, composited on backgrounds.
- `write_shards`, `build_synthetic_scenes`, `build_tuxpaint`: WebDataset tars (img2dataset layout), equal-sized shards.
- `load_image_text_stream`, `load_image_stream`, `SkipCounter`: the `datasets` streams every training script reads
  (image-text pairs; images with optional labels/keypoints and no caption).
"""

from .streaming import OUTPUT_FIELDS, SkipCounter, load_image_stream, load_image_text_stream
from .synthetic_scenes import SyntheticScenes
from .tuxpaint import TuxpaintStamp, TuxpaintStamps, find_tuxpaint_stamps
from .webdataset import build_synthetic_scenes, build_tuxpaint, write_shards

__all__ = [
    "OUTPUT_FIELDS",
    "SkipCounter",
    "SyntheticScenes",
    "TuxpaintStamp",
    "TuxpaintStamps",
    "build_synthetic_scenes",
    "build_tuxpaint",
    "find_tuxpaint_stamps",
    "load_image_stream",
    "load_image_text_stream",
    "write_shards",
]
