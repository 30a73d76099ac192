"""Seeded synthetic stick figures with ground-truth keypoints and a known skeleton.

The small-scale stand-in for the human-pose data of AutoLink (He, Wandt, Rhodin, NeurIPS 2022, "AutoLink:
Self-supervised Learning of Human Skeletons and Object Outlines by Linking Keypoints", https://arxiv.org/abs/2205.10636):
a self-supervised keypoint detector that links its keypoints by a learned graph should recover this skeleton from the
images alone. Nothing here comes from the paper's data; the generator is ours.

Each figure is a tree of `STICK_FIGURE_JOINTS` joined by `STICK_FIGURE_BONES`: a torso from pelvis to neck, a neck
to the centre of a round head, straight arms from the neck to the hands and straight legs from the pelvis to the feet.
A pose draws every bone direction within human-like limits relative to the torso, every bone length within +-10% of
its nominal proportion, then a global rotation, scale and position that keep the whole figure inside the image.
Limbs are anti-aliased thick lines with round ends, in one colour per figure that contrasts with the background;
backgrounds are flat, a linear gradient, or a smooth noise texture between two colours, so that an image can only be
reconstructed from the figure's pose and not from a fixed layout.

Coordinates are pixels (x, y), with pixel centres at integer coordinates: pixel ``image[y, x]`` covers ``[x - 0.5,
x + 0.5] x [y - 0.5, y + 0.5]``. Sample ``i`` depends only on ``(seed, split, i)`` and the constructor arguments.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .webdataset import write_shards

__all__ = [
    "BACKGROUNDS",
    "DARK_ON_LIGHT",
    "STICK_FIGURE_BONES",
    "STICK_FIGURE_JOINTS",
    "StickFigures",
    "build_stick_figures",
]

STICK_FIGURE_JOINTS: tuple[str, ...] = (
    "head",
    "neck",
    "pelvis",
    "left_hand",
    "right_hand",
    "left_foot",
    "right_foot",
)
# Parent -> child pairs of joint indices; a tree over the joints rooted at the pelvis.
STICK_FIGURE_BONES: tuple[tuple[int, int], ...] = ((2, 1), (1, 0), (1, 3), (1, 4), (2, 5), (2, 6))
BACKGROUNDS: tuple[str, ...] = ("flat", "gradient", "noise")
# `colors` of near-black figures on a light grey background.
DARK_ON_LIGHT: tuple[tuple[int, int, int], tuple[int, int, int]] = ((30, 30, 30), (225, 225, 225))

_HEAD, _NECK, _PELVIS, _LEFT_HAND, _RIGHT_HAND, _LEFT_FOOT, _RIGHT_FOOT = range(len(STICK_FIGURE_JOINTS))
# Nominal bone lengths and head radius as fractions of the standing height (feet to top of the head, limbs straight):
# leg + torso + neck + head radius = 1.
_LEG, _TORSO, _NECK_LENGTH, _HEAD_RADIUS, _ARM = 0.45, 0.33, 0.13, 0.09, 0.36
_LENGTH_JITTER = 0.1
# Joint-angle limits in degrees. Arms and legs are measured from the torso's "down" direction, towards their own side.
# Legs stand apart, so the pelvis is a visible bend between the torso and each leg rather than a point on a straight
# neck-to-foot line (a keypoint there would explain no pixel that a neck-to-foot edge does not).
_TORSO_LEAN, _HEAD_TILT, _ARM_RANGE, _LEG_RANGE = 15.0, 25.0, (10.0, 170.0), (15.0, 60.0)
# Smallest RGB distance between the figure's colour and any blend of the background colours, so the figure stands out.
_MIN_CONTRAST = 110.0
_NOISE_CELLS = (3, 9)  # coarse grid sizes of the noise texture, upsampled to the image
_PIXEL_NOISE = 4.0  # amplitude of the fine per-pixel noise on every background
_POSE_STREAM, _RENDER_STREAM = 0, 1
_KEY_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _unit(angle_degrees: np.ndarray | float) -> np.ndarray:
    """Unit vectors (..., 2) at the given angles, counter-clockwise from +x in a y-up frame."""
    radians = np.deg2rad(angle_degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=-1)


def _segment_distance(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Distances (S, P) from P points (P, D) to S segments given by their end points (S, D)."""
    # One (S, P) plane per coordinate: reductions over a short trailing axis are slow in numpy.
    offsets = [points[None, :, axis] - starts[:, axis : axis + 1] for axis in range(points.shape[1])]
    directions = [ends[:, axis : axis + 1] - starts[:, axis : axis + 1] for axis in range(points.shape[1])]
    length_squared = np.maximum(sum(d**2 for d in directions), 1e-12)  # a zero-length segment is its start point
    along = np.clip(sum(o * d for o, d in zip(offsets, directions, strict=True)) / length_squared, 0.0, 1.0)
    return np.sqrt(sum((o - along * d) ** 2 for o, d in zip(offsets, directions, strict=True)))


def _blend_distance(colour: np.ndarray, blend_ends: np.ndarray) -> float:
    """RGB distance from `colour` (3,) to the nearest blend of the two colours `blend_ends` (2, 3)."""
    return float(_segment_distance(colour[None], blend_ends[:1], blend_ends[1:])[0, 0])


class StickFigures:
    """A fixed-length, random-access collection of seeded stick-figure images with keypoints.

    Args:
        num_samples: Number of figures (indices `0 .. num_samples - 1`).
        image_size: Side of the square RGB image in pixels (>= 32).
        seed: Base seed. Figure `i` is a pure function of `(seed, split, i)` and the other arguments.
        split: Name mixed into the seed, so that e.g. "train" and "eval" figures are independent draws.
        max_rotation: Largest global rotation of the figure in degrees, drawn uniformly in `[-max_rotation,
            max_rotation]` (0 keeps every figure upright; 180 allows any orientation).
        height_range: Range of the standing height (feet to top of the head, limbs straight) as a fraction of
            `image_size`. A posed figure whose extent would not fit in the image is scaled down until it does.
        line_width_range: Range of the limb width as a fraction of `image_size` (3-4 px at 64 px by default).
        backgrounds: Background kinds to draw from, a subset of `BACKGROUNDS`.
        colors: `(figure, background)` RGB colours (0-255) for every figure instead of random ones ("gradient"
            and "noise" backgrounds blend towards a random second colour that keeps the contrast). With fixed colours
            the pose is the only thing that varies, so a self-supervised model cannot pass colours through its
            keypoints.

    Each sample is a dict:

    - `image`: `PIL.Image.Image`, RGB, `image_size x image_size`.
    - `keypoints`: `np.ndarray` float32 `(J, 2)`, pixel (x, y) of the joints in `STICK_FIGURE_JOINTS` order; always
      inside the image.
    - `figure_height`: float, the standing height in pixels, a pose- and rotation-independent normaliser for
      keypoint errors.
    - `bones`: `list[list[int]]`, `STICK_FIGURE_BONES` (the same for every figure; stored so a shard is
      self-describing).
    - `background`: str, the background kind.
    - `__key__`: str, `"<split>_<index>"` with a 9-digit index.
    """

    def __init__(
        self,
        num_samples: int,
        image_size: int = 64,
        seed: int = 0,
        split: str = "train",
        *,
        max_rotation: float = 30.0,
        height_range: tuple[float, float] = (0.5, 0.8),
        line_width_range: tuple[float, float] = (0.045, 0.065),
        backgrounds: Sequence[str] = BACKGROUNDS,
        colors: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"`num_samples` must be >= 1, got {num_samples}")
        if image_size < 32:
            raise ValueError(f"`image_size` must be >= 32 pixels for limbs to stay visible, got {image_size}")
        if not 0.0 <= max_rotation <= 180.0:
            raise ValueError(f"`max_rotation` must be in [0, 180] degrees, got {max_rotation}")
        if not 0.0 < height_range[0] <= height_range[1] <= 1.0:
            raise ValueError(f"`height_range` must satisfy 0 < low <= high <= 1, got {height_range}")
        if not 0.0 < line_width_range[0] <= line_width_range[1] <= 0.2:
            raise ValueError(f"`line_width_range` must satisfy 0 < low <= high <= 0.2, got {line_width_range}")
        unknown = [name for name in backgrounds if name not in BACKGROUNDS]
        if unknown or not backgrounds:
            raise ValueError(f"`backgrounds` must be a non-empty subset of {BACKGROUNDS}, got {list(backgrounds)}")
        if colors is not None and (
            len(colors) != 2 or any(len(color) != 3 or not all(0 <= c <= 255 for c in color) for color in colors)
        ):
            raise ValueError(f"`colors` must be None or two RGB triples in [0, 255], got {colors}")
        if not _KEY_SAFE.issuperset(split):
            raise ValueError(f"`split` may only hold letters, digits, '_' and '-', got {split!r}")
        self.num_samples = num_samples
        self.image_size = image_size
        self.seed = seed
        self.split = split
        self.max_rotation = float(max_rotation)
        self.height_range = (float(height_range[0]), float(height_range[1]))
        self.line_width_range = (float(line_width_range[0]), float(line_width_range[1]))
        self.backgrounds = tuple(backgrounds)
        self.colors = None if colors is None else np.asarray(colors, dtype=np.float64)
        self._split_salt = zlib.crc32(split.encode("utf-8"))
        centres = np.arange(image_size, dtype=np.float64)
        self._pixel_centres = np.stack(np.meshgrid(centres, centres, indexing="xy"), axis=-1).reshape(-1, 2)  # (P, 2)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index in range(self.num_samples):
            yield self[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} figures")
        index = index % self.num_samples
        keypoints, figure_height, line_width = self._pose(index)
        image, background = self._render(index, keypoints, figure_height, line_width)
        return {
            "image": image,
            "keypoints": keypoints.astype(np.float32),
            "figure_height": float(figure_height),
            "bones": [list(bone) for bone in STICK_FIGURE_BONES],
            "background": background,
            "__key__": f"{self.split}_{index:09d}",
        }

    def _rng(self, stream: int, index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, self._split_salt, stream, index]))

    # --- pose: joint angles -> forward kinematics -> similarity transform ----------------------------------------

    def _pose(self, index: int) -> tuple[np.ndarray, float, float]:
        """Joint pixel coordinates (J, 2), standing height and limb width in pixels of figure `index`."""
        rng = self._rng(_POSE_STREAM, index)
        leg, torso, neck, arm = np.array([_LEG, _TORSO, _NECK_LENGTH, _ARM]) * rng.uniform(
            1 - _LENGTH_JITTER, 1 + _LENGTH_JITTER, size=4
        )
        up = 90.0 + rng.uniform(-_TORSO_LEAN, _TORSO_LEAN)  # torso direction in a y-up frame, degrees
        down = up - 180.0
        sides = np.array([1.0, -1.0])  # the figure faces the viewer: its left side is the image's right (+x)
        arm_angles = down + sides * rng.uniform(*_ARM_RANGE, size=2)
        leg_angles = down + sides * rng.uniform(*_LEG_RANGE, size=2)
        head_angle = up + rng.uniform(-_HEAD_TILT, _HEAD_TILT)

        joints = np.zeros((len(STICK_FIGURE_JOINTS), 2))  # figure frame, y up, pelvis at the origin
        joints[_NECK] = torso * _unit(up)
        joints[_HEAD] = joints[_NECK] + neck * _unit(head_angle)
        joints[[_LEFT_HAND, _RIGHT_HAND]] = joints[_NECK] + arm * _unit(arm_angles)
        joints[[_LEFT_FOOT, _RIGHT_FOOT]] = leg * _unit(leg_angles)
        joints[:, 1] *= -1  # y down, as in the image

        size = self.image_size
        rotation = np.deg2rad(rng.uniform(-self.max_rotation, self.max_rotation))
        cos, sin = np.cos(rotation), np.sin(rotation)
        joints = joints @ np.array([[cos, sin], [-sin, cos]])  # rotate every row vector by `rotation`
        figure_height = rng.uniform(*self.height_range) * size
        line_width = rng.uniform(*self.line_width_range) * size
        # Everything drawn lies within `reach` of a joint: half a limb width, or the head's radius around the head.
        reach = np.full(len(joints), line_width / 2)
        reach[_HEAD] = max(_HEAD_RADIUS * figure_height, line_width / 2)
        # Shrink a figure whose drawn extent would not fit between pixel centres 1 and size - 2.
        room = size - 3.0
        extent = (joints.max(0) - joints.min(0)) * figure_height + 2 * reach.max()
        if (extent > room).any():
            figure_height *= float(np.min(room / extent))
            reach[_HEAD] = max(_HEAD_RADIUS * figure_height, line_width / 2)
        joints = joints * figure_height
        low, high = (joints - reach[:, None]).min(0), (joints + reach[:, None]).max(0)
        shift = rng.uniform(1.0 - low, size - 2.0 - high)  # (2,), keeps [low, high] inside [1, size - 2]
        return joints + shift, figure_height, line_width

    # --- rendering -------------------------------------------------------------------------------------------------

    def _background(self, rng: np.random.Generator, kind: str, colours: np.ndarray) -> np.ndarray:
        """(P, 3) float background: a blend between two colours by a per-pixel weight in [0, 1], plus light noise."""
        size = self.image_size
        if kind == "flat":
            weight = np.zeros(size * size)
        elif kind == "gradient":
            direction = _unit(rng.uniform(0.0, 360.0))
            projection = (self._pixel_centres - (size - 1) / 2) @ direction
            weight = (projection - projection.min()) / max(np.ptp(projection), 1e-12)
        else:  # smooth value noise: a coarse random grid, bicubically upsampled
            cells = int(rng.integers(_NOISE_CELLS[0], _NOISE_CELLS[1] + 1))
            coarse = Image.fromarray(rng.uniform(0.0, 1.0, size=(cells, cells)).astype(np.float32), mode="F")
            weight = np.clip(np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC)), 0.0, 1.0).reshape(-1)
        blend = colours[0] + weight[:, None] * (colours[1] - colours[0])
        return blend + rng.uniform(-_PIXEL_NOISE, _PIXEL_NOISE, size=blend.shape)

    def _render(
        self, index: int, keypoints: np.ndarray, figure_height: float, line_width: float
    ) -> tuple[Image.Image, str]:
        rng = self._rng(_RENDER_STREAM, index)
        kind = str(rng.choice(self.backgrounds))
        background_colours = rng.uniform(0.0, 255.0, size=(2, 3))
        if self.colors is None:
            # Rejection-sample a figure colour far from every blend of the two background colours (the RGB segment
            # between them); this succeeds within a few draws.
            if kind == "flat":
                background_colours[1] = background_colours[0]
            figure_colour = rng.uniform(0.0, 255.0, size=3)
            while _blend_distance(figure_colour, background_colours) < _MIN_CONTRAST:
                figure_colour = rng.uniform(0.0, 255.0, size=3)
        else:
            # Fixed colours; a gradient or noise background blends towards a random second colour that contrasts
            # with the figure as much as the fixed pair does at least.
            figure_colour, background_colours[0] = self.colors
            if kind == "flat":
                background_colours[1] = background_colours[0]
            contrast = min(_MIN_CONTRAST, float(np.linalg.norm(figure_colour - background_colours[0])))
            while _blend_distance(figure_colour, background_colours) < contrast:
                background_colours[1] = rng.uniform(0.0, 255.0, size=3)
        background = self._background(rng, kind, background_colours)

        # Coverage of each pixel centre by the limbs (capsules of width `line_width`) and the head (a disc), with a
        # 1-px linear ramp at the edge as anti-aliasing: 1 inside, 0 beyond half a pixel outside.
        bones = np.asarray(STICK_FIGURE_BONES)
        distance = _segment_distance(self._pixel_centres, keypoints[bones[:, 0]], keypoints[bones[:, 1]]).min(0)
        head_distance = np.linalg.norm(self._pixel_centres - keypoints[_HEAD], axis=-1)
        limb_coverage = np.clip(line_width / 2 + 0.5 - distance, 0.0, 1.0)
        head_coverage = np.clip(_HEAD_RADIUS * figure_height + 0.5 - head_distance, 0.0, 1.0)
        coverage = np.maximum(limb_coverage, head_coverage)[:, None]  # (P, 1)
        pixels = background * (1.0 - coverage) + figure_colour * coverage
        pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(self.image_size, self.image_size, 3)
        return Image.fromarray(pixels, mode="RGB"), kind


def build_stick_figures(
    out_dir: str | os.PathLike,
    num_train: int = 5_000,
    num_eval: int = 1_000,
    image_size: int = 64,
    seed: int = 0,
    num_shards: int = 8,
    world_size: int = 1,
    overwrite: bool = False,
    *,
    num_eval_shards: int | None = None,
    max_rotation: float = 30.0,
    backgrounds: Sequence[str] = BACKGROUNDS,
    line_width_range: tuple[float, float] = (0.045, 0.065),
    colors: tuple[Sequence[float], Sequence[float]] | None = None,
    image_format: str = "png",
) -> dict[str, list[str]]:
    """Writes `StickFigures` train and eval WebDataset shards, `skeleton.json` and `build_info.json`.

    Layout: `out_dir/train/*.tar` and `out_dir/eval/*.tar` (per sample `<key>.png` and `<key>.json` holding
    `keypoints`, `figure_height`, `bones` and `background`), `out_dir/skeleton.json` (`{"joints": [names], "bones":
    [[parent, child], ...]}`) and `out_dir/build_info.json` (the arguments and per-split counts).

    Args:
        out_dir: Output folder.
        num_train: Training figures (the remainder of `num_train % num_shards` is dropped).
        num_eval: Held-out figures, an independent draw (split name "eval" in the seed).
        image_size: Image side in pixels.
        seed: Base seed; the same arguments give byte-identical tars.
        num_shards: Training tars, a multiple of `world_size`.
        world_size: Number of training processes the shards will be spread over.
        overwrite: Replace existing tars.
        num_eval_shards: Eval tars, a multiple of `world_size`; defaults to `num_shards`.
        max_rotation: Largest global rotation in degrees (see `StickFigures`).
        backgrounds: Background kinds to draw from (see `StickFigures`).
        line_width_range: Range of the limb width as a fraction of `image_size` (see `StickFigures`).
        colors: Fixed `(figure, background)` RGB colours, or None for random ones (see `StickFigures`).
        image_format: "png" (default: lossless, so limb pixels keep the figure's exact colour) or "jpg".

    Returns:
        `{"train": [tar paths], "eval": [tar paths]}`.
    """
    out_dir = Path(out_dir)
    num_eval_shards = num_shards if num_eval_shards is None else num_eval_shards
    common = {
        "image_size": image_size,
        "seed": seed,
        "max_rotation": max_rotation,
        "backgrounds": list(backgrounds),
        "line_width_range": list(line_width_range),
        "colors": None if colors is None else [list(color) for color in colors],
    }
    splits = {
        "train": (StickFigures(num_train, split="train", **common), num_shards),
        "eval": (StickFigures(num_eval, split="eval", **common), num_eval_shards),
    }
    paths = {}
    for split, (figures, shards) in splits.items():
        paths[split] = write_shards(
            figures, out_dir / split, shards, world_size=world_size, image_format=image_format, overwrite=overwrite
        )
    skeleton = {"joints": list(STICK_FIGURE_JOINTS), "bones": [list(bone) for bone in STICK_FIGURE_BONES]}
    (out_dir / "skeleton.json").write_text(json.dumps(skeleton, indent=1) + "\n")
    build_info = {
        "generator": "hfvision.data.stick_figures.StickFigures",
        **common,
        "image_format": image_format,
        "world_size": world_size,
        "splits": {
            split: {"num_shards": shards, "num_samples": (len(figures) // shards) * shards}
            for split, (figures, shards) in splits.items()
        },
    }
    (out_dir / "build_info.json").write_text(json.dumps(build_info, indent=1, sort_keys=True) + "\n")
    return paths
