"""Train a Score-SDE model (Pidstrigach, "Score-Based Generative Models Detect Manifolds", arXiv 2206.01018) on points
of a manifold embedded in R^d, with Accelerate.

The model learns the score of the Gaussian-smoothed data law by denoising score matching; the evaluation asks the
paper's questions of its samples: are they on the manifold (support), with the right weights (angles), and are they
new or copies of training points (memorisation). Usage (one or many processes, CPU or GPUs; a YAML file gives
defaults, flags override them)::

    accelerate launch training/train_score_sde.py --config training/configs/train_score_sde_circle.yaml
    # a finite training set of 16 points (where memorisation happens), written to output_dir/manifold_data
    python training/train_score_sde.py --manifold_num_train 16 --per_device_train_batch_size 16 \
        --output_dir runs/score_sde_16
    # points from files (parquet shards with a `point` column; `manifold.json` beside them for the evaluation)
    python training/train_score_sde.py --train_data path/to/manifold_points --output_dir runs/score_sde_files
    # images (any `hfvision.data.load_image_stream` source, e.g. `build_fashion_mnist` shards) with the U-Net preset
    accelerate launch training/train_score_sde.py --config training/configs/train_score_sde_fashion_mnist.yaml

What it does:
1. data: with `--manifold_num_train 0` (default) fresh points of the manifold every step, as a stream of seeded
   blocks (`hfvision.data.fresh_point_stream`: the infinite-data regime); with N > 0 a finite set written once by
   `hfvision.data.build_manifold_points` (parquet shards + `manifold.json`), or `--train_data` files; both read by
   `hfvision.data.load_point_stream` (invalid rows skipped and counted); with `--data_type images`, an image stream
   (`hfvision.training.prepare_stream` -> `hfvision.data.load_image_stream`: WebDataset tars, parquet shards, an
   image folder; corrupt images skipped and counted), each image made 8-bit (16-bit and float images by their real
   range, `to_8bit_images`), converted to the model's channels, resized to its `image_size` and scaled to [0, 1];
2. model from a preset (`--model_preset`, with overrides) or a checkpoint; AdamW, warmup + cosine, clipping;
3. each batch: noise levels (the config's `sigma_sampling`) and Gaussian noise drawn from a generator seeded by the
   batch's sample keys (`hfvision.training.batch_seed`), so resume is exact; the loss is DSM,
   E ||sigma s(x + sigma z, sigma) + z||^2;
4. the shared loop of `hfvision.training` (accumulation, mixed precision, checkpoints, resume, progress, trackers);
5. every `eval_steps` and at the end: `eval_num_samples` samples by the reverse SDE, their distance to the manifold
   and angle histogram (`manifold_distance` metric), and for a finite training set the memorisation against the
   chance level of held-out points (`memorization` metric) and the score-error energy against the training set's
   empirical score; the DSM loss on held-out points with fixed noise; for images: the DSM loss on held-out images
   (`--eval_data` / `--eval_split`, when present) and the pixel statistics of the samples against the data's;
6. at the end: `final/` holds the model saved with its sample-generation pipeline (`custom_pipelines`, remote code),
   `eval_results.json`, `samples.png` (scatter + distance histogram; for images a grid of samples) and the model
   card (`model_cards/score_sde.md`).
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from PIL import Image
from torch import nn
from transformers import pipeline

import hfvision  # noqa: F401  (registers Score-SDE with the Auto classes and the pipeline task)
from hfvision import training
from hfvision.data import (
    build_manifold_points,
    fresh_point_stream,
    load_image_stream,
    load_manifold,
    load_point_stream,
    load_points,
)
from hfvision.data.manifold_points import MANIFOLD_KINDS, make_manifold, manifold_spec
from hfvision.metrics import load_metric
from hfvision.models.pyramidclip.image_processing_pyramidclip import to_8bit_images
from hfvision.models.score_sde import (
    EmpiricalScoreModel,
    ScoreSdeConfig,
    ScoreSdeEulerMaruyamaScheduler,
    ScoreSdeFeatureExtractor,
    ScoreSdeModel,
    ScoreSdeVeAncestralScheduler,
    make_image_grid,
    plot_samples_on_manifold,
    sample_score_sde,
    score_error_energy,
)
from hfvision.training import StreamDataArguments, StreamTrainingArguments

logger = get_logger(__name__)

TASK = "unconditional-sample-generation"
DATA_TYPES = ("points", "images")


@dataclass
class ModelArguments:
    model_preset: str = field(
        default="score-sde-circle",
        metadata={"help": "Preset: score-sde-circle (EDM 4x256), score-sde-circle-ncsn, score-sde-tiny, ..."},
    )
    model_name_or_path: str | None = field(default=None, metadata={"help": "Checkpoint to continue training."})
    sde: str | None = field(default=None, metadata={"help": "ve, vp or ou; default: the preset's."})
    parameterization: str | None = field(default=None, metadata={"help": "ncsn or edm; default: the preset's."})
    sigma_min: float | None = field(default=None, metadata={"help": "Smallest VE noise level."})
    sigma_max: float | None = field(default=None, metadata={"help": "Largest VE noise level."})
    horizon: float | None = field(default=None, metadata={"help": "End time T of the forward SDE."})
    hidden_size: int | None = field(default=None, metadata={"help": "MLP width."})
    num_layers: int | None = field(default=None, metadata={"help": "Residual MLP blocks."})
    sigma_sampling: str | None = field(default=None, metadata={"help": "log_uniform or log_normal noise levels."})
    image_size: int | None = field(default=None, metadata={"help": "U-Net image size; default: the preset's."})
    num_channels: int | None = field(default=None, metadata={"help": "U-Net image channels (1 or 3)."})


@dataclass
class DataArguments(StreamDataArguments):
    data_type: str = field(
        default="points", metadata={"help": "points (manifold points) or images (`--train_data`, a U-Net preset)."}
    )
    manifold: str = field(default="circle", metadata={"help": f"Manifold of the generated data: {MANIFOLD_KINDS}."})
    manifold_ambient_dim: int = field(default=10, metadata={"help": "Ambient dimension d."})
    manifold_intrinsic_dim: int = field(default=2, metadata={"help": "k of a k-sphere (`--manifold sphere`)."})
    manifold_radius: float = field(default=1.0, metadata={"help": "Radius of the circle / sphere."})
    manifold_seed: int = field(default=0, metadata={"help": "Seed of the random isometry and of the points."})
    manifold_num_train: int = field(
        default=0, metadata={"help": "Training points N; 0: fresh points every step (the infinite-data regime)."}
    )
    manifold_num_eval: int = field(default=2048, metadata={"help": "Held-out points (chance level, held-out loss)."})
    fresh_block_size: int = field(default=4096, metadata={"help": "Points per seeded block of the fresh stream."})
    fresh_blocks_per_process: int = field(default=256, metadata={"help": "Blocks (shards) per process, fresh stream."})
    shards_per_process: int = field(default=1, metadata={"help": "Parquet shards per process for a finite set."})


@dataclass
class TrainingArguments(StreamTrainingArguments):
    """The shared loop's arguments with defaults for small score networks, plus the evaluation's."""

    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Gradient clipping (ID-diff: 1)."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warmup steps."})
    eval_num_samples: int = field(default=2000, metadata={"help": "Samples drawn at each evaluation."})
    eval_num_inference_steps: int = field(default=1000, metadata={"help": "Reverse-SDE steps of those samples."})
    eval_delta: float = field(default=0.02, metadata={"help": "Distance under which a sample copies a point."})
    eval_energy_points: int = field(default=256, metadata={"help": "Points per level of the error energy."})


def parse_args(argv: Sequence[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    model_args, data_args, training_args = training.parse_args((ModelArguments, DataArguments, TrainingArguments), argv)
    if data_args.data_type not in DATA_TYPES:
        raise ValueError(f"`--data_type` must be one of {DATA_TYPES}, got {data_args.data_type!r}")
    if data_args.data_type == "images" and not data_args.train_data:
        raise ValueError("`--data_type images` needs `--train_data` (an image stream source)")
    if data_args.data_type == "images" and data_args.manifold_num_train:
        raise ValueError("`--manifold_num_train` is for points; images come from `--train_data`")
    if data_args.manifold not in MANIFOLD_KINDS:
        raise ValueError(f"`--manifold` must be one of {MANIFOLD_KINDS}, got {data_args.manifold!r}")
    if data_args.manifold_num_train < 0:
        raise ValueError(f"`--manifold_num_train` must be >= 0, got {data_args.manifold_num_train}")
    if data_args.train_data and data_args.manifold_num_train:
        raise ValueError("pass either `--train_data` or `--manifold_num_train N`, not both")
    if training_args.eval_num_samples < 1 or training_args.eval_num_inference_steps < 2:
        raise ValueError("`--eval_num_samples` must be >= 1 and `--eval_num_inference_steps` >= 2")
    return model_args, data_args, training_args


def build_model(model_args: ModelArguments, data_dim: int | None = None) -> ScoreSdeModel:
    """A fresh model from the preset (with overrides, and the points' dimension `data_dim`; None for images) or the
    checkpoint's."""
    if model_args.model_name_or_path:
        return ScoreSdeModel.from_pretrained(model_args.model_name_or_path)
    names = ("sde", "parameterization", "sigma_min", "sigma_max", "horizon", "hidden_size", "num_layers")
    overrides = {name: getattr(model_args, name) for name in (*names, "sigma_sampling", "image_size", "num_channels")}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    if data_dim is not None:
        overrides["data_dim"] = data_dim
    return ScoreSdeModel(ScoreSdeConfig.from_preset(model_args.model_preset, **overrides))


class PointBatchCollator:
    """collate_fn of the training DataLoader: stacks points and draws each sample's noise level and noise from a
    generator seeded by the batch's keys, so a resumed run replays exactly the same noise."""

    def __init__(self, sample_sigmas: Callable[[int, torch.Generator], torch.Tensor], seed: int) -> None:
        self.sample_sigmas = sample_sigmas
        self.seed = seed
        self.epoch = 0

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [sample["__key__"] for sample in samples]
        generator = torch.Generator().manual_seed(training.batch_seed(self.seed, self.epoch, keys))
        points = torch.tensor([sample["point"] for sample in samples], dtype=torch.float32)  # (B, d)
        sigma = self.sample_sigmas(len(samples), generator).to(torch.float32)  # (B,)
        noise = torch.randn(points.shape, generator=generator)
        return {"sample": points, "sigma": sigma, "noise": noise, "keys": keys}


def image_tensor(image: Any, image_size: int, num_channels: int) -> torch.Tensor:
    """One stream image (PIL; 8-, 16-bit or float) as a tensor `(num_channels, image_size, image_size)` in [0, 1]."""
    image = to_8bit_images(image, "image").convert("L" if num_channels == 1 else "RGB")
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).float().div(255)  # (S, S) or (S, S, 3)
    return pixels[None] if num_channels == 1 else pixels.permute(2, 0, 1)


class ImageBatchCollator:
    """collate_fn of an image stream: images -> `sample` `(B, C, S, S)` in [0, 1], with each sample's noise level and
    noise drawn from a generator seeded by the batch's keys (exact resume), as `PointBatchCollator` does."""

    def __init__(
        self,
        sample_sigmas: Callable[[int, torch.Generator], torch.Tensor],
        image_size: int,
        num_channels: int,
        seed: int,
    ) -> None:
        self.sample_sigmas = sample_sigmas
        self.image_size, self.num_channels = image_size, num_channels
        self.seed = seed
        self.epoch = 0

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [sample["__key__"] for sample in samples]
        generator = torch.Generator().manual_seed(training.batch_seed(self.seed, self.epoch, keys))
        images = torch.stack([image_tensor(s["image"], self.image_size, self.num_channels) for s in samples])
        sigma = self.sample_sigmas(len(samples), generator).to(torch.float32)  # (B,)
        noise = torch.randn(images.shape, generator=generator)
        return {"sample": images, "sigma": sigma, "noise": noise, "keys": keys}


def load_eval_images(source: str, split: str, count: int, image_size: int, num_channels: int) -> torch.Tensor | None:
    """Up to `count` images of `source`'s `split` as `(n, C, S, S)` in [0, 1]; None when the split is missing."""
    try:
        stream = load_image_stream(source, split=split, shuffle_buffer=1, seed=0)
    except (FileNotFoundError, ValueError):
        return None
    images = [image_tensor(sample["image"], image_size, num_channels) for sample in itertools.islice(stream, count)]
    return torch.stack(images) if images else None


@torch.no_grad()
def evaluate_images(
    model: ScoreSdeModel,
    eval_images: torch.Tensor | None,
    args: TrainingArguments,
    keep: dict[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Samples of the reverse SDE from an image model: their pixel statistics (and, with held-out images, the data's
    and the held-out DSM loss with fixed noise levels and noise)."""
    was_training = model.training
    model.eval()
    device = model.device
    generator = torch.Generator().manual_seed(0)
    scheduler = sampling_scheduler(model.config, args.eval_num_inference_steps)
    samples = sample_score_sde(model, scheduler, args.eval_num_samples, generator=generator, device=device).samples
    samples = samples.float().cpu()  # (n, C, S, S)
    if keep is not None:
        keep["samples"] = samples
    metrics = {
        "sample_pixel_mean": float(samples.mean()),
        "sample_pixel_std": float(samples.std()),
        "sample_fraction_in_range": float(((samples >= -0.05) & (samples <= 1.05)).float().mean()),
    }
    if eval_images is not None:
        metrics["data_pixel_mean"], metrics["data_pixel_std"] = float(eval_images.mean()), float(eval_images.std())
        loss_generator = torch.Generator().manual_seed(1)
        sigma = model.sample_training_sigmas(len(eval_images), loss_generator).to(device=device, dtype=torch.float32)
        noise = torch.randn(eval_images.shape, generator=loss_generator).to(device)
        held_out = eval_images.to(device)
        metrics["dsm_loss"] = float(model(held_out, sigma=sigma, noise=noise, return_loss=True).loss)
    model.train(was_training)
    return metrics


@dataclass
class ManifoldData:
    """Where the training points come from, the manifold, and (finite set) the points themselves."""

    train_source: Any  # a folder / files, or a fresh-point IterableDataset
    manifold_spec: dict[str, Any]
    training_points: torch.Tensor | None  # (N, d) for a finite set
    eval_points: torch.Tensor  # (m, d) held-out draws of the data law


def prepare_data(data_args: DataArguments, output_dir: Path, accelerator: Accelerator, seed: int) -> ManifoldData:
    """Writes a finite set once (main process first), or makes the fresh stream; reads what evaluation needs."""
    world_size = accelerator.num_processes
    if data_args.train_data:
        folder = Path(data_args.train_data)
        manifold = load_manifold(folder)
        training_points = load_points(folder, data_args.train_split)
        eval_points = load_points(data_args.eval_data or folder, data_args.eval_split)
        return ManifoldData(str(folder), manifold_spec(manifold), training_points, eval_points)
    manifold = make_manifold(
        data_args.manifold,
        data_args.manifold_ambient_dim,
        data_args.manifold_intrinsic_dim,
        data_args.manifold_radius,
        seed=data_args.manifold_seed,
    )
    eval_generator = torch.Generator().manual_seed(data_args.manifold_seed + 1)
    if data_args.manifold_num_train == 0:
        stream = fresh_point_stream(
            manifold,
            num_blocks=world_size * data_args.fresh_blocks_per_process,
            block_size=data_args.fresh_block_size,
            seed=seed,
        )
        eval_points = manifold.sample(data_args.manifold_num_eval, eval_generator, dtype=torch.float64)
        return ManifoldData(stream, manifold_spec(manifold), None, eval_points)
    data_dir = output_dir / "manifold_data"
    with accelerator.main_process_first():
        if accelerator.is_main_process and not (data_dir / "manifold.json").is_file():
            build_manifold_points(
                data_dir,
                manifold,
                data_args.manifold_num_train,
                data_args.manifold_num_eval,
                num_shards=min(world_size * data_args.shards_per_process, data_args.manifold_num_train),
                seed=data_args.manifold_seed,
                overwrite=True,
            )
    training_points = load_points(data_dir, "train")
    return ManifoldData(str(data_dir), manifold_spec(manifold), training_points, load_points(data_dir, "eval"))


def sampling_scheduler(config: ScoreSdeConfig, num_inference_steps: int):
    """The VE ancestral sampler (diffusers' `ScoreSdeVeScheduler` step) for `ve`, Euler-Maruyama otherwise."""
    if config.sde == "ve":
        return ScoreSdeVeAncestralScheduler.from_config(config, num_inference_steps)
    return ScoreSdeEulerMaruyamaScheduler.from_config(config, num_inference_steps)


@torch.no_grad()
def evaluate_samples(
    model: ScoreSdeModel, data: ManifoldData, args: TrainingArguments, keep: dict[str, torch.Tensor] | None = None
) -> dict[str, float]:
    """Samples of the reverse SDE scored against the manifold (and, for a finite set, against its points)."""
    was_training = model.training
    model.eval()
    device = model.device
    generator = torch.Generator().manual_seed(0)  # the same prior draws and noise at every evaluation
    scheduler = sampling_scheduler(model.config, args.eval_num_inference_steps)
    samples = sample_score_sde(model, scheduler, args.eval_num_samples, generator=generator, device=device).samples
    samples = samples.double().cpu()
    if keep is not None:
        keep["samples"] = samples
    spec = data.manifold_spec
    metrics = load_metric("manifold_distance").compute(
        predictions=samples.numpy(), isometry=spec["isometry"], thresholds=(0.01, 0.03), **spec["metric_kwargs"]
    )
    # held-out DSM loss with fixed noise levels and noise
    held_out = data.eval_points[: args.eval_energy_points * 4].to(device=device, dtype=torch.float32)
    loss_generator = torch.Generator().manual_seed(1)
    sigma = model.sample_training_sigmas(len(held_out), loss_generator).to(device=device, dtype=torch.float32)
    noise = torch.randn(held_out.shape, generator=loss_generator).to(device)
    metrics["dsm_loss"] = float(model(held_out, sigma=sigma, noise=noise, return_loss=True).loss)
    if data.training_points is not None:
        training_points = data.training_points.numpy()
        metrics.update(
            load_metric("memorization").compute(
                predictions=samples.numpy(),
                training_points=training_points,
                delta=args.eval_delta,
                fresh_points=data.eval_points.numpy(),
            )
        )
        # Girsanov energy of the error against the empirical score, from sigma_max down to the model's sigma_min
        empirical = EmpiricalScoreModel.from_training_points(data.training_points.float(), model.config).to(device)
        levels = torch.logspace(
            torch.log10(torch.tensor(model.config.sigma_max)), torch.log10(torch.tensor(model.config.sigma_min)), 16
        )
        draws = data.training_points[
            torch.randint(0, len(data.training_points), (args.eval_energy_points,), generator=generator)
        ]
        energy = score_error_energy(model, empirical, draws.float().to(device), levels, generator=generator)
        metrics["error_energy_vs_empirical"] = float(energy.energy[-1])
    model.train(was_training)
    return metrics


def train_on_images(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    accelerator: Accelerator,
    run_config: dict[str, Any],
    resume_checkpoint: Path | None,
    output_dir: Path,
) -> dict[str, Any]:
    """`main` for an image stream (`--data_type images`): a U-Net score model, the shared image stream, a grid of
    samples at the end."""
    model = build_model(model_args)
    config = model.config
    if config.backbone != "unet":
        raise ValueError(f"`--data_type images` needs a U-Net preset or checkpoint, got backbone {config.backbone!r}")
    logger.info("%.2fM parameters", sum(parameter.numel() for parameter in model.parameters()) / 1e6)
    optimizer, lr_scheduler = training.build_optimizer(model, training_args)
    collator = ImageBatchCollator(
        model.sample_training_sigmas, config.image_size, config.num_channels, training_args.seed
    )
    model, optimizer, train_stream, global_step = training.prepare_stream(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        data_args.train_data,
        collator,
        data_args,
        training_args.seed,
        resume_checkpoint,
    )
    eval_images = None
    if accelerator.is_main_process:
        count = data_args.max_eval_samples or 256
        source = data_args.eval_data or data_args.train_data
        eval_images = load_eval_images(source, data_args.eval_split, count, config.image_size, config.num_channels)
    last_samples: dict[str, torch.Tensor] = {}

    def evaluate(unwrapped: nn.Module) -> dict[str, float]:
        return evaluate_images(unwrapped, eval_images, training_args, keep=last_samples)

    accelerator.init_trackers("train_score_sde", config={k: v for k, v in run_config.items() if v is not None})
    metrics = training.train(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        train_stream,
        training_args,
        global_step,
        forward=lambda model, batch: model(**batch, return_loss=True),
        evaluate=evaluate if accelerator.is_main_process else None,
        description="train score_sde (images)",
        run_arguments=run_config,
    )
    unwrapped = accelerator.unwrap_model(model)
    data_dim = int(np.prod(config.data_shape))  # the pipeline only uses it on points; identity for images in [0, 1]
    feature_extractor = ScoreSdeFeatureExtractor(data_dim=data_dim)
    generator_pipeline = pipeline(TASK, model=unwrapped, feature_extractor=feature_extractor, device=unwrapped.device)

    def card_pictures(final_dir: Path) -> None:
        if "samples" in last_samples:
            make_image_grid(last_samples["samples"][:64]).save(final_dir / "samples.png")

    training.save_final(
        accelerator, model, generator_pipeline, output_dir, metrics, run_config, card_pictures=card_pictures
    )
    training.finish(accelerator)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the training; returns the final metrics (eval metrics on the main process)."""
    model_args, data_args, training_args = parse_args(argv)
    output_dir = Path(training_args.output_dir)
    accelerator = training.make_accelerator(training_args)
    run_config = training.run_config(model_args, data_args, training_args)
    resume_checkpoint = training.prepare_output_dir(accelerator, training_args, run_config)
    if data_args.data_type == "images":
        return train_on_images(
            model_args, data_args, training_args, accelerator, run_config, resume_checkpoint, output_dir
        )
    data = prepare_data(data_args, output_dir, accelerator, training_args.seed)
    world_size, batch_size = accelerator.num_processes, data_args.per_device_train_batch_size
    if data.training_points is not None and len(data.training_points) < batch_size * world_size:
        raise ValueError(
            f"the training set has {len(data.training_points)} points, fewer than one batch on every process "
            f"(`--per_device_train_batch_size` {batch_size} x {world_size}); lower the batch size"
        )

    model = build_model(model_args, data_dim=data.manifold_spec["ambient_dim"])
    logger.info("%.2fM parameters", sum(parameter.numel() for parameter in model.parameters()) / 1e6)
    optimizer, lr_scheduler = training.build_optimizer(model, training_args)

    collator = PointBatchCollator(model.sample_training_sigmas, training_args.seed)
    model, optimizer, train_stream, global_step = training.prepare_stream(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        data.train_source,
        collator,
        data_args,
        training_args.seed,
        resume_checkpoint,
        load_stream=functools.partial(load_point_stream, dim=model.config.data_dim),
    )

    last_samples: dict[str, torch.Tensor] = {}

    def evaluate(unwrapped: nn.Module) -> dict[str, float]:
        return evaluate_samples(unwrapped, data, training_args, keep=last_samples)

    accelerator.init_trackers("train_score_sde", config={k: v for k, v in run_config.items() if v is not None})
    metrics = training.train(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        train_stream,
        training_args,
        global_step,
        forward=lambda model, batch: model(**batch, return_loss=True),
        evaluate=evaluate if accelerator.is_main_process else None,
        description="train score_sde",
        run_arguments=run_config,
    )
    # The pipeline takes the processor's place: its save_pretrained writes the model again with the pipeline's code
    # and `custom_pipelines`, and the feature extractor (`preprocessor_config.json`, which `hfvision publish` needs),
    # so the final folder opens with `pipeline(model=path, trust_remote_code=True)`.
    unwrapped = accelerator.unwrap_model(model)
    feature_extractor = ScoreSdeFeatureExtractor(data_dim=unwrapped.config.data_dim)  # identity: unit-scale data
    generator_pipeline = pipeline(TASK, model=unwrapped, feature_extractor=feature_extractor, device=unwrapped.device)

    def card_pictures(final_dir: Path) -> None:
        manifold = load_manifold(data.manifold_spec)
        if "samples" in last_samples:
            samples = last_samples["samples"]
            series = {"samples": samples}
            distances = {"samples": manifold.distance(samples)}
            if data.training_points is not None and len(data.training_points) <= 256:
                series["training points"] = data.training_points
                distances["training points"] = manifold.distance(data.training_points)
            title = f"{data_args.manifold} in R^{manifold.ambient_dim}, step {metrics['global_step']}"
            plot_samples_on_manifold(
                series, manifold.isometry, distances, radius=data_args.manifold_radius, title=title
            ).save(final_dir / "samples.png")
        (final_dir / "manifold.json").write_text(json.dumps(data.manifold_spec) + "\n")

    training.save_final(
        accelerator, model, generator_pipeline, output_dir, metrics, run_config, card_pictures=card_pictures
    )
    training.finish(accelerator)
    return metrics


if __name__ == "__main__":
    main()
    training.exit_cleanly()
