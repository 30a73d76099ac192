"""Overlay AutoLink keypoints and their learned skeleton on an image."""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Sequence

import torch
from PIL import Image, ImageDraw


def keypoint_colors(num_keypoints: int) -> list[tuple[int, int, int]]:
    """`num_keypoints` distinct RGB colours, evenly spaced in hue."""
    return [
        tuple(round(channel * 255) for channel in colorsys.hsv_to_rgb(index / num_keypoints, 0.9, 1.0))
        for index in range(num_keypoints)
    ]


def draw_keypoints(
    image: Image.Image,
    keypoints: Sequence[Sequence[float]] | torch.Tensor,
    edges: Iterable[tuple[int, int, float]] = (),
    radius: int | None = None,
    max_line_width: int | None = None,
    line_color: tuple[int, int, int] = (255, 0, 0),
    scale: int = 1,
) -> Image.Image:
    """Draw the skeleton's edges (width proportional to weight) and then the keypoints on a copy of `image`.

    Args:
        image: the PIL image the keypoints were detected in.
        keypoints: `(K, 2)` pixel (x, y) coordinates (the pipeline's or `post_process_keypoint_detection`'s).
        edges: `(i, j, weight)` triples; the strongest edge is drawn `max_line_width` wide, the others in proportion
            (at least 1 pixel).
        radius: keypoint radius in pixels (default: 1/40 of the short side, at least 2).
        max_line_width: width of the strongest edge (default: 1/30 of the short side, at least 1).
        line_color: RGB colour of the edges; keypoints get one hue each.
        scale: draw on the image enlarged `scale` times (nearest neighbour), so that small images stay legible;
            keypoints are mapped with the pixel-centre convention, x' = (x + 0.5) * scale - 0.5.

    Returns:
        An RGB image of the input's size times `scale`.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"`image` must be a PIL image, got {type(image).__name__}.")
    points = torch.as_tensor(keypoints, dtype=torch.float32)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"`keypoints` must have shape (K, 2) of pixel (x, y), got {tuple(points.shape)}.")
    edges = list(edges)
    num_keypoints = points.shape[0]
    if any(not (0 <= i < num_keypoints and 0 <= j < num_keypoints) for i, j, _ in edges):
        raise ValueError(f"`edges` must index the {num_keypoints} keypoints, got {edges}.")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"`scale` must be an integer >= 1, got {scale!r}.")
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        points = (points + 0.5) * scale - 0.5
    short_side = min(image.size)
    radius = max(2, round(short_side / 40)) if radius is None else radius
    max_line_width = max(1, round(short_side / 30)) if max_line_width is None else max_line_width
    if radius < 1 or max_line_width < 1:
        raise ValueError(f"`radius` and `max_line_width` must be >= 1, got {radius} and {max_line_width}.")

    canvas = image.convert("RGB")  # a copy: the caller's image is left untouched
    draw = ImageDraw.Draw(canvas)
    coordinates = points.tolist()
    strongest = max((weight for _, _, weight in edges), default=0.0)
    for i, j, weight in edges:
        width = max(1, round(max_line_width * weight / strongest)) if strongest > 0 else 1
        draw.line([tuple(coordinates[i]), tuple(coordinates[j])], fill=line_color, width=width)
    for (x, y), color in zip(coordinates, keypoint_colors(num_keypoints), strict=True):
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color, outline=(0, 0, 0))
    return canvas


def draw_keypoint_strip(
    images: Sequence[Image.Image], results: Sequence[dict], min_size: int = 128, padding: int = 2
) -> Image.Image:
    """Images side by side on white, each with its keypoints and edges drawn by [`draw_keypoints`].

    Args:
        images: the PIL images the keypoints were detected in, all of one size.
        results: per image, a dict with `keypoints` and `edges` (the pipeline's or `post_process_keypoint_detection`'s
            output).
        min_size: images whose short side is smaller are drawn enlarged by `min_size // short side` (an integer).
        padding: white pixels around and between the images.

    Returns:
        An RGB image one drawn image high and `len(images)` wide.
    """
    if not images or len(images) != len(results):
        raise ValueError(
            f"`images` and `results` must be non-empty and of one length, got {len(images)} and {len(results)}."
        )
    drawn = [
        draw_keypoints(image, result["keypoints"], result["edges"], scale=max(1, min_size // min(image.size)))
        for image, result in zip(images, results, strict=True)
    ]
    width, height = drawn[0].size
    strip = Image.new("RGB", (len(drawn) * (width + padding) + padding, height + 2 * padding), (255, 255, 255))
    for index, image in enumerate(drawn):
        strip.paste(image, (padding + index * (width + padding), padding))
    return strip


__all__ = ["draw_keypoint_strip", "draw_keypoints", "keypoint_colors"]
