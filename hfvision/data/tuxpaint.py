"""Captioned real images from Debian's ``tuxpaint-stamps-default`` package, composited onto seeded backgrounds.

The package ships ~800 PNG cut-outs with alpha (clip-art and photos) under
``/usr/share/tuxpaint/stamps/<category>/.../<name>.png``, each with a ``<name>.txt`` whose first line is an English
caption ("A ladybug."). It is the closest thing to CLIP-style image-text pairs that installs offline (GPL-2; see
``DATA.md``). Each sample pastes one stamp at a seeded random scale and position onto a seeded plain or gradient
background and records the stamp's tight box.

Deviations and choices:

- SVG stamps (~250, many duplicating a PNG) are ignored: rasterising them needs a new dependency.
- ``*_mirror.png`` files (flipped twins of another stamp) and PNGs without a caption file are ignored.
- The split is by image: a stamp is held out when a hash of its path (relative to the stamps folder) falls below
  ``held_out_fraction``, so train and eval never share a stamp, and the split does not change with the seed.
- ``label`` is the top-level category ("animals", "food", ...), indexed into ``class_names()``.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["DEFAULT_STAMPS_DIR", "TuxpaintStamp", "TuxpaintStamps", "find_tuxpaint_stamps"]

DEFAULT_STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")
_INSTALL_HINT = "apt-get install -y tuxpaint-stamps-default"
# Directory names that are not plain English words.
_READABLE_NAMES = {"naturalforces": "natural forces", "arttools": "art tools", "asl": "sign language"}
_ALPHA_THRESHOLD = 16  # alpha above this counts as part of the stamp when measuring its box


@dataclass(frozen=True)
class TuxpaintStamp:
    """One captioned stamp image.

    Attributes:
        path: The PNG file.
        stem: Path relative to the stamps folder, without suffix, e.g. "animals/insects/cartoon/ladybug".
        category: Top-level folder, e.g. "animals".
        caption: First line of the sibling `.txt` file, e.g. "A ladybug.".
        attributes: The folder names as comma-separated words, e.g. "animals, insects, cartoon".
    """

    path: Path
    stem: str
    category: str
    caption: str
    attributes: str


def _readable(folder: str) -> str:
    folder = re.sub(r"^\d+_", "", folder)  # "00_symbols" sorts first in its folder but means "symbols"
    return _READABLE_NAMES.get(folder, folder.replace("_", " "))


def _first_sentence(caption: str) -> str:
    """The caption's first sentence without its final full stop: "A US 5 cent piece ($.05) called a nickel"."""
    first = re.split(r"(?<=[.!?])\s+", caption, maxsplit=1)[0]
    return first.rstrip(".").strip() or caption


def _require_stamps_dir(stamps_dir: str | Path | None) -> Path:
    stamps_dir = Path(stamps_dir) if stamps_dir is not None else DEFAULT_STAMPS_DIR
    if not stamps_dir.is_dir():
        raise FileNotFoundError(
            f"Tux Paint stamps not found at {stamps_dir}. Install them with `{_INSTALL_HINT}` (Debian/Ubuntu, as "
            "root), or pass `stamps_dir` pointing at an unpacked copy of the package's usr/share/tuxpaint/stamps."
        )
    return stamps_dir


def find_tuxpaint_stamps(stamps_dir: str | Path | None = None) -> list[TuxpaintStamp]:
    """Lists the captioned PNG stamps, sorted by stem.

    Args:
        stamps_dir: The stamps folder; defaults to `/usr/share/tuxpaint/stamps`.

    Returns:
        One `TuxpaintStamp` per PNG that has a non-empty caption and is not a `_mirror` twin.

    Raises:
        FileNotFoundError: If the folder is missing (the message says how to install the package).
    """
    stamps_dir = _require_stamps_dir(stamps_dir)
    stamps = []
    for path in sorted(stamps_dir.rglob("*.png")):
        if path.stem.endswith("_mirror"):
            continue
        caption_file = path.with_suffix(".txt")
        if not caption_file.is_file():
            continue
        with caption_file.open(encoding="utf-8", errors="replace") as handle:
            caption = handle.readline().strip()
        if not caption:
            continue
        relative = path.relative_to(stamps_dir).with_suffix("")
        folders = relative.parts[:-1]
        attributes = ", ".join(dict.fromkeys(_readable(folder) for folder in folders))
        stamps.append(TuxpaintStamp(path, relative.as_posix(), folders[0], caption, attributes))
    if not stamps:
        raise FileNotFoundError(f"no captioned PNG stamps under {stamps_dir}; is `{_INSTALL_HINT}` complete?")
    return stamps


def _is_held_out(stem: str, held_out_fraction: float) -> bool:
    digest = hashlib.sha1(stem.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < held_out_fraction


class TuxpaintStamps:
    """Tux Paint stamps composited onto seeded backgrounds, as a random-access collection.

    Args:
        split: "train" (stamps not held out) or "eval" (held-out stamps).
        image_size: Side of the square RGB output image in pixels.
        renders_per_stamp: How many differently placed copies of each stamp the split holds.
        seed: Seed for the sample order, placements and backgrounds (not for the split).
        held_out_fraction: Fraction of stamps (by a hash of their path) that form the "eval" split.
        scale_range: The stamp's longer side, as a fraction of `image_size`, is drawn uniformly from this range.
        stamps_dir: The stamps folder; defaults to `/usr/share/tuxpaint/stamps`.

    Each sample is a dict:

    - `image`: `PIL.Image.Image`, RGB, `image_size x image_size`.
    - `caption`: str, the package's caption ("A double decker bus.").
    - `summary`: str, its first sentence without the full stop ("A double decker bus").
    - `attributes`: str, the stamp's folders as words ("vehicles, masstransit").
    - `boxes`: `list[list[int]]` of shape `(1, 4)`: `[x0, y0, x1, y1]`, exclusive `x1, y1`, tight around the
      stamp's pixels with alpha > 16.
    - `label`: int, the category's index in `class_names()`.
    - `object_labels`: `[label]`.
    - `mismatched`: always False (the captions are curated).
    - `category`: str, `stem`: str, the stamp's path relative to the stamps folder without suffix.
    """

    def __init__(
        self,
        split: str = "train",
        image_size: int = 128,
        renders_per_stamp: int = 1,
        seed: int = 0,
        held_out_fraction: float = 0.2,
        scale_range: tuple[float, float] = (0.4, 0.9),
        stamps_dir: str | Path | None = None,
    ) -> None:
        if split not in ("train", "eval"):
            raise ValueError(f"`split` must be 'train' or 'eval', got {split!r}")
        if renders_per_stamp < 1:
            raise ValueError(f"`renders_per_stamp` must be >= 1, got {renders_per_stamp}")
        if not 0.0 < held_out_fraction < 1.0:
            raise ValueError(f"`held_out_fraction` must be in (0, 1), got {held_out_fraction}")
        if not 0.0 < scale_range[0] <= scale_range[1] <= 1.0:
            raise ValueError(f"`scale_range` must satisfy 0 < low <= high <= 1, got {scale_range}")
        all_stamps = find_tuxpaint_stamps(stamps_dir)
        self._class_names = sorted({stamp.category for stamp in all_stamps})
        want_held_out = split == "eval"
        self.stamps: list[TuxpaintStamp] = [
            stamp for stamp in all_stamps if _is_held_out(stamp.stem, held_out_fraction) == want_held_out
        ]
        if not self.stamps:
            raise ValueError(f"split {split!r} is empty with `held_out_fraction`={held_out_fraction}")
        self.split = split
        self.image_size = image_size
        self.renders_per_stamp = renders_per_stamp
        self.seed = seed
        self.scale_range = scale_range
        # A seeded permutation, so consecutive samples (and hence each written shard) mix categories.
        num_samples = len(self.stamps) * renders_per_stamp
        order_rng = np.random.default_rng([seed, zlib.crc32(split.encode("utf-8"))])
        self._order = order_rng.permutation(num_samples)

    def class_names(self) -> list[str]:
        """Category names indexed by `label`, shared by both splits (e.g. "animals", "natural forces")."""
        return [_readable(name) for name in self._class_names]

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index in range(len(self)):
            yield self[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        flat = int(self._order[index])
        stamp = self.stamps[flat % len(self.stamps)]
        render = flat // len(self.stamps)
        # Seeded by the stamp's path rather than its position in the list, so adding stamps changes no render.
        rng = np.random.default_rng([self.seed, zlib.crc32(stamp.stem.encode("utf-8")), render])
        image, box = self._composite(stamp, rng)
        label = self._class_names.index(stamp.category)
        return {
            "image": image,
            "caption": stamp.caption,
            "summary": _first_sentence(stamp.caption),
            "attributes": stamp.attributes,
            "boxes": [box],
            "label": label,
            "object_labels": [label],
            "mismatched": False,
            "category": stamp.category,
            "stem": stamp.stem,
        }

    def _background(self, rng: np.random.Generator) -> Image.Image:
        """A plain colour or a two-colour linear gradient at a random angle: RGB `image_size x image_size`."""
        size = self.image_size
        start = rng.uniform(0, 255, size=3)
        end = start if rng.random() < 0.5 else rng.uniform(0, 255, size=3)  # plain colour or gradient
        angle = rng.uniform(0, 2 * np.pi)
        coords = (np.arange(size) + 0.5) / size - 0.5
        ramp = np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]  # (H, W) in [-0.71, 0.71]
        ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-6)  # (H, W) in [0, 1]
        pixels = start + ramp[..., None] * (end - start)  # (H, W, 3)
        return Image.fromarray(np.rint(pixels).astype(np.uint8))

    def _composite(self, stamp: TuxpaintStamp, rng: np.random.Generator) -> tuple[Image.Image, list[int]]:
        background = self._background(rng)
        with Image.open(stamp.path) as source:
            cutout = source.convert("RGBA")
        alpha_box = cutout.getchannel("A").point(lambda value: 255 if value > _ALPHA_THRESHOLD else 0).getbbox()
        if alpha_box is not None:
            cutout = cutout.crop(alpha_box)  # drop transparent margins so the scale applies to the visible stamp
        longer_side = rng.uniform(*self.scale_range) * self.image_size
        scale = longer_side / max(cutout.size)
        width = max(1, round(cutout.width * scale))
        height = max(1, round(cutout.height * scale))
        cutout = cutout.resize((width, height), Image.Resampling.LANCZOS)  # Pillow premultiplies alpha here
        left = int(rng.integers(0, self.image_size - width + 1))
        top = int(rng.integers(0, self.image_size - height + 1))
        background.paste(cutout, (left, top), mask=cutout)
        visible = cutout.getchannel("A").point(lambda value: 255 if value > _ALPHA_THRESHOLD else 0).getbbox()
        if visible is None:  # fully transparent after resizing: fall back to the pasted rectangle
            visible = (0, 0, width, height)
        x0, y0, x1, y1 = visible
        return background, [left + x0, top + y0, left + x1, top + y1]
