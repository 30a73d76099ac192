"""Shift consistency of LPS against APS, BlurPool, DDAC and plain striding, trained alike on Fashion-MNIST (CPU).

Learnable Polyphase Sampling (Rojas-Gomez et al., NeurIPS 2022, arXiv 2210.08001), the CIFAR-10 experiment at toy
scale: the same ResNet-18-style network (`--preset`, CIFAR stem, channel widths `--width` x [1, 2, 4, 8], circular
padding) is trained once per downsampling and seed with the same data order and step budget, then evaluated on the
test split. Methods: `lps`, `aps` (largest-norm component), `blurpool` (binomial filter 3, then component 0),
`stride` (plain strided ResNet), `ddac` (Zou et al. 2020's content-adaptive filter, 3x3 and 8 channel groups, then
component 0), `lps_ddac` (LPS after a DDAC filter, the paper's "LPS + DDAC").

Data: no CIFAR-10 is available offline, so Fashion-MNIST stands in: the 28x28 images are zero-padded to 32x32 (a
multiple of the total stride 8) and trained with the paper's CIFAR augmentation, random crops with zero padding 3
(every image moved by an offset drawn uniformly from [-3, 3] per axis, the border zero-filled; the official
`aug_method="shift"`) and random horizontal flips; `--augment false` trains on the plain images.

Gumbel temperature: annealed by default with the official step decay that `GumbelTemperatureCallback` implements
(`hfvision/models/lps/trainer_callback_lps.py`, its defaults x0.85 per decay, floor 0.025, from `config.gumbel_tau`
= 1), compressed so that the run spans `--gumbel_tau_decays` decays (25: every 10 of the paper's 250 CIFAR epochs,
as `make demo DEMO=lps` does); `--anneal_gumbel_tau false` keeps tau = 1 throughout. Only models with LPS layers
depend on it, so the other methods' runs are shared by both settings.

Metrics, on the first `--eval_samples` test images, in eval mode:
- top-1 accuracy on the unshifted images;
- the paper's consistency (its `models/core.py`, CIFAR-10): every image is shifted twice, each time by an offset
  drawn uniformly from [-3, 2] per axis (`randint(-3, 3)`), and the consistency is the fraction of images whose two
  predictions agree; "circular" rolls the image (the paper's headline setting, where LPS and APS must score 100%),
  "standard" fills the uncovered border with zeros. The offsets are drawn per image from a generator seeded with the
  run's seed (the official code draws one pair per batch; the expectation is the same), identical for every method;
- ours, stricter: offsets (o, o), o = 0..`--max_offset` along the diagonal, and the fraction of images whose class is
  the same under all of them (`shift_consistency` metric, `<mode>_consistency`) or the mean agreement over pairs
  (`<mode>_pairwise`); the plot draws, per offset, the percentage of images whose class equals the unshifted one
  (mean over seeds), into `<output_dir>/lps_shift.png`.

Several seeds in one invocation (`--seeds 0 1 2`); each (method, temperature setting, seed) run is saved as
`<output_dir>/runs/<method>[-fixed_tau]-seed<k>.json` as soon as it ends and reused when the command runs again with
the same settings (a run saved with other settings raises an error instead), so an interrupted command continues
where it stopped and several commands can share one output folder. The printed markdown table (also
`<output_dir>/lps_shift.md`) gives mean ± sd over the seeds (sd with ddof 1).

Commands of the README table (each with `OMP_NUM_THREADS=1`): 5 methods x 3 seeds with the annealed temperature,
then LPS at a fixed temperature. Commands sharing the output folder can run side by side (one core each, e.g. one with
`--methods lps aps stride`, one with `--methods ddac blurpool`); running the first command again then prints the whole
table from the saved runs::

    python benchmarks/lps_shift.py --max_steps 150 --seeds 0 1 2
    python benchmarks/lps_shift.py --max_steps 150 --seeds 0 1 2 --methods lps --anneal_gumbel_tau false

Smoke run (seconds)::

    python benchmarks/lps_shift.py --max_steps 2 --train_samples 64 --eval_samples 16 --width 8

Deviations from the paper: Fashion-MNIST instead of CIFAR-10, a few hundred Adam steps (cosine learning rate) with the
temperature schedule compressed into them, instead of 250 epochs of SGD; a narrow ResNet-18 (`--width` 8: 8-64
channels instead of 64-512).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from hfvision.data.fashion_mnist import FASHION_MNIST_CLASS_NAMES, load_fashion_mnist
from hfvision.metrics import load_metric
from hfvision.metrics.shift_consistency.shift_consistency import SHIFT_MODES, ShiftConsistency
from hfvision.models.lps import (
    GumbelTemperatureCallback,
    LpsResNetConfig,
    LpsResNetForImageClassification,
    gumbel_tau_buffers,
)
from hfvision.plotting import plot_curves

# Config overrides of each method on top of the preset.
METHODS = {
    "lps": {"downsample": "lps"},
    "aps": {"downsample": "aps"},
    "blurpool": {"downsample": "blurpool"},
    "stride": {"downsample": "stride"},
    "ddac": {"downsample": "blurpool", "antialias": "ddac"},
    "lps_ddac": {"downsample": "lps", "antialias": "ddac", "lowpass_filter_size": 3},
}
DEFAULT_METHODS = ("lps", "lps_ddac", "aps", "blurpool", "stride", "ddac")
# Fashion-MNIST training-set pixel statistics (on [0, 1]), as commonly quoted.
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530
IMAGE_SIZE = 32  # 28 + 2 * 2 zero border: a multiple of the total stride 8 (CIFAR stem) and 32 (ImageNet stem)
PAPER_MAX_SHIFT = 3  # the paper's CIFAR-10 offsets: randint(-3, 3), i.e. -3..2 per axis
CROP_PADDING = 3  # the paper's CIFAR-10 augmentation: RandomCrop(32, padding=3)
# One RGB colour per method for the plot.
COLOURS = {
    "lps": "#d62728",
    "lps_ddac": "#ff7f0e",
    "aps": "#1f77b4",
    "blurpool": "#2ca02c",
    "ddac": "#9467bd",
    "stride": "#7f7f7f",
}


@dataclass
class BenchmarkArguments:
    """Budget and model of the benchmark; every method gets the same."""

    max_steps: int = field(default=150, metadata={"help": "Optimiser steps per method and seed."})
    train_samples: int = field(default=20000, metadata={"help": "Training images (first N of the train split)."})
    eval_samples: int = field(default=1000, metadata={"help": "Test images (first N of the test split)."})
    preset: str = field(default="lps-resnet18-cifar", metadata={"help": "LpsResNetConfig preset."})
    width: int = field(
        default=8, metadata={"help": "Stem width; stages get width x [1, 2, 4, 8]. 0 keeps the preset's widths."}
    )
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS), metadata={"help": "Methods."})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "Seeds; one run per method and seed."})
    anneal_gumbel_tau: bool = field(
        default=True, metadata={"help": "Anneal the Gumbel temperature (GumbelTemperatureCallback's step decay)."}
    )
    gumbel_tau_decays: int = field(default=25, metadata={"help": "Temperature decays over the run when annealing."})
    augment: bool = field(default=True, metadata={"help": "Random crops (zero padding 3) and flips in training."})
    batch_size: int = field(default=64, metadata={"help": "Training batch size."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Adam learning rate (cosine decay to 0)."})
    max_offset: int = field(default=8, metadata={"help": "Our protocol: shifts (o, o), o = 0..max_offset."})
    output_dir: str = field(default="runs/lps_shift", metadata={"help": "Where results, table and plot go."})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"`methods` must be among {sorted(METHODS)}, got {unknown}.")
        for name in ("max_steps", "train_samples", "eval_samples", "batch_size", "gumbel_tau_decays"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if not self.seeds:
            raise ValueError("`seeds` must name at least one seed.")


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


def shift_each(images: torch.Tensor, offsets: torch.Tensor, mode: str) -> torch.Tensor:
    """Move every image by its own offset, vectorised: output pixel (y, x) of image n is input pixel
    (y - dy_n, x - dx_n) (`torch.roll`'s direction), wrapped around (`"circular"`) or 0 outside (`"standard"`).

    Args:
        images: `(N, C, H, W)`.
        offsets: `(N, 2)` integer (dy, dx) per image.
        mode: `"circular"` or `"standard"`.

    Returns:
        `(N, C, H, W)` shifted images.
    """
    if mode not in SHIFT_MODES:
        raise ValueError(f"`mode` must be one of {SHIFT_MODES}, got {mode!r}.")
    if offsets.shape != (images.shape[0], 2):
        raise ValueError(f"`offsets` must have shape ({images.shape[0]}, 2), got {tuple(offsets.shape)}.")
    height, width = images.shape[-2:]
    rows = torch.arange(height)[None] - offsets[:, :1]  # (N, H) source row of every output row
    columns = torch.arange(width)[None] - offsets[:, 1:]  # (N, W)
    inside = None
    if mode == "circular":
        rows, columns = rows.remainder(height), columns.remainder(width)
    else:
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((columns >= 0) & (columns < width))[:, None, :]
        rows, columns = rows.clamp(0, height - 1), columns.clamp(0, width - 1)
    batch = torch.arange(images.shape[0])[:, None, None]
    shifted = images[batch, :, rows[:, :, None], columns[:, None, :]].permute(0, 3, 1, 2)  # (N, C, H, W)
    return shifted if inside is None else shifted * inside[:, None].to(images.dtype)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The paper's CIFAR-10 training augmentation: a random crop of the image zero-padded by 3 (an offset uniform in
    [-3, 3] per axis, zero fill) and a horizontal flip with probability 1/2, drawn per image."""
    offsets = torch.randint(-CROP_PADDING, CROP_PADDING + 1, (images.shape[0], 2), generator=generator)
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    images = shift_each(images, offsets, "standard")
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def build_model(args: BenchmarkArguments, method: str, seed: int) -> LpsResNetForImageClassification:
    """The benchmark network for `method`, seeded so every method starts from the same draw of a seed."""
    overrides = dict(METHODS[method])
    if args.width:
        overrides |= {"embedding_size": args.width, "hidden_sizes": [args.width * 2**i for i in range(4)]}
    config = LpsResNetConfig.from_preset(
        args.preset, num_channels=1, num_labels=len(FASHION_MNIST_CLASS_NAMES), **overrides
    )
    if IMAGE_SIZE % config.total_stride:
        raise ValueError(f"preset {args.preset!r} has total stride {config.total_stride}, not a divisor of 32.")
    torch.manual_seed(seed)
    return LpsResNetForImageClassification(config)


def has_lps_layers(method: str) -> bool:
    """Whether `method` samples with Gumbel-softmax (its results depend on the temperature setting)."""
    return METHODS[method]["downsample"] == "lps"


def train(
    model: LpsResNetForImageClassification,
    images: torch.Tensor,
    labels: torch.Tensor,
    args: BenchmarkArguments,
    seed: int,
) -> dict[str, float | None]:
    """`args.max_steps` Adam steps on shuffled batches (same order and augmentation for every method of a seed), the
    Gumbel temperature set before every step; returns the last loss and the last temperature (`None` without LPS
    layers)."""
    data_order = torch.Generator().manual_seed(seed)
    gumbel_noise = torch.Generator().manual_seed(seed + 1)
    augmentation = torch.Generator().manual_seed(seed + 2)
    schedule = GumbelTemperatureCallback(
        decay_steps=max(args.max_steps // args.gumbel_tau_decays, 1), initial_tau=model.config.gumbel_tau
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.max_steps)
    batch_size = min(args.batch_size, len(images))
    model.train()
    permutation, cursor, loss = torch.randperm(len(images), generator=data_order), 0, torch.tensor(float("nan"))
    anneal = args.anneal_gumbel_tau and bool(gumbel_tau_buffers(model))
    tau = model.config.gumbel_tau if gumbel_tau_buffers(model) else None  # None: no LPS layer samples
    for step in tqdm(range(args.max_steps), desc="   train", unit="step", leave=False, mininterval=10):
        if cursor + batch_size > len(images):  # next epoch
            permutation, cursor = torch.randperm(len(images), generator=data_order), 0
        batch = permutation[cursor : cursor + batch_size]
        cursor += batch_size
        if anneal:
            tau = schedule.tau_at(step)
            model.set_gumbel_tau(tau)
        pixels = augment(images[batch], augmentation) if args.augment else images[batch]
        loss = model(normalize(pixels), labels=labels[batch], generator=gumbel_noise).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return {"final_loss": float(loss.detach()), "final_gumbel_tau": tau}


@torch.no_grad()
def predict(model: LpsResNetForImageClassification, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Predicted classes `(N,)` of `images` `(N, C, H, W)` in [0, 1], in eval mode (LPS takes the argmax phase)."""
    model.eval()
    batches = [
        model(normalize(images[i : i + batch_size])).logits.argmax(-1) for i in range(0, len(images), batch_size)
    ]
    return torch.cat(batches).numpy()


def paper_offsets(num_images: int, seed: int) -> torch.Tensor:
    """`(2, N, 2)`: the paper's two random offsets per image, each axis uniform in [-3, 2], from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-PAPER_MAX_SHIFT, PAPER_MAX_SHIFT, (2, num_images, 2), generator=generator)


def evaluate_paper_protocol(
    model: LpsResNetForImageClassification, images: torch.Tensor, seed: int
) -> dict[str, float]:
    """The paper's CIFAR-10 consistency: agreement of the predictions for two random shifts of every image, per
    mode (`paper_circular`, `paper_standard`, fractions in [0, 1])."""
    first, second = paper_offsets(len(images), seed)
    return {
        f"paper_{mode}": float(
            (predict(model, shift_each(images, first, mode)) == predict(model, shift_each(images, second, mode))).mean()
        )
        for mode in SHIFT_MODES
    }


def evaluate_shifts(
    model: LpsResNetForImageClassification, images: torch.Tensor, labels: torch.Tensor, max_offset: int
) -> dict[str, object]:
    """Our protocol: accuracy and, per shift mode, consistency over offsets (o, o), o = 0..max_offset, overall and
    per offset."""
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


def run_name(method: str, args: BenchmarkArguments, seed: int) -> str:
    """`<method>[-fixed_tau]-seed<k>`; the temperature setting only names runs of models with LPS layers."""
    fixed = "-fixed_tau" if has_lps_layers(method) and not args.anneal_gumbel_tau else ""
    return f"{method}{fixed}-seed{seed}"


def run_settings(method: str, args: BenchmarkArguments, seed: int) -> dict[str, object]:
    """Everything a saved run's numbers depend on; a saved run is reused only if these match."""
    settings = asdict(args)
    for name in ("methods", "seeds", "output_dir"):
        settings.pop(name)
    if not has_lps_layers(method):  # no temperature to anneal
        settings.pop("anneal_gumbel_tau")
        settings.pop("gumbel_tau_decays")
    return settings | {"method": method, "seed": seed}


def run_one(
    method: str, seed: int, args: BenchmarkArguments, data: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, object]:
    """Train and evaluate one method at one seed, or load the saved run with the same settings."""
    path = Path(args.output_dir) / "runs" / f"{run_name(method, args, seed)}.json"
    settings = run_settings(method, args, seed)
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["settings"] != settings:
            raise ValueError(
                f"{path} was run with other settings ({saved['settings']}); use another `--output_dir` or delete it."
            )
        print(f"{run_name(method, args, seed)}: reused {path}", flush=True)
        return saved["results"]
    model = build_model(args, method, seed)
    start = time.perf_counter()
    training = train(model, *data["train"], args, seed)
    train_seconds = time.perf_counter() - start
    test_images, test_labels = data["test"]
    results = evaluate_shifts(model, test_images, test_labels, args.max_offset)
    results |= evaluate_paper_protocol(model, test_images, seed) | training | {"train_seconds": train_seconds}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": settings, "results": results}, indent=2))
    print(
        f"{run_name(method, args, seed)}: {args.max_steps} steps in {train_seconds:.0f}s, accuracy "
        f"{results['accuracy']:.3f}, paper's circular consistency {results['paper_circular']:.3f}",
        flush=True,
    )
    return results


def markdown_table(rows: dict[str, dict[str, object]]) -> str:
    """One seed's results with our protocol as a markdown table, percentages with two decimals."""
    lines = [
        "| downsample | top-1 acc. | circular consistency | circular pairwise | standard consistency "
        "| standard pairwise |",
        "|---|---|---|---|---|---|",
    ]
    for method, row in rows.items():
        keys = ("accuracy", "circular_consistency", "circular_pairwise", "standard_consistency", "standard_pairwise")
        lines.append(f"| {method} | " + " | ".join(f"{100 * row[key]:.2f}" for key in keys) + " |")
    return "\n".join(lines)


SUMMARY_COLUMNS = {
    "accuracy": "top-1 %",
    "paper_circular": "paper's circular consistency %",
    "paper_standard": "paper's standard consistency %",
    "circular_consistency": "ours: circular consistency %",
    "standard_consistency": "ours: standard consistency %",
}


def mean_sd(values: list[float]) -> str:
    """`mean ± sd` in percent (sd with ddof 1; only the mean for one value)."""
    percent = 100 * np.asarray(values)
    if len(percent) == 1:
        return f"{percent[0]:.2f}"
    return f"{percent.mean():.2f} ± {percent.std(ddof=1):.2f}"


def summary_table(results: dict[str, list[dict[str, object]]]) -> str:
    """Mean ± sd over seeds per method (a row per method and temperature setting) as a markdown table."""
    lines = [
        "| downsample | seeds | " + " | ".join(SUMMARY_COLUMNS.values()) + " |",
        "|---|---|" + "---|" * len(SUMMARY_COLUMNS),
    ]
    for label, runs in results.items():
        cells = [mean_sd([run[key] for run in runs]) for key in SUMMARY_COLUMNS]
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def draw_plot(rows: dict[str, dict[str, object]], path: Path) -> Path:
    """Our protocol: consistency (% same class as unshifted) vs shift offset, one line per method; circular and
    standard panels (matplotlib, the `plots` extra)."""
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
            method: {"color": COLOURS.get(method.split(" ")[0]), "linewidth": 1.5 + 2 * (len(rows) - 1 - rank)}
            for rank, method in enumerate(rows)
        },
        columns=2,
    )


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, object]]]:
    """Train and evaluate every method at every seed (reusing saved runs); print and save the table and the plot.

    Returns:
        Per method label (`lps`, `aps`, ...; `lps (fixed tau)` for LPS models at a fixed temperature), one result
        dict per seed: `accuracy`, `paper_circular`, `paper_standard`, `<mode>_consistency`, `<mode>_pairwise` and
        the per-offset curve `<mode>_by_offset` for `<mode>` in `circular`, `standard` (fractions in [0, 1]),
        `final_loss`, `final_gumbel_tau` and `train_seconds`.
    """
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    data = {"train": load_split("train", args.train_samples), "test": load_split("test", args.eval_samples)}
    labels = {
        method: f"{method} (fixed tau)" if has_lps_layers(method) and not args.anneal_gumbel_tau else method
        for method in args.methods
    }
    results: dict[str, list[dict[str, object]]] = {label: [] for label in labels.values()}
    for seed in args.seeds:  # every method of a seed before the next seed: a stopped command leaves whole seeds
        for method in args.methods:
            results[labels[method]].append(run_one(method, seed, args, data))

    output_dir = Path(args.output_dir)
    mean_curves = {
        label: {
            f"{mode}_by_offset": np.mean([run[f"{mode}_by_offset"] for run in runs], axis=0).tolist()
            for mode in SHIFT_MODES
        }
        for label, runs in results.items()
    }
    plot_path = draw_plot(mean_curves, output_dir / "lps_shift.png")
    table = summary_table(results)
    (output_dir / "lps_shift.md").write_text(table + "\n")
    (output_dir / "lps_shift.json").write_text(json.dumps({"arguments": asdict(args), "results": results}, indent=2))
    print(table)
    print(f"plot: {plot_path}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
