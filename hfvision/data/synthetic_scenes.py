"""Seeded synthetic shape scenes with compositional captions.

A stand-in for web image-text pairs that ships with no download: each scene holds 1-3 solid shapes (circle, square,
triangle, star, cross, diamond) in one of eight named colours, two sizes and five positions, on a plain grey
background with a light gradient and noise. Every scene comes with three text views of decreasing detail, the way
PyramidCLIP (Gao et al., NeurIPS 2022, https://arxiv.org/abs/2204.14095) pairs an image with a title, a summary and
attribute phrases:

- ``caption``: "a large red circle on the left and a small blue square at the top"
- ``summary``: "a red circle and a blue square"
- ``attributes``: "red circle, blue square"

plus pixel boxes and class ids, so zero-shot classification ("a photo of a red circle") and box checks work on
held-out scenes. ``mismatch_fraction`` swaps the caption (and the summary written from it) of that fraction of
samples for another scene's, the noisy web-caption setting; the attribute text always names the image's own objects,
as the paper's detector tags do, so caption noise never reaches it. Sample ``i`` depends only on
``(seed, split, i)``: any index can be drawn alone, in any order, by any process.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["COLOURS", "POSITIONS", "SHAPES", "SIZES", "SyntheticScenes"]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
# Saturated colours (or black) so that no background pixel, which is always near-grey, can take an object's value.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 0),
    "yellow": (240, 220, 20),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "purple": (130, 40, 180),
    "pink": (255, 105, 180),
    "black": (0, 0, 0),
}
# Object radius as a fraction of the image side: (low, high) before rounding.
SIZES: dict[str, tuple[float, float]] = {"small": (0.08, 0.09), "large": (0.13, 0.14)}
# Object centre as a fraction of the image side (x, y) and the phrase used in captions. Anchors are far enough apart
# (>= 0.31) that two large objects (radius <= 0.14) with centre jitter (<= 0.01 each) never touch.
POSITIONS: dict[str, tuple[tuple[float, float], str]] = {
    "left": ((0.19, 0.5), "on the left"),
    "right": ((0.81, 0.5), "on the right"),
    "top": ((0.5, 0.19), "at the top"),
    "bottom": ((0.5, 0.81), "at the bottom"),
    "center": ((0.5, 0.5), "in the center"),
}
_CENTRE_JITTER = 0.01
# Random-stream tags, so that layout, mismatch choice and the mismatch set never share draws.
_LAYOUT_STREAM, _DONOR_STREAM, _MISMATCH_SET_STREAM = 0, 1, 2


@dataclass(frozen=True)
class _SceneObject:
    shape: str
    colour: str
    size: str
    position: str
    centre: tuple[float, float]  # pixels (x, y)
    radius: float  # pixels


@dataclass(frozen=True)
class _SceneLayout:
    objects: tuple[_SceneObject, ...]
    background_rgb: tuple[float, float, float]
    gradient_angle: float
    gradient_amplitude: float
    noise_seed: int


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join_phrases(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _shape_mask(shape: str, centre: tuple[float, float], radius: float, image_size: int) -> Image.Image:
    """Draws one shape, without anti-aliasing, into a binary "L" mask of side `image_size`."""
    mask = Image.new("L", (image_size, image_size), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = centre
    r = radius
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "square":
        half = 0.85 * r  # same visual area as the other shapes rather than the bounding square
        draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + 0.95 * r, cy + 0.8 * r), (cx - 0.95 * r, cy + 0.8 * r)], fill=255)
    elif shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        draw.polygon(list(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles), strict=True)), fill=255)
    elif shape == "cross":
        arm = 0.35 * r
        draw.rectangle([cx - arm, cy - r, cx + arm, cy + r], fill=255)
        draw.rectangle([cx - r, cy - arm, cx + r, cy + arm], fill=255)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.75 * r, cy), (cx, cy + r), (cx - 0.75 * r, cy)], fill=255)
    else:
        raise ValueError(f"`shape` must be one of {SHAPES}, got {shape!r}")
    return mask


class SyntheticScenes:
    """A fixed-length, random-access collection of seeded shape scenes.

    Args:
        num_samples: Number of scenes (indices `0 .. num_samples - 1`).
        seed: Base seed. Scene `i` is a pure function of `(seed, split, i)` and the other arguments.
        split: Name mixed into the seed so that e.g. "train" and "eval" scenes are independent draws.
        image_size: Side of the square RGB image in pixels.
        min_objects: Fewest objects in a scene.
        max_objects: Most objects in a scene (at most 5: one per position, and one colour per object).
        mismatch_fraction: Fraction of scenes (exactly `round(mismatch_fraction * num_samples)`) whose `caption`
            and `summary` are replaced by those of another, randomly chosen scene with a different caption; those
            samples have `mismatched=True`. The paper's summary is written from the caption (a text summarizer), so
            it follows the caption; its attribute text is a detector's tags of the image, so `attributes`, like the
            boxes and labels, always describes the image itself.
        shapes: Shape vocabulary, a subset of `SHAPES`.
        colours: Colour vocabulary, a subset of `COLOURS`.

    Each sample is a dict:

    - `image`: `PIL.Image.Image`, RGB, `image_size x image_size`.
    - `caption`: str, every object with size, colour, shape and position.
    - `summary`: str, colour and shape of every object.
    - `attributes`: str, comma-separated "colour shape" phrases of the image's own objects (never swapped).
    - `boxes`: `list[list[int]]` of shape `(num_objects, 4)`, `[x0, y0, x1, y1]` tight pixel boxes of the drawn
      pixels with exclusive `x1, y1` (PIL's `getbbox` convention), in the same order as the caption.
    - `label`: int, class id of the first (main) object's "colour shape" in `class_names()`.
    - `object_labels`: `list[int]` of length `num_objects`, class id of every object.
    - `mismatched`: bool, whether `caption` and `summary` belong to another scene.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        split: str = "train",
        image_size: int = 64,
        min_objects: int = 1,
        max_objects: int = 3,
        mismatch_fraction: float = 0.0,
        shapes: Sequence[str] = SHAPES,
        colours: Sequence[str] = tuple(COLOURS),
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"`num_samples` must be >= 1, got {num_samples}")
        if image_size < 16:
            raise ValueError(f"`image_size` must be >= 16 pixels for shapes to stay recognisable, got {image_size}")
        if not 1 <= min_objects <= max_objects:
            raise ValueError(f"need 1 <= `min_objects` <= `max_objects`, got {min_objects} and {max_objects}")
        if max_objects > min(len(POSITIONS), len(colours)):
            raise ValueError(
                f"`max_objects` must be <= {min(len(POSITIONS), len(colours))} (one position and one colour per "
                f"object), got {max_objects}"
            )
        if not 0.0 <= mismatch_fraction <= 1.0:
            raise ValueError(f"`mismatch_fraction` must be in [0, 1], got {mismatch_fraction}")
        if mismatch_fraction > 0 and num_samples < 2:
            raise ValueError("`mismatch_fraction` > 0 needs `num_samples` >= 2 to borrow another scene's caption")
        unknown = [name for name in shapes if name not in SHAPES] + [name for name in colours if name not in COLOURS]
        if unknown:
            raise ValueError(f"unknown shapes or colours {unknown}; choose from {SHAPES} and {tuple(COLOURS)}")
        self.num_samples = num_samples
        self.seed = seed
        self.split = split
        self.image_size = image_size
        self.min_objects = min_objects
        self.max_objects = max_objects
        self.mismatch_fraction = mismatch_fraction
        self.shapes = tuple(shapes)
        self.colours = tuple(colours)
        self._split_salt = zlib.crc32(split.encode("utf-8"))

        num_mismatched = round(mismatch_fraction * num_samples)
        self._is_mismatched = np.zeros(num_samples, dtype=bool)
        mismatch_rng = self._rng(_MISMATCH_SET_STREAM)
        self._is_mismatched[mismatch_rng.permutation(num_samples)[:num_mismatched]] = True

    def class_names(self) -> list[str]:
        """Prompt-able class names, "colour shape", indexed by `label`: `colour_index * len(shapes) + shape_index`."""
        return [f"{colour} {shape}" for colour in self.colours for shape in self.shapes]

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index in range(self.num_samples):
            yield self[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} scenes")
        index = index % self.num_samples
        layout = self._layout(index)
        image, boxes = self._render(layout)
        texts = self._texts(layout)
        mismatched = bool(self._is_mismatched[index])
        if mismatched:  # caption noise: the caption and its summary come from another scene, A stays the image's
            texts = {**texts, **self._donor_texts(index, texts["caption"])}
        object_labels = [self._class_id(obj) for obj in layout.objects]
        return {
            "image": image,
            **texts,
            "boxes": boxes,
            "label": object_labels[0],
            "object_labels": object_labels,
            "mismatched": mismatched,
        }

    # --- sampling -----------------------------------------------------------------------------------------------

    def _rng(self, *stream: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, self._split_salt, *stream]))

    def _layout(self, index: int) -> _SceneLayout:
        rng = self._rng(_LAYOUT_STREAM, index)
        num_objects = int(rng.integers(self.min_objects, self.max_objects + 1))
        positions = rng.choice(list(POSITIONS), size=num_objects, replace=False)
        colours = rng.choice(self.colours, size=num_objects, replace=False)
        objects = []
        for position, colour in zip(positions, colours, strict=True):
            shape = str(rng.choice(self.shapes))
            size = str(rng.choice(list(SIZES)))
            (anchor_x, anchor_y), _ = POSITIONS[str(position)]
            jitter_x, jitter_y = rng.uniform(-_CENTRE_JITTER, _CENTRE_JITTER, size=2)
            radius = rng.uniform(*SIZES[size]) * self.image_size
            centre = ((anchor_x + jitter_x) * self.image_size, (anchor_y + jitter_y) * self.image_size)
            objects.append(_SceneObject(shape, str(colour), size, str(position), centre, float(radius)))
        grey = rng.uniform(110, 200)
        return _SceneLayout(
            objects=tuple(objects),
            background_rgb=tuple(float(v) for v in grey + rng.uniform(-10, 10, size=3)),
            gradient_angle=float(rng.uniform(0, 2 * np.pi)),
            gradient_amplitude=float(rng.uniform(0, 12)),
            noise_seed=int(rng.integers(2**31)),
        )

    def _class_id(self, obj: _SceneObject) -> int:
        return self.colours.index(obj.colour) * len(self.shapes) + self.shapes.index(obj.shape)

    def _texts(self, layout: _SceneLayout) -> dict[str, str]:
        objects = layout.objects
        caption = _join_phrases(
            [_with_article(f"{o.size} {o.colour} {o.shape}") + " " + POSITIONS[o.position][1] for o in objects]
        )
        summary = _join_phrases([_with_article(f"{o.colour} {o.shape}") for o in objects])
        attributes = ", ".join(f"{o.colour} {o.shape}" for o in objects)
        return {"caption": caption, "summary": summary, "attributes": attributes}

    def _donor_texts(self, index: int, own_caption: str) -> dict[str, str]:
        """Caption and summary of another scene whose caption differs from `own_caption` (a truly wrong pair)."""
        rng = self._rng(_DONOR_STREAM, index)
        for _ in range(100):
            donor = int(rng.integers(self.num_samples - 1))
            donor += donor >= index  # uniform over the other indices
            texts = self._texts(self._layout(donor))
            if texts["caption"] != own_caption:
                return {"caption": texts["caption"], "summary": texts["summary"]}
        raise RuntimeError(f"found no scene with a caption different from scene {index}'s; use more `num_samples`")

    # --- rendering ----------------------------------------------------------------------------------------------

    def _background(self, layout: _SceneLayout) -> np.ndarray:
        """Near-grey background with a linear gradient and light noise: (H, W, 3) uint8."""
        size = self.image_size
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5  # (W,)
        direction = np.cos(layout.gradient_angle) * coords[None, :] + np.sin(layout.gradient_angle) * coords[:, None]
        gradient = layout.gradient_amplitude * 2 * direction  # (H, W), in [-amplitude, amplitude]
        noise = np.random.default_rng(layout.noise_seed).uniform(-5, 5, size=(size, size, 3))
        background = np.asarray(layout.background_rgb, dtype=np.float32) + gradient[..., None] + noise
        return np.clip(np.rint(background), 0, 255).astype(np.uint8)

    def _render(self, layout: _SceneLayout) -> tuple[Image.Image, list[list[int]]]:
        image = Image.fromarray(self._background(layout))
        boxes = []
        for obj in layout.objects:
            mask = _shape_mask(obj.shape, obj.centre, obj.radius, self.image_size)
            image.paste(COLOURS[obj.colour], mask=mask)
            boxes.append(list(mask.getbbox()))
        return image, boxes
