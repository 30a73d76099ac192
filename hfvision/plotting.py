"""Plots with matplotlib (the optional `plots` extra: `pip install "hfvision[plots]"`).

- `plot_training_curves(run_dir)`: the losses, learning rate and evaluation metrics a run logged, against the step,
  from its `log_history.jsonl` (the accelerate scripts, `hfvision.training`) or `trainer_state.json` (`Trainer`);
  `hfvision plot RUN_DIR` draws it into `RUN_DIR/training_curves.png`.
- `plot_curves(...)`: one panel per group of named curves against a shared x axis (the LPS shift-consistency plot).
- `plot_image_grid(...)`: rows of images with a title per column (the MCMAE reconstruction grid) and per row.
- `plot_matrix(...)`: a square matrix as an annotated heatmap (AutoLink's learned graph: the weight of every pair of
  keypoints).

matplotlib is imported when a plot is drawn, with the non-interactive Agg backend, so nothing here opens a window and
the rest of hfvision never needs matplotlib.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["plot_curves", "plot_image_grid", "plot_matrix", "plot_training_curves", "read_log_history"]

# Entries of a run's log that are bookkeeping, not curves worth a panel.
_NOT_CURVES = ("epoch", "num_skipped_samples", "skipped_fraction", "num_nonfinite_steps", "samples_per_second")


def _pyplot() -> Any:
    """`matplotlib.pyplot` on the Agg backend, or an ImportError that says how to install it."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError('plots need matplotlib: pip install "hfvision[plots]" (or pip install matplotlib)') from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_log_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The logged entries of a run, as `{"step": int, "train/<name>" | "eval/<name>": value, ...}` dicts.

    Args:
        run_dir: a run's output folder with `log_history.jsonl` (hfvision's accelerate scripts) or
            `trainer_state.json` (`Trainer`, whose `loss` / `eval_<name>` keys become `train/loss` / `eval/<name>`);
            the newest `checkpoint-*/trainer_state.json` is read when the folder has none at its top.

    Returns:
        The entries in logged order.

    Raises:
        FileNotFoundError: if the folder has neither file.
    """
    run = Path(run_dir)
    jsonl = run / "log_history.jsonl"
    if jsonl.is_file():
        return [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
    states = [run / "trainer_state.json"] if (run / "trainer_state.json").is_file() else []
    states = states or sorted(run.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name[11:]))
    if not states:
        raise FileNotFoundError(f"{run} has no log_history.jsonl or trainer_state.json: not a training run folder")
    entries = []
    for entry in json.loads(states[-1].read_text(encoding="utf-8"))["log_history"]:
        renamed = {"step": entry.get("step", 0)}
        for key, value in entry.items():
            if key != "step":
                renamed[f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"] = value
        entries.append(renamed)
    return entries


def plot_curves(
    panels: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    path: str | Path,
    *,
    xlabel: str = "step",
    ylabels: Mapping[str, str] | None = None,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    columns: int = 3,
) -> Path:
    """Draw panels of named curves and save the figure as a PNG.

    Args:
        panels: `{panel title: {curve label: [(x, y), ...]}}`; a curve with a single point is drawn as a marker.
        path: the PNG to write (its folder is created).
        xlabel: the x axis label of every panel.
        ylabels: y axis label per panel title.
        styles: matplotlib line properties per curve label (`color`, `linewidth`, `linestyle`, ...); other curves
            take the default colour cycle.
        columns: panels per row.

    Returns:
        `path`.

    Raises:
        ValueError: if there is no curve to draw.
    """
    panels = {title: curves for title, curves in panels.items() if any(curves.values())}
    if not panels:
        raise ValueError("`panels` holds no points to draw")
    plt = _pyplot()
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows), squeeze=False)
    for axis, (title, curves) in zip(axes.flat, panels.items(), strict=False):
        for label, points in curves.items():
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            style = {"marker": "o" if len(points) < 30 else None, "markersize": 3, **(styles or {}).get(label, {})}
            axis.plot(xs, ys, label=label, **style)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel(xlabel)
        axis.set_ylabel((ylabels or {}).get(title, ""))
        axis.grid(alpha=0.3)
        if len(curves) > 1:
            axis.legend(fontsize=8)
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    figure.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def plot_training_curves(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Plot a run's logged losses, learning rate and evaluation metrics against the optimizer step.

    Panels: "loss" (every `train/*loss*` and `eval/*loss*` curve), "learning rate", then one per other evaluation
    metric (e.g. `eval/top1_accuracy`). Bookkeeping entries (epoch, throughput, skipped samples) are left out.

    Args:
        run_dir: the run's output folder (see `read_log_history`).
        output: the PNG to write; defaults to `run_dir/training_curves.png`.

    Returns:
        The PNG's path.

    Raises:
        FileNotFoundError: if `run_dir` has no log.
        ValueError: if the log holds no numeric curve.
    """
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {"loss": {}, "learning rate": {}}
    for entry in read_log_history(run_dir):
        for key, value in entry.items():
            if key == "step" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            split, _, name = key.partition("/")
            if not name or name in _NOT_CURVES or split not in ("train", "eval"):
                continue
            if "loss" in name:
                panel = "loss"
            elif name == "learning_rate":
                panel = "learning rate"
            else:
                panel = key
            panels.setdefault(panel, {}).setdefault(key, []).append((entry["step"], float(value)))
    if not any(panels.values()):
        raise ValueError(f"{run_dir}'s log holds no loss, learning rate or evaluation metric to plot")
    out = Path(output) if output is not None else Path(run_dir) / "training_curves.png"
    return plot_curves(panels, out, xlabel="optimizer step")


def plot_image_grid(
    rows: Sequence[Sequence[Image.Image | np.ndarray]],
    path: str | Path,
    *,
    column_titles: Sequence[str] | None = None,
    row_titles: Sequence[str] | None = None,
    scale: float = 1.2,
) -> Path:
    """Draw rows of images, titled above each column and left of each row, and save as a PNG.

    Args:
        rows: images per row (PIL images, or `(H, W)` / `(H, W, 3)` arrays: uint8, or floats in [0, 1]); rows may
            differ in length.
        path: the PNG to write (its folder is created).
        column_titles: one title per column (above the first row).
        row_titles: one label per row.
        scale: inches per image (small images are enlarged without smoothing).

    Returns:
        `path`.

    Raises:
        ValueError: if `rows` is empty or the titles do not match it.
    """
    if not rows or not any(rows):
        raise ValueError("`rows` holds no image")
    if row_titles is not None and len(row_titles) != len(rows):
        raise ValueError(f"`row_titles` must have one title per row ({len(rows)}), got {len(row_titles)}")
    columns = max(len(row) for row in rows)
    if column_titles is not None and len(column_titles) != columns:
        raise ValueError(f"`column_titles` must have one title per column ({columns}), got {len(column_titles)}")
    plt = _pyplot()
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(scale * columns + 1.2, scale * len(rows) + 0.3), squeeze=False
    )
    for r, row in enumerate(rows):
        for c in range(columns):
            axis = axes[r][c]
            axis.set_xticks([])
            axis.set_yticks([])
            if c >= len(row):
                axis.set_visible(False)
                continue
            image = np.asarray(row[c])
            vmax = 255 if image.dtype == np.uint8 else 1
            axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=vmax, interpolation="nearest")
            for spine in axis.spines.values():
                spine.set_visible(False)
            if column_titles is not None and r == 0:
                axis.set_title(column_titles[c], fontsize=9)
        if row_titles is not None:
            axes[r][0].set_ylabel(row_titles[r], rotation=0, ha="right", va="center", fontsize=9)
    figure.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def plot_matrix(
    matrix: np.ndarray, path: str | Path, *, title: str, labels: Sequence[str] | None = None, colorbar_label: str = ""
) -> Path:
    """Draw a square matrix as a heatmap with each value written in its cell, and save it as a PNG.

    Args:
        matrix: `(N, N)` values (a torch tensor or array).
        path: the PNG to write (its folder is created).
        title: the figure's title.
        labels: names of the N rows and columns; defaults to 0..N-1.
        colorbar_label: the colour bar's label.

    Returns:
        `path`.

    Raises:
        ValueError: if `matrix` is not square or `labels` does not match it.
    """
    values = np.asarray(matrix, dtype=float)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise ValueError(f"`matrix` must be square (N, N), got shape {values.shape}")
    labels = [str(i) for i in range(len(values))] if labels is None else list(labels)
    if len(labels) != len(values):
        raise ValueError(f"`labels` must name the {len(values)} rows, got {len(labels)}")
    plt = _pyplot()
    size = 1.6 + 0.45 * len(values)
    figure, axis = plt.subplots(figsize=(size + 1.2, size))
    image = axis.imshow(values, cmap="viridis")
    figure.colorbar(image, ax=axis, label=colorbar_label)
    axis.set_xticks(range(len(values)), labels)
    axis.set_yticks(range(len(values)), labels)
    middle = (values.max() + values.min()) / 2
    for (i, j), value in np.ndenumerate(values):
        color = "black" if value > middle else "white"
        axis.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=7, color=color)
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
