"""Pretrain PyramidCLIP (Gao et al., NeurIPS 2022, arXiv 2204.14095) on an image-text stream with Accelerate.

Usage (one or many processes, CPU or GPUs; a YAML file gives defaults that command-line flags override)::

    accelerate launch training/pretrain_pyramidclip.py --config training/configs/pretrain_pyramidclip_tiny.yaml
    python training/pretrain_pyramidclip.py --config training/configs/pretrain_pyramidclip_tiny.yaml --max_steps 50
    # two CPU processes (gloo); `--cpu --num_processes 2` would silently run one:
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
        training/pretrain_pyramidclip.py --config training/configs/pretrain_pyramidclip_tiny.yaml

What it does, in order:
1. data: `--synthetic` first writes seeded synthetic scenes (WebDataset tars, a shard count that is a multiple of the
   world size) into `output_dir/synthetic_data` on the main process; otherwise `--train_data` / `--eval_data` name
   builder folders, tar globs or Hub ids read by `hfvision.data.load_image_text_stream`;
2. tokenizer: a small CLIP BPE trained on the first captions of the training stream (main process; saved to
   `output_dir/processor`, which the other processes load), unless `--tokenizer_name_or_path` or
   `--model_name_or_path` provides one;
3. model from a preset (`--model_preset`) or a checkpoint (`--model_name_or_path`); AdamW with open_clip's
   weight-decay rule; linear warmup then cosine decay, stepped once per optimizer step;
4. the stream goes through a `DataLoader` whose collate_fn builds the processor's pyramid batch, and through
   `accelerator.prepare`, which gives every rank its own tars (`dispatch_batches=False`); a rank whose stream ends
   starts it again as a new epoch, so all ranks run exactly `max_steps` steps;
5. every `checkpointing_steps`: `accelerator.save_state(output_dir/checkpoint-STEP)` plus one
   `stream_position_rank{R}.json` per rank; `--resume_from_checkpoint latest|PATH` restores model, optimizer,
   scheduler, RNG and each rank's stream position (see `TrainStream` for why resume is exact);
6. every `eval_steps` and at the end: zero-shot top-1/top-5 accuracy ("a photo of a {class}." over
   `class_names.json`) and image<->text recall@k on the eval split, on the main process;
7. at the end: `save_pretrained` of the model and processor into `output_dir/final` (safetensors) with
   `eval_results.json` (final metrics + the run's arguments).

Deviations from the paper's training recipe: region features are the processor's pixel stand-ins (no detector ships
offline); with gradient accumulation each micro-batch is its own contrastive batch (no feature caching).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
import yaml
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.logging import get_logger
from accelerate.state import AcceleratorState
from accelerate.tracking import get_available_trackers
from accelerate.utils import GradientAccumulationPlugin
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer, HfArgumentParser, get_cosine_schedule_with_warmup, set_seed

import hfvision  # noqa: F401  (registers PyramidCLIP with the Auto classes)
from hfvision.data import SkipCounter, build_synthetic_scenes, load_image_text_stream
from hfvision.metrics import load_metric
from hfvision.models.pyramidclip import (
    PyramidClipConfig,
    PyramidClipImageProcessor,
    PyramidClipModel,
    PyramidClipProcessor,
    train_clip_tokenizer,
)
from hfvision.models.pyramidclip.modeling_pyramidclip import LOSS_TERMS

logger = get_logger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
PROMPT_TEMPLATE = "a photo of a {}."
RECALL_AT = (1, 5, 10)
OBJECTIVES = ("pyramid", "clip")
CLIP_INPUTS = ("input_ids", "attention_mask", "pixel_values")


# --- arguments -----------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    model_preset: str = field(
        default="pyramidclip-tiny",
        metadata={"help": "Preset to train from scratch: pyramidclip-tiny, pyramidclip-vit-b-32, pyramidclip-base."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint (model + processor) to continue pretraining from."}
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Input resolution of the model and the crops; default: the preset's."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to use instead of training one on the training captions."}
    )
    objective: str = field(
        default="pyramid",
        metadata={
            "help": "pyramid: the PyramidCLIP objective; clip: the baseline, plain CLIP InfoNCE (alpha 0) between the "
            "global view and the caption, same encoders and data."
        },
    )
    tokenizer_vocab_size: int = field(default=1000, metadata={"help": "Vocabulary size of the trained tokenizer."})
    tokenizer_train_samples: int = field(
        default=10_000, metadata={"help": "The tokenizer is trained on this many first captions of the stream."}
    )


@dataclass
class DataArguments:
    train_data: str | None = field(
        default=None, metadata={"help": "Training data: a builder folder, a tar/parquet glob or a Hub dataset id."}
    )
    eval_data: str | None = field(default=None, metadata={"help": "Eval data (default: `train_data`)."})
    train_split: str = field(default="train", metadata={"help": "Split of `train_data`."})
    eval_split: str = field(default="eval", metadata={"help": "Split of `eval_data`."})
    class_names: str | None = field(
        default=None,
        metadata={"help": "class_names.json for zero-shot eval; default: found in or above the eval data folder."},
    )
    synthetic: bool = field(
        default=False, metadata={"help": "Build seeded synthetic scenes in output_dir/synthetic_data, train on them."}
    )
    synthetic_num_train: int = field(default=2048, metadata={"help": "Synthetic training scenes."})
    synthetic_num_eval: int = field(default=256, metadata={"help": "Synthetic eval scenes (one object each)."})
    synthetic_image_size: int = field(default=64, metadata={"help": "Side of the synthetic images."})
    synthetic_mismatch_fraction: float = field(
        default=0.0, metadata={"help": "Fraction of synthetic training captions swapped for another scene's."}
    )
    synthetic_shards_per_process: int = field(default=2, metadata={"help": "Synthetic tars per training process."})
    shuffle_buffer: int | None = field(
        default=1000, metadata={"help": "Shuffle buffer of the training stream (1: shard order only)."}
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per process."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Eval batch size."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes per rank."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on at most this many samples."})


@dataclass
class PretrainingArguments:
    output_dir: str = field(metadata={"help": "Checkpoints, logs and the final model go here."})
    max_steps: int = field(default=1000, metadata={"help": "Optimizer steps."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(
        default=0.2, metadata={"help": "AdamW weight decay (not on biases, norms, embeddings, logit_scale)."}
    )
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.98, metadata={"help": "AdamW beta2 (open_clip's for ViTs)."})
    adam_epsilon: float = field(default=1e-6, metadata={"help": "AdamW epsilon."})
    max_grad_norm: float | None = field(default=None, metadata={"help": "Clip the gradient norm (None: no clip)."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warmup steps before the cosine decay."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    mixed_precision: str | None = field(
        default=None, metadata={"help": "no, fp16 or bf16; default: what `accelerate launch` was given."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of model init, stream shuffling and crops."})
    checkpointing_steps: int | None = field(default=500, metadata={"help": "Save state every N steps (None: never)."})
    checkpoints_total_limit: int | None = field(default=None, metadata={"help": "Keep at most N checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' (in output_dir; a fresh start if none) or a checkpoint folder."}
    )
    eval_steps: int | None = field(default=500, metadata={"help": "Evaluate every N steps (and at the end)."})
    logging_steps: int = field(default=10, metadata={"help": "Log averaged losses every N steps."})
    report_to: str = field(
        default="none", metadata={"help": "Comma-separated accelerate trackers (tensorboard, wandb, ...), all or none."}
    )
    debug_log_keys: bool = field(
        default=False,
        metadata={"help": "Each rank writes the sample keys it trained on and a hash of its parameters to output_dir."},
    )
    stop_after_step: int | None = field(
        default=None, metadata={"help": "Testing: hard-exit with status 1 right after this step (simulates a kill)."}
    )


def _yaml_to_argv(config_path: str) -> list[str]:
    """The YAML file's `key: value` pairs as `--key value` flags (placed before the command line, which wins)."""
    with open(config_path, encoding="utf-8") as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ValueError(f"--config {config_path} must hold a mapping of argument names to values")
    argv = []
    for name, value in values.items():
        if value is not None:
            argv += [f"--{name}", str(value)]
    return argv


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[ModelArguments, DataArguments, PretrainingArguments]:
    """Parses `--config file.yaml` (optional) and the flags of the three argument dataclasses."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument("--config")
    known, rest = config_parser.parse_known_args(argv)
    if known.config:
        rest = _yaml_to_argv(known.config) + rest
    parser = HfArgumentParser((ModelArguments, DataArguments, PretrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=rest)
    if data_args.synthetic and data_args.train_data:
        raise ValueError("pass either `--synthetic` or `--train_data`, not both")
    if not data_args.synthetic and not data_args.train_data:
        raise ValueError("pass `--train_data` (a builder folder, tar glob or Hub id) or `--synthetic`")
    if training_args.max_steps < 1 or training_args.gradient_accumulation_steps < 1:
        raise ValueError("`max_steps` and `gradient_accumulation_steps` must be >= 1")
    return model_args, data_args, training_args


# --- data, tokenizer, model ----------------------------------------------------------------------------------------


def prepare_synthetic_data(data_args: DataArguments, output_dir: Path, accelerator: Accelerator, seed: int) -> Path:
    """Builds the synthetic scenes once (main process first; the others then find them) and returns their folder."""
    data_dir = output_dir / "synthetic_data"
    world_size = accelerator.num_processes
    num_shards = world_size * data_args.synthetic_shards_per_process
    build_args = {
        "num_train": data_args.synthetic_num_train,
        "num_eval": data_args.synthetic_num_eval,
        "seed": seed,
        "mismatch_fraction": data_args.synthetic_mismatch_fraction,
        "num_shards": num_shards,
        "world_size": world_size,
        "image_size": data_args.synthetic_image_size,
        "eval_max_objects": 1,  # one object per eval scene: unambiguous zero-shot labels
    }
    stamp = data_dir / "build_args.json"
    with accelerator.main_process_first():
        if accelerator.is_main_process and (not stamp.exists() or json.loads(stamp.read_text()) != build_args):
            build_synthetic_scenes(data_dir, **build_args, overwrite=True)
            stamp.write_text(json.dumps(build_args, indent=1) + "\n")
    return data_dir


def find_class_names(data_args: DataArguments, eval_source: str) -> list[str] | None:
    """Class names for zero-shot eval: `--class_names`, else `class_names.json` in or above the eval data folder."""
    if data_args.class_names:
        return json.loads(Path(data_args.class_names).read_text())
    folder = Path(re.split(r"[*?\[]", eval_source)[0])
    for candidate in (folder, *folder.parents[:2]):
        path = candidate / "class_names.json"
        if path.is_file():
            return json.loads(path.read_text())
    return None


def load_or_train_processor(
    model_args: ModelArguments,
    train_source: str,
    train_split: str,
    image_size: int,
    output_dir: Path,
    accelerator: Accelerator,
    reuse_saved: bool,
) -> PyramidClipProcessor:
    """The processor: from the checkpoint, or a given tokenizer, or a tokenizer trained on the first captions.

    A trained processor is built on the main process and saved to `output_dir/processor`; the other processes load
    that copy, so every rank tokenizes identically. A resumed run (`reuse_saved`) loads the saved copy as well.
    """
    if model_args.model_name_or_path and not model_args.tokenizer_name_or_path:
        return PyramidClipProcessor.from_pretrained(model_args.model_name_or_path)
    saved = output_dir / "processor"
    with accelerator.main_process_first():
        if accelerator.is_main_process and not (reuse_saved and (saved / "processor_config.json").is_file()):
            if model_args.tokenizer_name_or_path:
                tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name_or_path)
            else:
                stream = load_image_text_stream(train_source, split=train_split)
                captions = [sample["caption"] for sample in stream.take(model_args.tokenizer_train_samples)]
                tokenizer = train_clip_tokenizer(captions, vocab_size=model_args.tokenizer_vocab_size)
            image_processor = PyramidClipImageProcessor(
                size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
            )
            PyramidClipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(saved)
    return PyramidClipProcessor.from_pretrained(saved)


def build_model(model_args: ModelArguments, vocab_size: int, roi_feature_dim: int) -> PyramidClipModel:
    """A fresh preset model fitted to the processor, or the checkpoint to continue from.

    `vocab_size` is the tokenizer's; `roi_feature_dim` is the size of the image processor's stand-in region features
    (pooled pixels + box), which replace the paper's 2052-d detector features.
    """
    if model_args.model_name_or_path:
        model = PyramidClipModel.from_pretrained(model_args.model_name_or_path)
        vision_config = model.config.vision_config
        if model_args.image_size not in (None, vision_config.image_size):
            raise ValueError(
                f"`image_size` {model_args.image_size} differs from the checkpoint's {vision_config.image_size}"
            )
        if vision_config.roi_feature_dim != roi_feature_dim:
            raise ValueError(
                f"the checkpoint expects {vision_config.roi_feature_dim}-d region features, the processor makes "
                f"{roi_feature_dim}-d ones"
            )
        return model
    if model_args.objective not in OBJECTIVES:
        raise ValueError(f"`objective` must be one of {OBJECTIVES}, got {model_args.objective!r}")
    vision_overrides = {"roi_feature_dim": roi_feature_dim}
    if model_args.image_size is not None:
        vision_overrides["image_size"] = model_args.image_size
    objective_overrides = {"softening_alpha": 0.0} if model_args.objective == "clip" else {}
    config = PyramidClipConfig.from_preset(
        model_args.model_preset,
        text_config={"vocab_size": vocab_size},
        vision_config=vision_overrides,
        **objective_overrides,
    )
    return PyramidClipModel(config)


def weight_decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups with open_clip's rule: no decay on biases, norms, embeddings, `logit_scale` (ndim < 2 or Embedding).

    Frozen parameters (the patch embedding) are left out.
    """
    embedding_weights = {id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)}
    decay, no_decay = [], []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim < 2 or id(parameter) in embedding_weights:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class PyramidBatchCollator:
    """collate_fn of the training DataLoader: stream samples -> the processor's pyramid batch (+ their keys).

    The crop seed is a hash of (seed, epoch, the batch's sample keys): the same batch gets the same crops in an
    uninterrupted run, a resumed one (which replays batches) and with any number of DataLoader workers, while every
    batch and epoch gets fresh crops. `epoch` is set by `TrainStream` before each pass; workers copy it when the
    pass's iterator starts.
    """

    def __init__(self, processor: PyramidClipProcessor, seed: int) -> None:
        self.processor = processor
        self.seed = seed
        self.epoch = 0

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [sample["__key__"] for sample in samples]
        crop_seed = zlib.crc32(json.dumps([self.seed, self.epoch, keys]).encode("utf-8"))
        batch = self.processor(
            text=[sample["caption"] for sample in samples],
            images=[sample["image"] for sample in samples],
            summary=[sample["summary"] for sample in samples],
            attributes=[sample["attributes"] for sample in samples],
            boxes=[sample["boxes"] or None for sample in samples],
            return_pyramid=True,
            seed=crop_seed,
        )
        return {**batch, "keys": keys}


class EvalCollator:
    """collate_fn of the eval DataLoader: CLIP inputs (centre crop, captions) plus labels and raw captions."""

    def __init__(self, processor: PyramidClipProcessor) -> None:
        self.processor = processor

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        captions = [sample["caption"] for sample in samples]
        batch = self.processor(text=captions, images=[sample["image"] for sample in samples])
        return {**batch, "labels": [sample["label"] for sample in samples], "captions": captions}


@dataclass
class StreamPosition:
    """Where one rank is in its training stream; saved per rank in every checkpoint."""

    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches this rank has consumed in `epoch`
    skipped_before_epoch: int = 0  # corrupt samples this rank's stream dropped in earlier epochs


class TrainStream:
    """This rank's endless micro-batch iterator over the prepared DataLoader, restarting the stream each epoch.

    Resume is exact because a pass is a pure function of (seed, epoch, rank's shards): the shuffle order comes from
    `set_epoch`, the crops from `PyramidBatchCollator`. A resumed rank restarts its epoch and drops the batches it had
    already consumed (`accelerator.skip_first_batches`: they are re-read and re-collated, then discarded), so it
    continues with exactly the batch the interrupted run would have seen next. (The alternative, the stream's
    `IterableDataset.state_dict()`, is not exact with a shuffle buffer > 1 and does not see DataLoader workers'
    progress; `StatefulDataLoader` needs torchdata.) The cost is re-reading up to one epoch of this rank's data.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        loader: DataLoader,
        collator: PyramidBatchCollator,
        skip_counter: SkipCounter,
        position: StreamPosition,
    ) -> None:
        self.accelerator = accelerator
        self.loader = loader
        self.collator = collator
        self.skip_counter = skip_counter
        self.position = position
        self._skipped_at_epoch_start = skip_counter.num_skipped

    @property
    def num_skipped(self) -> int:
        """Corrupt samples this rank's stream has dropped, over the whole run (resumes included)."""
        return self.position.skipped_before_epoch + self.skip_counter.num_skipped - self._skipped_at_epoch_start

    def __iter__(self) -> Iterator[dict[str, Any]]:
        position = self.position
        while True:
            self._skipped_at_epoch_start = self.skip_counter.num_skipped
            self.loader.set_epoch(position.epoch)
            self.collator.epoch = position.epoch
            already_consumed = position.batches_in_epoch
            epoch_loader = (
                self.accelerator.skip_first_batches(self.loader, already_consumed) if already_consumed else self.loader
            )
            for batch in epoch_loader:
                position.batches_in_epoch += 1
                yield batch
            if position.batches_in_epoch == 0:
                raise RuntimeError(
                    f"rank {self.accelerator.process_index}'s training stream gave no full batch: it holds fewer "
                    "samples than `per_device_train_batch_size`"
                )
            position.skipped_before_epoch = self.num_skipped
            position.epoch += 1
            position.batches_in_epoch = 0


# --- checkpoints ---------------------------------------------------------------------------------------------------


def _position_file(checkpoint: Path, rank: int) -> Path:
    return checkpoint / f"stream_position_rank{rank}.json"


def _is_complete(checkpoint: Path, world_size: int) -> bool:
    """Every rank writes its position file after `save_state` finished everywhere, so all of them mark completion."""
    return all(_position_file(checkpoint, rank).is_file() for rank in range(world_size))


def find_latest_checkpoint(output_dir: Path, world_size: int) -> Path | None:
    """The complete `checkpoint-STEP` folder with the highest step, or None."""
    steps = []
    for path in output_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name[len(CHECKPOINT_PREFIX) :]
        if suffix.isdigit() and _is_complete(path, world_size):
            steps.append((int(suffix), path))
    return max(steps)[1] if steps else None


def save_checkpoint(
    accelerator: Accelerator, output_dir: Path, step: int, stream: TrainStream, total_limit: int | None
) -> Path:
    """`save_state` (model, optimizer, scheduler, RNG) plus this rank's stream position; prunes old checkpoints."""
    checkpoint = output_dir / f"{CHECKPOINT_PREFIX}{step}"
    accelerator.save_state(str(checkpoint))
    accelerator.wait_for_everyone()
    # accelerate writes one dataloader state for all ranks (hf_stack.md section 5), so each rank saves its own.
    state = {
        **asdict(stream.position),
        "num_skipped": stream.num_skipped,
        "step": step,
        "world_size": accelerator.num_processes,
        "batch_size": stream.loader.batch_size,
    }
    target = _position_file(checkpoint, accelerator.process_index)
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(temporary, target)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and total_limit:
        checkpoints = sorted(
            (int(path.name[len(CHECKPOINT_PREFIX) :]), path)
            for path in output_dir.glob(f"{CHECKPOINT_PREFIX}*")
            if path.name[len(CHECKPOINT_PREFIX) :].isdigit()
        )
        for _, stale in checkpoints[:-total_limit]:
            shutil.rmtree(stale, ignore_errors=True)
    return checkpoint


def resolve_resume_checkpoint(resume_from_checkpoint: str | None, output_dir: Path, world_size: int) -> Path | None:
    """The checkpoint to resume from: None (fresh start), the latest in `output_dir`, or the given folder."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        checkpoint = find_latest_checkpoint(output_dir, world_size)
        if checkpoint is None:
            logger.warning("--resume_from_checkpoint latest: no complete checkpoint in %s; starting fresh", output_dir)
        return checkpoint
    checkpoint = Path(resume_from_checkpoint)
    if not _is_complete(checkpoint, world_size):
        raise ValueError(
            f"{checkpoint} is not a complete checkpoint of a {world_size}-process run (missing "
            "stream_position_rank*.json; resuming needs the same number of processes)"
        )
    return checkpoint


def load_stream_position(checkpoint: Path, accelerator: Accelerator, batch_size: int) -> tuple[int, StreamPosition]:
    """This rank's (global step, stream position) from a checkpoint."""
    state = json.loads(_position_file(checkpoint, accelerator.process_index).read_text())
    if state["world_size"] != accelerator.num_processes:
        raise ValueError(
            f"{checkpoint} was saved by {state['world_size']} processes; resume with the same number "
            f"(now {accelerator.num_processes}) so every rank reads the same shards"
        )
    if state["batch_size"] != batch_size:
        raise ValueError(
            f"{checkpoint} was saved with per_device_train_batch_size {state['batch_size']}, now {batch_size}: the "
            "stream position counts batches, so resume with the same batch size"
        )
    position = StreamPosition(
        epoch=state["epoch"],
        batches_in_epoch=state["batches_in_epoch"],
        skipped_before_epoch=state["skipped_before_epoch"],
    )
    return state["step"], position


# --- evaluation ----------------------------------------------------------------------------------------------------


def build_eval_loader(
    data_args: DataArguments, eval_source: str, processor: PyramidClipProcessor
) -> tuple[DataLoader | None, list[str] | None]:
    """The eval split in file order (no sharding: the main process evaluates alone) and its class names."""
    try:
        eval_stream = load_image_text_stream(eval_source, split=data_args.eval_split)
    except (ValueError, FileNotFoundError) as error:
        logger.warning("no evaluation: %s", error)
        return None, None
    if data_args.max_eval_samples:
        eval_stream = eval_stream.take(data_args.max_eval_samples)
    eval_loader = DataLoader(
        eval_stream, batch_size=data_args.per_device_eval_batch_size, collate_fn=EvalCollator(processor)
    )
    return eval_loader, find_class_names(data_args, eval_source)


@torch.no_grad()
def evaluate_zero_shot(
    model: PyramidClipModel,
    processor: PyramidClipProcessor,
    eval_loader: DataLoader,
    class_names: list[str] | None,
    device: torch.device,
) -> dict[str, float]:
    """Zero-shot top-1/top-5 over `class_names` and image<->text recall@k on the eval split.

    The classifier is the normalised text embeddings of "a photo of a {class}."; predictions are image @ text.T.
    For retrieval an image matches every eval caption equal to its own (synthetic captions repeat).
    """
    was_training = model.training
    model.eval()
    image_embeds, text_embeds, labels, captions = [], [], [], []
    for batch in eval_loader:
        pixel_values = batch["pixel_values"].to(device)
        image_features = model.get_image_features(pixel_values=pixel_values).pooler_output
        text_features = model.get_text_features(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).pooler_output
        image_embeds.append(nn.functional.normalize(image_features.float(), dim=-1).cpu())  # (B, P)
        text_embeds.append(nn.functional.normalize(text_features.float(), dim=-1).cpu())  # (B, P)
        labels += batch["labels"]
        captions += batch["captions"]
    metrics: dict[str, float] = {}
    if not captions:
        model.train(was_training)
        return metrics
    image_embeds, text_embeds = torch.cat(image_embeds), torch.cat(text_embeds)  # (N, P)

    if class_names and min(labels) >= 0:
        prompts = processor(text=[PROMPT_TEMPLATE.format(name) for name in class_names])
        class_features = model.get_text_features(
            input_ids=prompts["input_ids"].to(device), attention_mask=prompts["attention_mask"].to(device)
        ).pooler_output
        classifier = nn.functional.normalize(class_features.float(), dim=-1).cpu()  # (C, P)
        scores = image_embeds @ classifier.t()  # (N, C)
        accuracy = load_metric("zero_shot_accuracy").compute(predictions=scores.numpy(), references=labels)
        metrics.update({f"zero_shot_{name}": value for name, value in accuracy.items()})

    caption_ids: dict[str, list[int]] = defaultdict(list)
    for index, caption in enumerate(captions):
        caption_ids[caption].append(index)
    similarity = image_embeds @ text_embeds.t()  # (N_images, N_texts)
    recall = load_metric("retrieval_recall").compute(
        predictions=similarity.numpy(), references=[caption_ids[caption] for caption in captions], recall_at=RECALL_AT
    )
    metrics.update(recall)
    metrics["num_samples"] = float(len(captions))
    model.train(was_training)
    return metrics


# --- training ------------------------------------------------------------------------------------------------------


def _tracker_names(report_to: str) -> list[str] | None:
    """accelerate trackers from `--report_to`; requested ones that are not installed are dropped with a warning."""
    names = [name.strip() for name in report_to.split(",") if name.strip() and name.strip() != "none"]
    available = {str(tracker) for tracker in get_available_trackers()}
    missing = [name for name in names if name != "all" and name not in available]
    if missing:
        logging.getLogger(__name__).warning("--report_to: %s not installed, not logging there", ", ".join(missing))
    return [name for name in names if name not in missing] or None


def parameters_sha256(model: nn.Module) -> str:
    """SHA-256 over every parameter's bytes, in name order (equal on every rank after a DDP step)."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        digest.update(name.encode("utf-8"))
        digest.update(parameter.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class LossWindow:
    """Running sums of the loss terms between two logging steps."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def add(self, outputs: Any) -> None:
        for name in ("loss", *LOSS_TERMS):
            value = getattr(outputs, name)
            if value is not None:  # the clip baseline has no pyramid terms
                self.sums[name] += float(value.detach())
        self.count += 1

    def pop_means(self) -> dict[str, float]:
        means = {f"train/{name}": total / max(self.count, 1) for name, total in self.sums.items()}
        self.sums.clear()
        self.count = 0
        return means


def _append_log(accelerator: Accelerator, output_dir: Path, step: int, values: dict[str, Any]) -> None:
    """Sends `values` to the trackers and appends them to `output_dir/log_history.jsonl` (main process)."""
    accelerator.log(values, step=step)
    if accelerator.is_main_process:
        with open(output_dir / "log_history.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")


def train(
    accelerator: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    stream: TrainStream,
    processor: PyramidClipProcessor,
    eval_loader: DataLoader | None,
    class_names: list[str] | None,
    args: PretrainingArguments,
    global_step: int,
    objective: str = "pyramid",
) -> dict[str, Any]:
    """The step loop from `global_step` to `args.max_steps`; returns the final metrics."""
    output_dir = Path(args.output_dir)
    window = LossWindow()
    first_loss, last_logged, eval_metrics = None, {}, {}
    consumed_keys: list[str] = []
    batches = iter(stream)
    progress = tqdm(
        total=args.max_steps, initial=global_step, desc="pretrain", disable=not accelerator.is_local_main_process
    )
    window_start = time.perf_counter()
    model.train()
    while global_step < args.max_steps:
        # One optimizer step = gradient_accumulation_steps micro-batches (accelerate syncs on the last one).
        for _ in range(args.gradient_accumulation_steps):
            batch = next(batches)
            keys = batch.pop("keys")
            if args.debug_log_keys:
                consumed_keys += keys
            if objective == "clip":  # the baseline sees only the global view and the caption
                batch = {name: batch[name] for name in CLIP_INPUTS}
            with accelerator.accumulate(model):
                outputs = model(**batch, return_loss=True)
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                    lr_scheduler.step()
                optimizer.zero_grad()
            window.add(outputs)
        global_step += 1
        progress.update(1)
        is_last = global_step == args.max_steps

        if global_step % args.logging_steps == 0 or is_last:
            # Every rank computes the same (all-gathered) loss; skip counts are per rank, so they are summed.
            num_skipped = accelerator.reduce(torch.tensor(stream.num_skipped, device=accelerator.device), "sum")
            num_samples = window.count * accelerator.num_processes * batch["pixel_values"].shape[0]
            last_logged = {
                **window.pop_means(),
                "train/learning_rate": lr_scheduler.get_last_lr()[0],
                "train/logit_scale": float(accelerator.unwrap_model(model).logit_scale.detach().exp()),
                "train/epoch": stream.position.epoch,
                "train/num_skipped_samples": int(num_skipped),
                "train/samples_per_second": num_samples / max(time.perf_counter() - window_start, 1e-9),
            }
            first_loss = last_logged["train/loss"] if first_loss is None else first_loss
            _append_log(accelerator, output_dir, global_step, last_logged)
            progress.set_postfix(loss=f"{last_logged['train/loss']:.4f}")
            window_start = time.perf_counter()

        if args.checkpointing_steps and global_step % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, output_dir, global_step, stream, args.checkpoints_total_limit)

        if eval_loader is not None and (is_last or (args.eval_steps and global_step % args.eval_steps == 0)):
            metrics = evaluate_zero_shot(
                accelerator.unwrap_model(model), processor, eval_loader, class_names, accelerator.device
            )
            eval_metrics = {f"eval/{name}": value for name, value in metrics.items()}
            _append_log(accelerator, output_dir, global_step, eval_metrics)
            logger.info("step %d: %s", global_step, json.dumps(eval_metrics))
        accelerator.wait_for_everyone()  # the other ranks wait while the main process evaluates

        if args.stop_after_step is not None and global_step == args.stop_after_step:
            _write_debug_files(accelerator, model, output_dir, consumed_keys, args.debug_log_keys)
            logger.warning("--stop_after_step %d: exiting without finishing (simulated kill)", global_step)
            accelerator.wait_for_everyone()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
    progress.close()
    _write_debug_files(accelerator, model, output_dir, consumed_keys, args.debug_log_keys)
    return {
        **eval_metrics,
        "train/loss_first_window": first_loss if first_loss is not None else math.nan,
        "train/loss_last_window": last_logged.get("train/loss", math.nan),
        "train/num_skipped_samples": last_logged.get("train/num_skipped_samples", 0),
        "global_step": global_step,
    }


def _write_debug_files(
    accelerator: Accelerator, model: nn.Module, output_dir: Path, keys: list[str], enabled: bool
) -> None:
    """With `--debug_log_keys`: this rank's consumed sample keys and the SHA-256 of its parameters."""
    if not enabled:
        return
    rank = accelerator.process_index
    (output_dir / f"keys_rank{rank}.txt").write_text("".join(f"{key}\n" for key in keys))
    (output_dir / f"params_sha256_rank{rank}.txt").write_text(parameters_sha256(accelerator.unwrap_model(model)))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the pretraining; returns the final metrics (eval metrics on the main process, train losses everywhere)."""
    model_args, data_args, training_args = parse_args(argv)
    output_dir = Path(training_args.output_dir)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=training_args.mixed_precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=training_args.gradient_accumulation_steps, sync_with_dataloader=False
        ),
        dataloader_config=DataLoaderConfiguration(dispatch_batches=False),
        log_with=_tracker_names(training_args.report_to),
        project_dir=str(output_dir),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not accelerator.is_main_process:
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
    logger.info("%s", accelerator.state)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    set_seed(training_args.seed)
    resume_checkpoint = resolve_resume_checkpoint(
        training_args.resume_from_checkpoint, output_dir, accelerator.num_processes
    )

    # 1. Data sources.
    if data_args.synthetic:
        train_source = eval_source = str(prepare_synthetic_data(data_args, output_dir, accelerator, training_args.seed))
    else:
        train_source, eval_source = data_args.train_data, data_args.eval_data or data_args.train_data

    # 2. Processor and model (same initial weights on every rank; DDP also broadcasts rank 0's).
    base_config = (
        PyramidClipConfig.from_pretrained(model_args.model_name_or_path)
        if model_args.model_name_or_path
        else PyramidClipConfig.from_preset(model_args.model_preset)
    )
    image_size = model_args.image_size or base_config.vision_config.image_size
    processor = load_or_train_processor(
        model_args,
        train_source,
        data_args.train_split,
        image_size,
        output_dir,
        accelerator,
        reuse_saved=resume_checkpoint is not None,
    )
    model = build_model(
        model_args,
        vocab_size=len(processor.tokenizer),
        roi_feature_dim=processor.image_processor.roi_feature_dim,
    )
    num_parameters = sum(parameter.numel() for parameter in model.parameters())
    logger.info("%.2fM parameters, %d tokens", num_parameters / 1e6, len(processor.tokenizer))

    # 3. Optimizer and schedule; the scheduler is stepped once per optimizer step (not prepared: accelerate would
    # step a prepared one `num_processes` times per step) and checkpointed via register_for_checkpointing.
    optimizer = torch.optim.AdamW(
        weight_decay_param_groups(model, training_args.weight_decay),
        lr=training_args.learning_rate,
        betas=(training_args.adam_beta1, training_args.adam_beta2),
        eps=training_args.adam_epsilon,
    )
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, training_args.warmup_steps, training_args.max_steps)

    # 4. Training stream: prepare() gives each rank num_shards / world_size whole shards.
    skip_counter = SkipCounter()
    train_stream = load_image_text_stream(
        train_source,
        split=data_args.train_split,
        shuffle_buffer=data_args.shuffle_buffer,
        seed=training_args.seed,
        skip_counter=skip_counter,
    )
    if train_stream.num_shards % accelerator.num_processes != 0:
        logger.warning(
            "%d training shards do not divide among %d processes: every rank decodes all of them",
            train_stream.num_shards,
            accelerator.num_processes,
        )
    collator = PyramidBatchCollator(processor, seed=training_args.seed)
    train_loader = DataLoader(
        train_stream,
        batch_size=data_args.per_device_train_batch_size,
        collate_fn=collator,
        num_workers=data_args.dataloader_num_workers,
        drop_last=True,  # equal batch sizes on every rank: the loss all-gathers embeddings
    )
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    accelerator.register_for_checkpointing(lr_scheduler)

    global_step, position = 0, StreamPosition()
    if resume_checkpoint is not None:
        accelerator.load_state(str(resume_checkpoint))
        global_step, position = load_stream_position(
            resume_checkpoint, accelerator, data_args.per_device_train_batch_size
        )
        logger.info("resumed from %s at step %d", resume_checkpoint, global_step)
    stream = TrainStream(accelerator, train_loader, collator, skip_counter, position)

    # 5. Evaluation data (main process only).
    eval_loader, class_names = None, None
    if accelerator.is_main_process:
        eval_loader, class_names = build_eval_loader(data_args, eval_source, processor)

    # 6. Train.
    run_config = {**asdict(model_args), **asdict(data_args), **asdict(training_args)}
    accelerator.init_trackers("pretrain_pyramidclip", config={k: v for k, v in run_config.items() if v is not None})
    metrics = train(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        stream,
        processor,
        eval_loader,
        class_names,
        training_args,
        global_step,
        objective=model_args.objective,
    )

    # 7. Final model, processor and results.
    final_dir = output_dir / "final"
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(final_dir)
        processor.save_pretrained(final_dir)
        results = {"global_step": training_args.max_steps, "metrics": metrics, "config": run_config}
        (final_dir / "eval_results.json").write_text(json.dumps(results, indent=1) + "\n")
        logger.info("final model in %s: %s", final_dir, json.dumps(metrics))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if accelerator.num_processes == 1:
        AcceleratorState._reset_state(reset_partial_state=True)  # lets a later in-process run build a new Accelerator
    return metrics


if __name__ == "__main__":
    main()
    # A clean interpreter shutdown after gloo/DDP intermittently aborts (SIGABRT); see hf_stack.md section 5.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
