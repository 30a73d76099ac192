"""Pictures of Score-SDE samples: an image grid, and a scatter + histogram of point samples against a manifold.

Pillow only (no plotting library), so the pipeline that uses them runs as remote code with transformers alone.
The scatter shows the samples projected on the plane of the manifold's first two embedding coordinates (Q^T x, the
circle's plane), over the manifold drawn in grey; the histogram shows the distance of each sample to the manifold on
a log axis, which is where "on M" (Pidstrigach, arXiv 2206.01018) becomes visible: within O(sigma_min) or not.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

BACKGROUND, INK, GUIDE = (255, 255, 255), (40, 40, 40), (200, 200, 200)
SERIES_COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14))


def make_image_grid(images: torch.Tensor, num_columns: int | None = None, value_range: tuple[float, float] = (0, 1)):
    """Images `(B, C, H, W)` (C = 1 or 3, values in `value_range`) as one PIL grid, `num_columns` per row (default
    about sqrt(B)), with a 2-pixel white gutter."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"`images` must have shape (B, 1 or 3, H, W), got {tuple(images.shape)}.")
    low, high = value_range
    pixels = ((images.detach().float().cpu() - low) / (high - low)).clamp(0, 1).mul(255).round().to(torch.uint8)
    pixels = pixels.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
    count, height, width = pixels.shape[:3]
    num_columns = num_columns or math.ceil(math.sqrt(count))
    num_rows = math.ceil(count / num_columns)
    gutter = 2
    grid = np.full((num_rows * (height + gutter) + gutter, num_columns * (width + gutter) + gutter, 3), 255, np.uint8)
    rows, columns = np.divmod(np.arange(count), num_columns)
    for index in range(count):  # one paste per image (a handful), not per pixel
        top, left = gutter + rows[index] * (height + gutter), gutter + columns[index] * (width + gutter)
        grid[top : top + height, left : left + width] = pixels[index]
    return Image.fromarray(grid)


def _frame(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str) -> None:
    draw.rectangle(box, outline=INK)
    draw.text((box[0] + 4, box[1] - 14), title, fill=INK)


def plot_samples_on_manifold(
    series: dict[str, torch.Tensor],
    isometry: torch.Tensor,
    distances: dict[str, torch.Tensor] | None = None,
    radius: float = 1.0,
    size: int = 360,
    extent: float = 1.6,
    title: str = "",
) -> Image.Image:
    """Scatter of point samples on the plane of the first two embedding coordinates, with the circle of `radius` in
    grey, and (with `distances`) a histogram of the distance to the manifold on a log axis from 1e-5 to 10.

    Args:
        series: name -> samples `(n, d)`; each series gets its own colour and legend entry.
        isometry: the manifold's Q `(d, m)`; the plot shows u_1, u_2 of u = Q^T x.
        distances: name -> distances `(n,)` to the manifold (e.g. `manifold.distance(samples)`).
        radius: radius of the guide circle (0: none).
        size: side of each panel in pixels.
        extent: the scatter shows [-extent, extent]^2.
        title: printed above the panels.
    """
    panels = 2 if distances else 1
    margin, top = 30, 40
    image = Image.new("RGB", (panels * (size + margin) + margin, size + top + 30 + 14 * len(series)), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((margin, 6), title, fill=INK)
    box = (margin, top, margin + size, top + size)
    _frame(draw, box, "samples, projected on the manifold's plane (Q^T x)_1,2")

    def to_pixels(values: np.ndarray) -> np.ndarray:
        return (values + extent) / (2 * extent) * size

    if radius > 0:
        centre, pixels_radius = margin + size / 2, radius / (2 * extent) * size
        draw.ellipse(
            (
                centre - pixels_radius,
                top + size / 2 - pixels_radius,
                centre + pixels_radius,
                top + size / 2 + pixels_radius,
            ),
            outline=GUIDE,
            width=3,
        )
    basis = isometry.to(torch.float64)[:, :2]
    for index, (name, samples) in enumerate(series.items()):
        color = SERIES_COLORS[index % len(SERIES_COLORS)]
        plane = (samples.detach().to(torch.float64).cpu() @ basis).numpy()  # (n, 2)
        xs, ys = margin + to_pixels(plane[:, 0]), top + size - to_pixels(plane[:, 1])
        inside = (xs >= margin) & (xs <= margin + size) & (ys >= top) & (ys <= top + size)
        for x, y in zip(xs[inside].tolist(), ys[inside].tolist(), strict=True):
            draw.point([(x, y), (x + 1, y), (x, y + 1), (x + 1, y + 1)], fill=color)
        draw.rectangle((margin, top + size + 22 + 14 * index, margin + 8, top + size + 30 + 14 * index), fill=color)
        draw.text((margin + 14, top + size + 20 + 14 * index), name, fill=INK)

    if distances:
        left = 2 * margin + size
        hist_box = (left, top, left + size, top + size)
        _frame(draw, hist_box, "distance to the manifold (log10)")
        low, high, num_bins = -5.0, 1.0, 48
        for tick in range(int(low), int(high) + 1):
            x = left + (tick - low) / (high - low) * size
            draw.line((x, top + size, x, top + size + 4), fill=INK)
            draw.text((x - 8, top + size + 6), f"{tick}", fill=INK)
        histograms = {}
        for name, values in distances.items():
            logs = np.log10(np.clip(values.detach().to(torch.float64).cpu().numpy(), 10**low, 10**high))
            histograms[name] = np.histogram(logs, bins=num_bins, range=(low, high))[0] / max(len(logs), 1)
        peak = max(float(counts.max()) for counts in histograms.values()) or 1.0
        bin_width = size / num_bins
        for index, counts in enumerate(histograms.values()):
            color = SERIES_COLORS[index % len(SERIES_COLORS)]
            heights = counts / peak * (size - 10)
            outline = [
                (left + (b + edge) * bin_width, top + size - heights[b]) for b in range(num_bins) for edge in (0, 1)
            ]
            draw.line(outline, fill=color, width=2)
    return image


__all__ = ["make_image_grid", "plot_samples_on_manifold"]
