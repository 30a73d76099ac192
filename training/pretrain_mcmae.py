"""Pretrain MCMAE (ConvMAE; Gao et al., NeurIPS 2022, arXiv 2205.03892) on an image stream with Accelerate.

Usage (one or many processes, CPU or GPUs; a YAML file gives defaults that command-line flags override)::

    accelerate launch training/pretrain_mcmae.py --config training/configs/pretrain_mcmae_fashion_mnist.yaml
    python training/pretrain_mcmae.py --train_data path/to/imagefolder_or_shards --model_preset mcmae-base \
        --output_dir runs/mcmae-base
    # the paper's baseline, transformers' ViTMAEForPreTraining of comparable size, same data and budget:
    python training/pretrain_mcmae.py --config training/configs/pretrain_mcmae_fashion_mnist.yaml --architecture vitmae

What it does:
1. data: `--fashion_mnist` first writes Fashion-MNIST parquet shards into `output_dir/fashion_mnist_data` (Debian
   `dataset-fashion-mnist`); otherwise `--train_data` / `--eval_data` name an image folder, tar/parquet globs or a Hub
   id, read by `hfvision.data.load_image_stream` (captions not needed; corrupt images are skipped and counted);
2. model from a preset (`--model_preset`) or a checkpoint (`--model_name_or_path`); `--architecture vitmae` trains
   `matching_vitmae_config` of the preset instead (the paper's MAE baseline);
3. augmentation, as the official recipe: random resized crop (scale `min_crop_scale`..1, aspect 3/4..4/3, bicubic)
   and horizontal flip, seeded per batch by the sample keys (`hfvision.training.batch_seed`) so a resumed run
   replays the same crops;
4. AdamW (betas 0.9/0.95, no decay on biases/norms), warmup + cosine, accumulation, mixed precision, checkpoints with
   exact resume, progress bar, trackers: the shared loop of `hfvision.training`;
5. every `eval_steps` and at the end: the masked-patch reconstruction loss on the eval split with a fixed mask per
   image (same masks at every evaluation, so the numbers compare across steps and runs);
6. at the end: `save_pretrained` of model + image processor into `output_dir/final` (safetensors) with
   `eval_results.json`, and for MCMAE a reconstruction grid of eval images, `output_dir/final/reconstructions.png`
   (columns original / masked / reconstruction / visible + predicted, titled with matplotlib when installed).

The pretrained folder opens with `AutoModelForPreTraining`, and for fine-tuning with `AutoModelForImageClassification`
(`training/finetune_image_classification.py`; a ViTMAE checkpoint fine-tunes as ViT).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from PIL import Image
from torch import nn
from transformers import ViTImageProcessor, ViTMAEForPreTraining
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

import hfvision  # noqa: F401  (registers MCMAE with the Auto classes)
from hfvision import training
from hfvision.data import load_image_stream
from hfvision.data.fashion_mnist import build_fashion_mnist
from hfvision.models.mcmae import McMaeConfig, McMaeForPreTraining, McMaeImageProcessor, matching_vitmae_config
from hfvision.plotting import plot_image_grid
from hfvision.training import StreamDataArguments, StreamTrainingArguments

logger = get_logger(__name__)

ARCHITECTURES = ("mcmae", "vitmae")
GRID_IMAGES = 8


@dataclass
class ModelArguments:
    model_preset: str = field(
        default="mcmae-tiny", metadata={"help": "Preset to train from scratch: mcmae-tiny, mcmae-small, mcmae-base."}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint (model + image processor) to continue pretraining from."}
    )
    architecture: str = field(
        default="mcmae",
        metadata={"help": "mcmae, or vitmae: transformers' ViTMAE of comparable size (the paper's MAE baseline)."},
    )
    image_size: int | None = field(default=None, metadata={"help": "Input resolution; default: the preset's."})
    mask_ratio: float | None = field(default=None, metadata={"help": "Masked fraction; default: the preset's 0.75."})
    norm_pix_loss: bool | None = field(
        default=None, metadata={"help": "Per-patch normalised targets; default: the preset's (True)."}
    )


@dataclass
class DataArguments(StreamDataArguments):
    fashion_mnist: bool = field(
        default=False, metadata={"help": "Write Fashion-MNIST shards to output_dir/fashion_mnist_data, train on them."}
    )
    fashion_mnist_num_train: int | None = field(default=None, metadata={"help": "Training images (None: 60,000)."})
    fashion_mnist_num_eval: int = field(default=1000, metadata={"help": "Eval images from the test split."})
    shards_per_process: int = field(default=2, metadata={"help": "Fashion-MNIST shards per training process."})
    min_crop_scale: float = field(default=0.2, metadata={"help": "Smallest area fraction of the random crop."})
    horizontal_flip: bool = field(default=True, metadata={"help": "Random horizontal flips."})


@dataclass
class PretrainingArguments(StreamTrainingArguments):
    """The shared loop's arguments with MAE's optimiser defaults (the official ConvMAE pretraining recipe)."""

    learning_rate: float = field(default=1.5e-4, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (not on biases and norms)."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2."})


def parse_args(argv: Sequence[str] | None = None) -> tuple[ModelArguments, DataArguments, PretrainingArguments]:
    """Parses `--config file.yaml` (optional) and the flags of the three argument dataclasses."""
    model_args, data_args, training_args = training.parse_args(
        (ModelArguments, DataArguments, PretrainingArguments), argv
    )
    if model_args.architecture not in ARCHITECTURES:
        raise ValueError(f"`architecture` must be one of {ARCHITECTURES}, got {model_args.architecture!r}")
    if data_args.fashion_mnist == bool(data_args.train_data):
        raise ValueError("pass either `--fashion_mnist` or `--train_data` (an image folder, tar/parquet glob, Hub id)")
    if not 0.0 < data_args.min_crop_scale <= 1.0:
        raise ValueError(f"`min_crop_scale` must be in (0, 1], got {data_args.min_crop_scale}")
    return model_args, data_args, training_args


def prepare_fashion_mnist(data_args: DataArguments, output_dir: Path, accelerator: Accelerator) -> Path:
    """Writes the Fashion-MNIST shards once (main process first; the others then find them); returns their folder."""
    data_dir = output_dir / "fashion_mnist_data"
    world_size = accelerator.num_processes
    with accelerator.main_process_first():
        if accelerator.is_main_process and not (data_dir / "class_names.json").is_file():
            build_fashion_mnist(
                data_dir,
                num_train=data_args.fashion_mnist_num_train,
                num_eval=data_args.fashion_mnist_num_eval,
                num_shards=world_size * data_args.shards_per_process,
                world_size=world_size,
                overwrite=True,
            )
    return data_dir


def build_model_and_processor(model_args: ModelArguments) -> tuple[nn.Module, Any]:
    """A fresh MCMAE (or matching ViTMAE) with a square image processor of its input size, or the checkpoint's."""
    if model_args.model_name_or_path:
        if model_args.architecture == "vitmae":
            model = ViTMAEForPreTraining.from_pretrained(model_args.model_name_or_path)
            return model, ViTImageProcessor.from_pretrained(model_args.model_name_or_path)
        model = McMaeForPreTraining.from_pretrained(model_args.model_name_or_path)
        return model, McMaeImageProcessor.from_pretrained(model_args.model_name_or_path)
    overrides = {
        name: value
        for name, value in (
            ("image_size", model_args.image_size),
            ("mask_ratio", model_args.mask_ratio),
            ("norm_pix_loss", model_args.norm_pix_loss),
        )
        if value is not None
    }
    config = McMaeConfig.from_preset(model_args.model_preset, **overrides)
    size = config.image_size
    if model_args.architecture == "vitmae":
        # Same normalisation and input size as MCMAE's processor, so both see identical pixels.
        processor = ViTImageProcessor(
            size={"height": size, "width": size}, image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD
        )
        return ViTMAEForPreTraining(matching_vitmae_config(config)), processor
    processor = McMaeImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return McMaeForPreTraining(config), processor


def random_resized_crop_boxes(
    sizes: Sequence[tuple[int, int]], min_scale: float, generator: torch.Generator
) -> list[tuple[float, float, float, float]]:
    """One crop box `(x0, y0, x1, y1)` per image of `(width, height)`: area fraction in [min_scale, 1], aspect ratio
    log-uniform in [3/4, 4/3], clamped to the image (vectorised over the batch; one draw per image, no retries)."""
    count = len(sizes)
    widths = torch.tensor([size[0] for size in sizes], dtype=torch.float64)
    heights = torch.tensor([size[1] for size in sizes], dtype=torch.float64)
    scale = min_scale + (1.0 - min_scale) * torch.rand(count, generator=generator, dtype=torch.float64)
    log_ratio = torch.empty(count, dtype=torch.float64).uniform_(
        torch.log(torch.tensor(3 / 4)).item(), torch.log(torch.tensor(4 / 3)).item(), generator=generator
    )
    area = scale * widths * heights
    crop_w = torch.sqrt(area * log_ratio.exp()).clamp(max=widths)
    crop_h = torch.sqrt(area / log_ratio.exp()).clamp(max=heights)
    x0 = torch.rand(count, generator=generator, dtype=torch.float64) * (widths - crop_w)
    y0 = torch.rand(count, generator=generator, dtype=torch.float64) * (heights - crop_h)
    return list(zip(x0.tolist(), y0.tolist(), (x0 + crop_w).tolist(), (y0 + crop_h).tolist(), strict=True))


def normalize(image_processor: Any, images: list[Image.Image]) -> torch.Tensor:
    """`pixel_values` of images already at the model's input size: the processor's rescale + normalise only."""
    return image_processor(images, do_resize=False, return_tensors="pt").pixel_values


class MaskedImageCollator:
    """collate_fn of the training DataLoader: random resized crop + flip, then the image processor's normalisation.

    The augmentation is seeded by `batch_seed(seed, epoch, keys)` (`epoch` set by `TrainStream` each pass).
    """

    def __init__(self, image_processor: Any, image_size: int, min_scale: float, flip: bool, seed: int) -> None:
        self.image_processor = image_processor
        self.image_size = image_size
        self.min_scale = min_scale
        self.flip = flip
        self.seed = seed
        self.epoch = 0

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [sample["__key__"] for sample in samples]
        generator = torch.Generator().manual_seed(training.batch_seed(self.seed, self.epoch, keys))
        images = [sample["image"] for sample in samples]
        boxes = random_resized_crop_boxes([image.size for image in images], self.min_scale, generator)
        flips = (torch.rand(len(images), generator=generator) < 0.5).tolist() if self.flip else [False] * len(images)
        size = (self.image_size, self.image_size)
        crops = []
        for image, box, flip in zip(images, boxes, flips, strict=True):
            crop = image.resize(size, Image.Resampling.BICUBIC, box=box)
            crops.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else crop)
        return {"pixel_values": normalize(self.image_processor, crops), "keys": keys}


def eval_batches(
    data_args: DataArguments, eval_source: str, image_processor: Any, image_size: int
) -> list[torch.Tensor] | None:
    """The eval split resized to the model's input (no crop), as a list of `pixel_values` batches, or None."""
    try:
        stream = load_image_stream(eval_source, split=data_args.eval_split)
    except (ValueError, FileNotFoundError) as error:
        logger.warning("no evaluation: %s", error)
        return None
    if data_args.max_eval_samples:
        stream = stream.take(data_args.max_eval_samples)
    batches, images = [], []
    size = (image_size, image_size)
    for sample in stream:
        images.append(sample["image"].resize(size, Image.Resampling.BICUBIC))
        if len(images) == data_args.per_device_eval_batch_size:
            batches.append(normalize(image_processor, images))
            images = []
    if images:
        batches.append(normalize(image_processor, images))
    return batches or None


def fixed_noise(batch: torch.Tensor, num_patches: int, index: int) -> torch.Tensor:
    """Masking scores for eval batch `index`: the same masks at every evaluation and for both architectures."""
    generator = torch.Generator().manual_seed(10_000 + index)
    return torch.rand(batch.shape[0], num_patches, generator=generator)


@torch.no_grad()
def evaluate_reconstruction(model: nn.Module, batches: list[torch.Tensor], device: torch.device) -> dict[str, float]:
    """Mean masked-patch loss over the eval batches with fixed masks (weighted by batch size)."""
    was_training = model.training
    model.eval()
    num_patches = model.config.num_patches if isinstance(model, McMaeForPreTraining) else None
    total, count = 0.0, 0
    for index, pixel_values in enumerate(batches):
        if num_patches is None:  # ViTMAE: (image_size / patch_size) ** 2 tokens
            num_patches = (model.config.image_size // model.config.patch_size) ** 2
        noise = fixed_noise(pixel_values, num_patches, index).to(device)
        loss = model(pixel_values=pixel_values.to(device), noise=noise).loss
        total += float(loss) * pixel_values.shape[0]
        count += pixel_values.shape[0]
    model.train(was_training)
    return {"reconstruction_loss": total / max(count, 1), "num_samples": float(count)}


@torch.no_grad()
def save_reconstruction_grid(
    model: McMaeForPreTraining, image_processor: McMaeImageProcessor, pixel_values: torch.Tensor, path: Path
) -> None:
    """original / masked / reconstruction / visible + predicted for the first eval images (the fixed eval masks)."""
    was_training = model.training
    model.eval()
    pixel_values = pixel_values[:GRID_IMAGES].to(model.device)
    noise = fixed_noise(pixel_values, model.config.num_patches, 0)[: pixel_values.shape[0]].to(model.device)
    columns = [column.float().cpu() for column in (pixel_values, *model.reconstruct(pixel_values, noise=noise))]
    titles = ["original", f"masked ({model.config.mask_ratio:.0%})", "reconstruction", "visible + predicted"]
    try:  # titled columns with matplotlib (the `plots` extra), else the bare grid
        cells = [image_processor.to_pil_images(column) for column in columns]  # [column][image]
        plot_image_grid(list(zip(*cells, strict=True)), path, column_titles=titles)
    except ImportError:
        image_processor.reconstruction_grid(columns).save(path)
    model.train(was_training)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the pretraining; returns the final metrics (eval metrics on the main process)."""
    model_args, data_args, training_args = parse_args(argv)
    output_dir = Path(training_args.output_dir)
    accelerator = training.make_accelerator(training_args)
    run_config = training.run_config(model_args, data_args, training_args)
    # Refuses to resume another run's checkpoint or to mix a fresh run into one (--overwrite_output_dir starts over).
    resume_checkpoint = training.prepare_output_dir(accelerator, training_args, run_config)
    if data_args.fashion_mnist:
        train_source = eval_source = str(prepare_fashion_mnist(data_args, output_dir, accelerator))
    else:
        train_source, eval_source = data_args.train_data, data_args.eval_data or data_args.train_data

    model, image_processor = build_model_and_processor(model_args)
    image_size = model.config.image_size
    logger.info("%s: %.2fM parameters", type(model).__name__, sum(p.numel() for p in model.parameters()) / 1e6)
    optimizer, lr_scheduler = training.build_optimizer(model, training_args)

    collator = MaskedImageCollator(
        image_processor, image_size, data_args.min_crop_scale, data_args.horizontal_flip, training_args.seed
    )
    model, optimizer, stream, global_step = training.prepare_stream(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        train_source,
        collator,
        data_args,
        training_args.seed,
        resume_checkpoint,
    )

    batches = None
    if accelerator.is_main_process:
        batches = eval_batches(data_args, eval_source, image_processor, image_size)

    def evaluate(unwrapped: nn.Module) -> dict[str, float]:
        return evaluate_reconstruction(unwrapped, batches, accelerator.device)

    accelerator.init_trackers("pretrain_mcmae", config={k: v for k, v in run_config.items() if v is not None})
    metrics = training.train(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        stream,
        training_args,
        global_step,
        forward=lambda model, batch: model(**batch),
        evaluate=evaluate if batches else None,
        description=f"pretrain {model_args.architecture}",
        run_arguments=run_config,
    )

    def card_pictures(final_dir: Path) -> None:
        unwrapped = accelerator.unwrap_model(model)
        if batches and isinstance(unwrapped, McMaeForPreTraining):
            save_reconstruction_grid(unwrapped, image_processor, batches[0], final_dir / "reconstructions.png")

    training.save_final(
        accelerator, model, image_processor, output_dir, metrics, run_config, card_pictures=card_pictures
    )
    training.finish(accelerator)
    return metrics


if __name__ == "__main__":
    main()
    training.exit_cleanly()
