"""Shift consistency of LPS against APS, BlurPool and plain striding, trained alike on Fashion-MNIST (CPU).

Learnable Polyphase Sampling (Rojas-Gomez et al., NeurIPS 2022, arXiv 2210.08001), Table 1's protocol at toy scale:
the same ResNet-18-style network (`--preset`, CIFAR stem, channel widths `--width` x [1, 2, 4, 8]) is trained once per
downsampling (`lps`, `aps`, `blurpool`, `stride`) with the same seed, data order and step budget, then evaluated on
the test split for top-1 accuracy and shift consistency. The 28x28 images are zero-padded to 32x32, a multiple of the
total stride (8 with the CIFAR stem), and every network uses circular padding, so LPS and APS must be exactly
consistent under circular shifts (100%), while striding and BlurPool are not.

Shifts: offset o in 0..`--max_offset` moves the image by (o, o) pixels (down and right), circularly (`torch.roll`) or
with zero fill (`standard`). The table's consistency is the fraction of test images whose predicted class is the same
under every offset (the `shift_consistency` metric, `<mode>_consistency`), and the mean agreement over pairs of
offsets (`<mode>_pairwise`); the plot draws, per offset, the percentage of images whose prediction equals the
unshifted one (one line per method, circular and standard side by side), with matplotlib into
`<output_dir>/lps_shift.png`.
Two checks are visible in the plot: a strided network is invariant to circular shifts by multiples of its total
stride (offset 8), and standard shifts up to 2 pixels only move black border, so they equal circular ones.

Full run with the defaults (about 10 min on one CPU core)::

    OMP_NUM_THREADS=1 python benchmarks/lps_shift.py --max_steps 300 --train_samples 10000 --eval_samples 1000
    OMP_NUM_THREADS=1 python benchmarks/lps_shift.py --max_steps 600 --train_samples 20000  # README table, ~12 min

Smoke run (seconds)::

    python benchmarks/lps_shift.py --max_steps 2 --train_samples 64 --eval_samples 16 --width 4

Deviations from the paper: a few hundred Adam steps at a fixed Gumbel temperature instead of 250 epochs of SGD with
annealing, Fashion-MNIST instead of CIFAR-10, offsets along the diagonal instead of two random shifts per image.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from hfvision.data.fashion_mnist import FASHION_MNIST_CLASS_NAMES, load_fashion_mnist
from hfvision.metrics import load_metric
from hfvision.metrics.shift_consistency.shift_consistency import SHIFT_MODES, ShiftConsistency
from hfvision.models.lps import LpsResNetConfig, LpsResNetForImageClassification
from hfvision.plotting import plot_curves

METHODS = ("lps", "aps", "blurpool", "stride")
# Fashion-MNIST training-set pixel statistics (on [0, 1]), as commonly quoted.
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530
IMAGE_SIZE = 32  # 28 + 2 * 2 zero border: a multiple of the total stride 8 (CIFAR stem) and 32 (ImageNet stem)
# One RGB colour per method for the plot.
COLOURS = {"lps": "#d62728", "aps": "#1f77b4", "blurpool": "#2ca02c", "stride": "#7f7f7f"}


@dataclass
class BenchmarkArguments:
    """Budget and model of the benchmark; every method gets the same."""

    max_steps: int = field(default=300, metadata={"help": "Optimiser steps per method."})
    train_samples: int = field(default=10000, metadata={"help": "Training images (first N of the train split)."})
    eval_samples: int = field(default=1000, metadata={"help": "Test images (first N of the test split)."})
    preset: str = field(default="lps-resnet18-cifar", metadata={"help": "LpsResNetConfig preset."})
    width: int = field(
        default=8, metadata={"help": "Stem width; stages get width x [1, 2, 4, 8]. 0 keeps the preset's widths."}
    )
    methods: list[str] = field(default_factory=lambda: list(METHODS), metadata={"help": "Downsampling modes."})
    batch_size: int = field(default=64, metadata={"help": "Training batch size."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Adam learning rate (cosine decay to 0)."})
    max_offset: int = field(default=8, metadata={"help": "Largest shift offset o; shifts are (o, o), o = 0..max."})
    seed: int = field(default=0, metadata={"help": "Seed of the initialisation, data order and Gumbel noise."})
    output_dir: str = field(default="runs/lps_shift", metadata={"help": "Where the PNG plot and JSON results go."})


def load_split(split: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST images `(N, 1, 32, 32)` in [0, 1] (zero border of 2 pixels) and labels `(N,)`."""
    dataset = load_fashion_mnist(split, limit=limit)
    pixels = np.stack([np.asarray(image) for image in dataset["image"]])  # (N, 28, 28) uint8
    images = torch.from_numpy(pixels).float().div(255).unsqueeze(1)  # (N, 1, 28, 28)
    border = (IMAGE_SIZE - images.shape[-1]) // 2
    images = F.pad(images, (border, border, border, border))  # (N, 1, 32, 32)
    return images, torch.tensor(dataset["label"], dtype=torch.long)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Pixel values for the model; shifts are applied before, so the zero fill is black background."""
    return (images - PIXEL_MEAN) / PIXEL_STD


def build_model(args: BenchmarkArguments, downsample: str) -> LpsResNetForImageClassification:
    """The benchmark network with `downsample` sampling, seeded so every method starts from the same draw."""
    overrides = {}
    if args.width:
        overrides = {"embedding_size": args.width, "hidden_sizes": [args.width * 2**i for i in range(4)]}
    config = LpsResNetConfig.from_preset(
        args.preset,
        num_channels=1,
        downsample=downsample,
        num_labels=len(FASHION_MNIST_CLASS_NAMES),
        **overrides,
    )
    if IMAGE_SIZE % config.total_stride:
        raise ValueError(f"preset {args.preset!r} has total stride {config.total_stride}, not a divisor of 32.")
    torch.manual_seed(args.seed)
    return LpsResNetForImageClassification(config)


def train(
    model: LpsResNetForImageClassification, images: torch.Tensor, labels: torch.Tensor, args: BenchmarkArguments
) -> float:
    """`args.max_steps` Adam steps on shuffled batches (same order for every method); returns the last loss."""
    data_order = torch.Generator().manual_seed(args.seed)
    gumbel_noise = torch.Generator().manual_seed(args.seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(args.max_steps, 1))
    batch_size = min(args.batch_size, len(images))
    model.train()
    permutation, cursor, loss = torch.randperm(len(images), generator=data_order), 0, torch.tensor(float("nan"))
    for _ in range(args.max_steps):
        if cursor + batch_size > len(images):  # next epoch
            permutation, cursor = torch.randperm(len(images), generator=data_order), 0
        batch = permutation[cursor : cursor + batch_size]
        cursor += batch_size
        loss = model(normalize(images[batch]), labels=labels[batch], generator=gumbel_noise).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return float(loss.detach())


@torch.no_grad()
def predict(model: LpsResNetForImageClassification, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Predicted classes `(N,)` of `images` `(N, 1, H, W)` in [0, 1], in eval mode (LPS takes the argmax phase)."""
    model.eval()
    batches = [
        model(normalize(images[i : i + batch_size])).logits.argmax(-1) for i in range(0, len(images), batch_size)
    ]
    return torch.cat(batches).numpy()


def evaluate_shifts(
    model: LpsResNetForImageClassification, images: torch.Tensor, labels: torch.Tensor, max_offset: int
) -> dict[str, object]:
    """Accuracy and, per shift mode, consistency over offsets (o, o), o = 0..max_offset, overall and per offset."""
    offsets = list(range(max_offset + 1))
    references = labels.numpy()
    row: dict[str, object] = {}
    for mode in SHIFT_MODES:
        # (N, S): class of every image under every offset; column 0 is the unshifted image.
        shifted = tqdm(offsets, desc=f"   {mode} shifts", unit="shift", leave=False)
        predictions = np.stack(
            [predict(model, ShiftConsistency.shift_images(images, (o, o), mode=mode)) for o in shifted], axis=1
        )
        metric = load_metric("shift_consistency", config_name=mode)
        scores = metric.compute(predictions=predictions, references=references)
        row["accuracy"] = float((predictions[:, 0] == references).mean())
        row[f"{mode}_consistency"] = scores[f"{mode}_consistency"]
        row[f"{mode}_pairwise"] = scores[f"{mode}_pairwise_consistency"]
        row[f"{mode}_by_offset"] = [float((predictions[:, k] == predictions[:, 0]).mean()) for k in range(len(offsets))]
    return row


def markdown_table(rows: dict[str, dict[str, object]]) -> str:
    """The results as a markdown table, percentages with two decimals."""
    lines = [
        "| downsample | top-1 acc. | circular consistency | circular pairwise | standard consistency "
        "| standard pairwise |",
        "|---|---|---|---|---|---|",
    ]
    for method, row in rows.items():
        keys = ("accuracy", "circular_consistency", "circular_pairwise", "standard_consistency", "standard_pairwise")
        lines.append(f"| {method} | " + " | ".join(f"{100 * row[key]:.2f}" for key in keys) + " |")
    return "\n".join(lines)


def draw_plot(rows: dict[str, dict[str, object]], path: Path) -> Path:
    """Consistency (% same class as unshifted) vs shift offset, one line per method; circular and standard panels
    (matplotlib, the `plots` extra)."""
    panels = {
        f"{mode} shift": {
            method: [(offset, 100 * value) for offset, value in enumerate(row[f"{mode}_by_offset"])]
            for method, row in rows.items()
        }
        for mode in SHIFT_MODES
    }
    ylabel = "% same class as unshifted"
    return plot_curves(
        panels,
        path,
        xlabel="offset o, shift (o, o) in pixels",
        ylabels=dict.fromkeys(panels, ylabel),
        # earlier methods wider, so a later line on the same values (LPS and APS at 100%) leaves them visible
        styles={
            method: {"color": COLOURS.get(method), "linewidth": 1.5 + 2 * (len(rows) - 1 - rank)}
            for rank, method in enumerate(rows)
        },
        columns=2,
    )


def main(argv: list[str] | None = None) -> dict[str, dict[str, object]]:
    """Train and evaluate every method; print the markdown table; save the plot and JSON results.

    Returns:
        Per method (`lps`, `aps`, ...), its table row: `accuracy`, `<mode>_consistency`, `<mode>_pairwise` and the
        per-offset curve `<mode>_by_offset` for `<mode>` in `circular`, `standard` (fractions in [0, 1]), and
        `train_seconds`, `final_loss`.
    """
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"`methods` must be among {METHODS}, got {sorted(unknown)}.")
    train_images, train_labels = load_split("train", args.train_samples)
    test_images, test_labels = load_split("test", args.eval_samples)

    rows: dict[str, dict[str, object]] = {}
    for method in args.methods:
        model = build_model(args, method)
        start = time.perf_counter()
        final_loss = train(model, train_images, train_labels, args)
        train_seconds = time.perf_counter() - start
        rows[method] = {**evaluate_shifts(model, test_images, test_labels, args.max_offset)}
        rows[method] |= {"train_seconds": train_seconds, "final_loss": final_loss}
        print(f"{method}: trained {args.max_steps} steps in {train_seconds:.0f}s, {rows[method]['accuracy']:.3f} acc.")

    output_dir = Path(args.output_dir)
    plot_path = draw_plot(rows, output_dir / "lps_shift.png")
    (output_dir / "lps_shift.json").write_text(json.dumps({"arguments": vars(args), "results": rows}, indent=2))
    print(markdown_table(rows))
    print(f"plot: {plot_path}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
