"""Train Trap and Replace (Wang et al., NeurIPS 2022, arXiv 2210.06428) on a backdoored image set with Accelerate.

One stage per run, each on the shared stream loop of `hfvision.training` (accelerate, exact resume, progress, eval)::

    # stage 1, "bait and trap": stem + trap head + decoder on the poisoned training split
    accelerate launch training/train_trap_replace.py --config training/configs/train_trap_replace_fashion_mnist.yaml
    # stage 2, "remove and patch": new head on the clean holdout, stem frozen
    accelerate launch training/train_trap_replace.py --config training/configs/train_trap_replace_fashion_mnist.yaml \
        --stage replace --model_name_or_path runs/trap_replace/trap/final --output_dir runs/trap_replace/replace
    # controls: normal training (--reconstruction_weight 0 --tv_weight 0, stage trap), and fine-tuning the whole
    # undefended model on the holdout (--stage finetune --model_name_or_path <normal run>/final)

What it does:
1. data (`--backdoor_data`, built there if missing): Fashion-MNIST from Debian's idx files zero-padded to 32x32
   (`--dataset fashion_mnist`) or seeded synthetic class images (`--dataset synthetic`, for tests), attacked with
   `hfvision.data.BackdoorAttack` (`--trigger`, `--target_label`, `--poison_ratio`, `--holdout_ratio`,
   `--selection`): the training streams `train` (poisoned) and `holdout` (clean, the last images) as lossless PNG
   WebDataset shards (`hfvision.data.write_shards`), the test sets `eval` (clean) and `triggered` (every non-target
   test image stamped) as parquet, plus `attack.json` with the poisoned rows;
2. `--stage trap`: the model from `--model_preset` (stage-1 loss CE + lambda MSE + mu TV) on `train`, with the
   official RandomCrop(32, padding 4) + horizontal flip; `--stage replace`: `--model_name_or_path`'s stem,
   `replace_head()`, trained on `holdout` with CutMix (beta 1, always on) and label smoothing 0.1 (the official
   recipe); `--stage finetune`: the whole model on `holdout` with the same recipe (a baseline defence);
3. every `eval_steps` and at the end: clean accuracy on `eval` and attack success rate on `triggered`, through the
   `zero_shot_accuracy` (top-1) and `attack_success_rate` evaluate modules. Nothing is selected on them: the final
   model is the last step's (the official stage 2 kept the best *test* accuracy);
4. at the end: `save_pretrained` of model + processor into `output_dir/final` with `eval_results.json` and the model
   card (`model_cards/trap_replace.md`) as `README.md`.

Deviations from the official recipe: AdamW (decoupled weight decay, the shared loop's optimiser) instead of Adam with
L2 weight decay; steps instead of epochs (the YAML gives the epoch arithmetic); a `warmup_steps` option (0 by default).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from PIL import Image
from torch import nn

import hfvision  # noqa: F401  (registers Trap and Replace with the Auto classes)
from hfvision import training
from hfvision.data import BackdoorAttack, write_shards
from hfvision.data.backdoor import TRIGGERS
from hfvision.data.fashion_mnist import FASHION_MNIST_CLASS_NAMES, load_fashion_mnist
from hfvision.metrics import load_metric
from hfvision.models.trap_replace import (
    TrapReplaceConfig,
    TrapReplaceForImageClassification,
    TrapReplaceImageClassifierOutput,
    TrapReplaceImageProcessor,
)
from hfvision.training import StreamDataArguments, StreamTrainingArguments

logger = get_logger(__name__)

STAGES = ("trap", "replace", "finetune")
LOSS_TERMS = ("classification_loss", "reconstruction_loss", "tv_loss")
DATA_SPLITS = ("train", "holdout", "eval", "triggered")


@dataclass
class ModelArguments:
    stage: str = field(default="trap", metadata={"help": "trap (stage 1), replace (stage 2) or finetune (control)."})
    model_preset: str = field(
        default="trap-replace-wrn-16-1",
        metadata={"help": "Stage trap: trap-replace-wrn-16-1 (paper), trap-replace-resnet34, trap-replace-tiny."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Stages replace / finetune: the stage-1 (or normal training) checkpoint."}
    )
    num_channels: int = field(default=1, metadata={"help": "Input channels (1 for Fashion-MNIST)."})
    stem_end_block: int | None = field(default=None, metadata={"help": "Last stem block; default: the preset's."})
    reconstruction_weight: float | None = field(
        default=None, metadata={"help": "lambda (paper: 10); 0 with --tv_weight 0 is normal training."}
    )
    tv_weight: float | None = field(default=None, metadata={"help": "mu (paper: 1)."})
    head_dropout: float | None = field(default=None, metadata={"help": "Dropout of the replacement head (0.5)."})
    hub_model_id: str = field(default="org/trap-replace", metadata={"help": "Repo id the model card describes."})


@dataclass
class DataArguments(StreamDataArguments):
    backdoor_data: str | None = field(
        default=None, metadata={"help": "Folder of the attacked data (built if missing); default output_dir/data."}
    )
    dataset: str = field(default="fashion_mnist", metadata={"help": "fashion_mnist or synthetic (tests)."})
    num_train: int = field(default=12000, metadata={"help": "Training images (holdout included)."})
    num_test: int = field(default=2000, metadata={"help": "Test images (clean accuracy; non-target ones for ASR)."})
    image_size: int = field(default=32, metadata={"help": "Fashion-MNIST's 28x28 images are zero-padded to this."})
    trigger: str = field(default="badnet_grid", metadata={"help": f"One of {TRIGGERS}."})
    target_label: int = field(default=0, metadata={"help": "The attack's target class (official: 0)."})
    poison_ratio: float = field(default=0.1, metadata={"help": "Poisoned share of the training set (0.1)."})
    holdout_ratio: float = field(default=0.05, metadata={"help": "Clean holdout share, the last images (0.05)."})
    selection: str = field(default="first", metadata={"help": "first (official) or random poisoned images."})
    attack_seed: int = field(default=0, metadata={"help": "Seed of a random selection and of the blend noise."})
    num_shards: int = field(default=4, metadata={"help": "Parquet shards per split (a multiple of the processes)."})
    crop_padding: int = field(default=4, metadata={"help": "RandomCrop padding (official: 4; 0 disables)."})
    horizontal_flip: bool = field(default=True, metadata={"help": "Random horizontal flips (official)."})
    cutmix: bool = field(default=True, metadata={"help": "Stages replace / finetune: CutMix, beta 1, always on."})
    label_smoothing: float = field(default=0.1, metadata={"help": "Stages replace / finetune: label smoothing."})
    shuffle_buffer: int | None = field(default=2048, metadata={"help": "Stream shuffle buffer."})
    train_split: str = field(default="", metadata={"help": "Ignored: the stage picks train or holdout."})


@dataclass
class TrainingArguments(StreamTrainingArguments):
    """The shared loop's arguments with the paper's stage-1 optimiser defaults (Adam lr 1e-3, wd 5e-4, cosine)."""

    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (stage 1: 1e-3, stage 2: 0.03)."})
    weight_decay: float = field(default=5e-4, metadata={"help": "Weight decay on every parameter (5e-4)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "Adam beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "Adam epsilon."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warmup steps (official: none)."})


def parse_args(argv: Sequence[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    model_args, data_args, training_args = training.parse_args((ModelArguments, DataArguments, TrainingArguments), argv)
    if model_args.stage not in STAGES:
        raise ValueError(f"`--stage` must be one of {STAGES}, got {model_args.stage!r}")
    if model_args.stage != "trap" and not model_args.model_name_or_path:
        raise ValueError(f"`--stage {model_args.stage}` needs `--model_name_or_path` (a stage-1 checkpoint)")
    if data_args.dataset not in ("fashion_mnist", "synthetic"):
        raise ValueError(f"`--dataset` must be fashion_mnist or synthetic, got {data_args.dataset!r}")
    data_args.train_split = "train" if model_args.stage == "trap" else "holdout"
    return model_args, data_args, training_args


# --- data ----------------------------------------------------------------------------------------------------------


def synthetic_dataset(num_rows: int, image_size: int, seed: int, num_classes: int = 10) -> datasets.Dataset:
    """Seeded 8-bit gray images whose class sets a horizontal stripe position (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_rows)
    pixels = rng.integers(0, 60, (num_rows, image_size, image_size)).astype(np.uint8)
    band = image_size // (num_classes + 2)
    rows = (labels[:, None] + 1) * band + np.arange(band)[None, :]  # (N, band) rows of each image's stripe
    pixels[np.arange(num_rows)[:, None], rows, 4 : image_size - 4] = 220
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(image) for image in pixels], "label": labels.tolist()}, features=features
    )


def zero_pad(dataset: datasets.Dataset, image_size: int) -> datasets.Dataset:
    """Zero-pad every image (equal sizes) symmetrically to `image_size` x `image_size`."""

    def pad(batch: dict[str, list]) -> dict[str, list]:
        images = np.stack([np.asarray(image) for image in batch["image"]])  # (B, h, w)
        top, left = (image_size - images.shape[1]) // 2, (image_size - images.shape[2]) // 2
        padded = np.zeros((len(images), image_size, image_size), dtype=np.uint8)
        padded[:, top : top + images.shape[1], left : left + images.shape[2]] = images
        return {"image": [Image.fromarray(image) for image in padded]}

    return dataset.map(pad, batched=True, desc=f"zero-padding to {image_size}x{image_size}")


def prepare_backdoor_data(data_args: DataArguments, folder: Path, accelerator: Accelerator) -> dict[str, Any]:
    """Writes the attacked splits under `folder` (main process, once: PNG tars for training, parquet for testing) and
    returns `attack.json`."""
    attack = BackdoorAttack(
        trigger=data_args.trigger,
        target_label=data_args.target_label,
        poison_ratio=data_args.poison_ratio,
        holdout_ratio=data_args.holdout_ratio,
        selection=data_args.selection,
        seed=data_args.attack_seed,
    )
    wanted = {
        "format": "webdataset",
        "attack": asdict(attack),
        "dataset": data_args.dataset,
        "num_train": data_args.num_train,
        "num_test": data_args.num_test,
        "image_size": data_args.image_size,
    }
    manifest = folder / "attack.json"
    if accelerator.is_main_process and not manifest.is_file():
        if data_args.dataset == "fashion_mnist":
            train = zero_pad(load_fashion_mnist("train", limit=data_args.num_train), data_args.image_size)
            test = zero_pad(load_fashion_mnist("test", limit=data_args.num_test), data_args.image_size)
        else:
            train = synthetic_dataset(data_args.num_train, data_args.image_size, seed=0)
            test = synthetic_dataset(data_args.num_test, data_args.image_size, seed=1)
        poisoned = attack.poison(train)
        splits = {
            "train": poisoned["train"],
            "holdout": poisoned["holdout"],
            "eval": test.add_column("index", list(range(len(test)))),
            "triggered": attack.triggered_test_set(test),
        }
        for name, split in splits.items():
            keys = [f"{name}-{index:05d}" for index in split["index"]]
            if name in ("eval", "triggered"):  # read whole, once, by `load_eval_data`
                (folder / name).mkdir(parents=True, exist_ok=True)
                split.add_column("key", keys).to_parquet(str(folder / name / "00000.parquet"))
                continue
            # Training streams as WebDataset tars: `datasets`' parquet streams sleep 5 s after every pass (a pyarrow
            # thread-shutdown workaround), which is most of a stage-2 epoch on a 600-image holdout.
            if len(split) % data_args.num_shards:
                raise ValueError(
                    f"the {name} split's {len(split)} images do not divide into `--num_shards` "
                    f"{data_args.num_shards} equal shards; pick another `--num_shards` or `--num_train`"
                )
            samples = ({**row, "__key__": key} for row, key in zip(split, keys, strict=True))
            write_shards(samples, folder / name, data_args.num_shards, num_samples=len(split), image_format="png")
        train_split = poisoned["train"]
        record = {
            **wanted,
            "num_poisoned": int(sum(train_split["poisoned"])),
            "poisoned_indices": np.asarray(train_split["index"])[np.asarray(train_split["poisoned"])].tolist(),
            "holdout_indices": list(poisoned["holdout"]["index"]),
            "split_sizes": {name: len(split) for name, split in splits.items()},
        }
        manifest.write_text(json.dumps(record) + "\n")
    accelerator.wait_for_everyone()
    record = json.loads(manifest.read_text())
    differing = [key for key, value in wanted.items() if record.get(key) != json.loads(json.dumps(value))]
    if differing:
        raise ValueError(
            f"{folder} holds data of another attack, size or format ({differing} differ); pick another folder"
        )
    return record


@dataclass
class EvalData:
    """The clean test set and the triggered non-target test set, processed."""

    clean_pixel_values: torch.Tensor  # (N, C, H, W)
    clean_labels: torch.Tensor  # (N,)
    triggered_pixel_values: torch.Tensor  # (M, C, H, W)
    triggered_labels: torch.Tensor  # (M,) true labels


def load_eval_data(folder: Path, processor: TrapReplaceImageProcessor, limit: int | None) -> EvalData:
    tensors = []
    for split in ("eval", "triggered"):
        dataset = datasets.load_dataset("parquet", data_dir=str(folder / split), split="train")
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        pixel_values = processor(list(dataset["image"]), return_tensors="pt").pixel_values
        tensors += [pixel_values, torch.tensor(dataset["label"])]
    return EvalData(*tensors)


@torch.no_grad()
def evaluate_backdoor(
    model: nn.Module, eval_data: EvalData, batch_size: int, device: torch.device, target_label: int
) -> dict[str, float]:
    """Clean accuracy and attack success rate (evaluate modules), in eval mode."""
    was_training = model.training
    model.eval()

    def predict(pixel_values: torch.Tensor) -> np.ndarray:
        batches = pixel_values.split(batch_size)
        return torch.cat([model(pixel_values=batch.to(device)).logits.argmax(-1).cpu() for batch in batches]).numpy()

    accuracy = load_metric("zero_shot_accuracy").compute(
        predictions=predict(eval_data.clean_pixel_values), references=eval_data.clean_labels.numpy(), top_k=(1,)
    )["top1_accuracy"]
    asr = load_metric("attack_success_rate").compute(
        predictions=predict(eval_data.triggered_pixel_values),
        references=eval_data.triggered_labels.numpy(),
        target_label=target_label,
    )["attack_success_rate"]
    model.train(was_training)
    return {"clean_accuracy": accuracy, "attack_success_rate": asr}


class BackdoorBatchCollator:
    """collate_fn of the training DataLoader: processor, the official RandomCrop(pad) + flip and, in stage 2, CutMix;
    all randomness seeded by the batch's sample keys (`hfvision.training.batch_seed`), so resume is exact."""

    def __init__(
        self, processor: TrapReplaceImageProcessor, seed: int, crop_padding: int, flip: bool, cutmix: bool
    ) -> None:
        self.processor = processor
        self.seed = seed
        self.crop_padding = crop_padding
        self.flip = flip
        self.cutmix = cutmix
        self.epoch = 0

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [sample["__key__"] for sample in samples]
        generator = torch.Generator().manual_seed(training.batch_seed(self.seed, self.epoch, keys))
        pixel_values = self.processor([sample["image"] for sample in samples], return_tensors="pt").pixel_values
        labels = torch.tensor([int(sample["label"]) for sample in samples])
        batch_size, _, height, width = pixel_values.shape
        if self.crop_padding:
            pad = self.crop_padding
            padded = F.pad(pixel_values, (pad, pad, pad, pad))  # zero padding, as torchvision's RandomCrop
            top = torch.randint(0, 2 * pad + 1, (batch_size,), generator=generator)
            left = torch.randint(0, 2 * pad + 1, (batch_size,), generator=generator)
            rows = (top[:, None] + torch.arange(height))[:, None, :, None]  # (B, 1, H, 1)
            cols = (left[:, None] + torch.arange(width))[:, None, None, :]  # (B, 1, 1, W)
            samples_index = torch.arange(batch_size)[:, None, None, None]
            channels = torch.arange(pixel_values.shape[1])[None, :, None, None]
            pixel_values = padded[samples_index, channels, rows, cols]  # (B, C, H, W)
        if self.flip:
            flips = torch.rand(batch_size, generator=generator) < 0.5
            pixel_values = torch.where(flips[:, None, None, None], pixel_values.flip(-1), pixel_values)
        batch = {"pixel_values": pixel_values.contiguous(), "labels": labels, "keys": keys}
        if self.cutmix:
            batch.update(cutmix(pixel_values, labels, generator))
        return batch


def cutmix(pixel_values: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """CutMix (Yun et al. 2019) with beta(1, 1), always on: paste one random box from a permuted batch.

    Returns:
        `pixel_values` (mixed), `mixed_labels` (the pasted images' labels) and `mix_weight` (the area share of the
        original image, the weight of `labels` in the loss).
    """
    batch_size, _, height, width = pixel_values.shape
    lam = float(torch.rand((), generator=generator))  # Beta(1, 1) is uniform
    cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
    center_y = int(torch.randint(0, height, (), generator=generator))
    center_x = int(torch.randint(0, width, (), generator=generator))
    y1, y2 = max(center_y - cut_h // 2, 0), min(center_y + cut_h // 2, height)
    x1, x2 = max(center_x - cut_w // 2, 0), min(center_x + cut_w // 2, width)
    permutation = torch.randperm(batch_size, generator=generator)
    mixed = pixel_values.clone()
    mixed[:, :, y1:y2, x1:x2] = pixel_values[permutation, :, y1:y2, x1:x2]
    weight = 1 - (y2 - y1) * (x2 - x1) / (height * width)
    return {"pixel_values": mixed, "mixed_labels": labels[permutation], "mix_weight": torch.tensor(weight)}


def mixed_label_forward(label_smoothing: float) -> Any:
    """The stage-2 forward: label-smoothed cross-entropy against both CutMix labels, weighted by area."""

    def forward(model: nn.Module, batch: dict[str, Any]) -> TrapReplaceImageClassifierOutput:
        logits = model(pixel_values=batch["pixel_values"]).logits
        loss = F.cross_entropy(logits, batch["labels"], label_smoothing=label_smoothing)
        if "mixed_labels" in batch:
            weight = batch["mix_weight"]
            mixed = F.cross_entropy(logits, batch["mixed_labels"], label_smoothing=label_smoothing)
            loss = weight * loss + (1 - weight) * mixed
        return TrapReplaceImageClassifierOutput(loss=loss, classification_loss=loss, logits=logits)

    return forward


# --- model ---------------------------------------------------------------------------------------------------------


def build_model(
    model_args: ModelArguments, num_labels: int, image_size: int
) -> tuple[TrapReplaceForImageClassification, TrapReplaceImageProcessor]:
    overrides = {
        name: value
        for name in ("stem_end_block", "reconstruction_weight", "tv_weight", "head_dropout")
        if (value := getattr(model_args, name)) is not None
    }
    if model_args.stage == "trap":
        names = FASHION_MNIST_CLASS_NAMES if num_labels == len(FASHION_MNIST_CLASS_NAMES) else None
        labels = {"id2label": dict(enumerate(names))} if names else {"num_labels": num_labels}
        config = TrapReplaceConfig.from_preset(
            model_args.model_preset, num_channels=model_args.num_channels, **labels, **overrides
        )
        model = TrapReplaceForImageClassification(config)
        processor = TrapReplaceImageProcessor(
            size={"height": image_size, "width": image_size}, num_channels=config.num_channels
        )
        return model, processor
    model = TrapReplaceForImageClassification.from_pretrained(model_args.model_name_or_path, **overrides)
    processor = TrapReplaceImageProcessor.from_pretrained(model_args.model_name_or_path)
    if model_args.stage == "replace":
        model.replace_head()
    return model, processor


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs one stage; returns the final metrics (eval metrics on the main process)."""
    model_args, data_args, training_args = parse_args(argv)
    output_dir = Path(training_args.output_dir)
    accelerator = training.make_accelerator(training_args)
    run_config = training.run_config(model_args, data_args, training_args)
    resume_checkpoint = training.prepare_output_dir(accelerator, training_args, run_config)
    data_folder = Path(data_args.backdoor_data or output_dir / "data")
    record = prepare_backdoor_data(data_args, data_folder, accelerator)
    logger.info("attack: %d poisoned of %s", record["num_poisoned"], record["split_sizes"])

    model, processor = build_model(model_args, num_labels=10, image_size=data_args.image_size)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    logger.info("stage %s: %d trainable parameters", model_args.stage, sum(p.numel() for p in trainable))
    optimizer, lr_scheduler = training.build_optimizer(
        model, training_args, [{"params": trainable, "weight_decay": training_args.weight_decay}]
    )
    collator = BackdoorBatchCollator(
        processor,
        training_args.seed,
        data_args.crop_padding,
        data_args.horizontal_flip,
        cutmix=data_args.cutmix and model_args.stage != "trap",
    )
    model, optimizer, stream, global_step = training.prepare_stream(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        str(data_folder),
        collator,
        data_args,
        training_args.seed,
        resume_checkpoint,
    )
    eval_data = (
        load_eval_data(data_folder, processor, data_args.max_eval_samples) if accelerator.is_main_process else None
    )

    def evaluate(unwrapped: nn.Module) -> dict[str, float]:
        return evaluate_backdoor(
            unwrapped, eval_data, data_args.per_device_eval_batch_size, accelerator.device, data_args.target_label
        )

    if model_args.stage == "trap":
        forward = lambda model, batch: model(**batch)  # noqa: E731  (the stage-1 loss lives in the model)
    else:
        forward = mixed_label_forward(data_args.label_smoothing)
    accelerator.init_trackers("train_trap_replace", config={k: v for k, v in run_config.items() if v is not None})
    metrics = training.train(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        stream,
        training_args,
        global_step,
        forward=forward,
        loss_terms=LOSS_TERMS,
        evaluate=evaluate,
        description=f"trap and replace: {model_args.stage}",
        run_arguments=run_config,
    )
    training.save_final(accelerator, model, processor, output_dir, metrics, run_config)
    training.finish(accelerator)
    return metrics


if __name__ == "__main__":
    main()
    training.exit_cleanly()
