"""The loop every `training/pretrain_*.py` / `train_*.py` script shares: accelerate, streams, exact resume, logging.

A script defines its model, processor and collator, then hands them to these pieces:

- arguments: `StreamDataArguments` / `StreamTrainingArguments` (subclass them for the script's own fields) and
  `parse_args`, which reads `--config file.yaml` before the command line (the command line wins);
- `make_accelerator`, `build_optimizer` (AdamW with open_clip's no-decay rule, warmup + cosine);
- the training stream: the script's `DataLoader` over a `datasets` stream goes through `accelerator.prepare` (each
  rank gets whole shards), then `TrainStream` turns it into an endless, exactly resumable batch iterator;
- `prepare_output_dir` (`resolve_resume_checkpoint` + the checks) and `resume`: model, optimizer, scheduler, RNG and
  each rank's stream position;
- `train`: the step loop (accumulation, clipping, scheduler, logging to trackers and `log_history.jsonl`, progress
  bar, checkpoints, periodic evaluation through the script's callback, a simulated kill for tests);
- `save_final`: `save_pretrained` of model + processor, `eval_results.json` and the model card into
  `output_dir/final` (published with `--push_to_hub REPO_ID`).

Why resume is exact (and why not `IterableDataset.state_dict()`, which DESIGN.md suggested): a pass over a rank's
stream is a pure function of (seed, epoch, the rank's shards): the shuffle order comes from `set_epoch`, and the
script's collator seeds its random augmentation from the batch's sample keys and the epoch (see `TrainStream`). A
resumed rank restarts its epoch and drops the batches it had already consumed, so it continues with exactly the batch
the interrupted run would have seen next. `state_dict()` is inexact with a shuffle buffer > 1 and blind to DataLoader
workers' progress.

What a run refuses to do silently (issue 12): train on a stream that skipped more than `--max_skipped_fraction` of
its samples (counts of all ranks, by reason and shard, logged every `logging_steps` and at the end); step on a
non-finite loss (an error naming the step and the batch's sample keys, or with `--skip_nonfinite_steps` a skipped,
counted step on every rank); resume a checkpoint saved with other arguments (each checkpoint stores
`run_arguments.json`; only `RESUME_MAY_CHANGE` may differ) or start fresh over another run's checkpoints (unless
`--overwrite_output_dir`); leave a half-written checkpoint where `latest` finds it (checkpoints are written to
`checkpoint-N.tmp` and renamed when complete on every rank); repeat steps in `log_history.jsonl` after a resume
(entries after the resumed step are dropped).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import datasets
import torch
import transformers
import yaml
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.logging import get_logger
from accelerate.state import AcceleratorState
from accelerate.tracking import get_available_trackers
from accelerate.utils import GradientAccumulationPlugin, gather_object
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_cosine_schedule_with_warmup

from .data import SkipCounter, load_image_stream, load_image_text_stream

__all__ = [
    "StreamDataArguments",
    "StreamPosition",
    "StreamTrainingArguments",
    "TrainStream",
    "batch_seed",
    "build_optimizer",
    "check_run_arguments",
    "exit_cleanly",
    "find_latest_checkpoint",
    "finish",
    "make_accelerator",
    "parse_args",
    "prepare_output_dir",
    "prepare_stream",
    "resolve_resume_checkpoint",
    "resume",
    "run_config",
    "save_checkpoint",
    "save_final",
    "skip_table",
    "train",
    "weight_decay_param_groups",
]

logger = get_logger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
RUN_ARGUMENTS_FILE = "run_arguments.json"
# Fields a resumed run may change: the step budget, and where / how the run (re)starts.
RESUME_MAY_CHANGE = frozenset(
    {
        "max_steps",
        "num_train_steps",
        "output_dir",
        "resume_from_checkpoint",
        "overwrite_output_dir",
        "stop_after_step",
        "push_to_hub",
    }
)


# --- arguments -----------------------------------------------------------------------------------------------------


@dataclass
class StreamDataArguments:
    """Where the data comes from and how it is batched; scripts subclass this for their own data fields."""

    train_data: str | None = field(
        default=None, metadata={"help": "Training data: a builder folder, a tar/parquet glob or a Hub dataset id."}
    )
    eval_data: str | None = field(default=None, metadata={"help": "Eval data (default: `train_data`)."})
    train_split: str = field(default="train", metadata={"help": "Split of `train_data`."})
    eval_split: str = field(default="eval", metadata={"help": "Split of `eval_data`."})
    shuffle_buffer: int | None = field(
        default=1000, metadata={"help": "Shuffle buffer of the training stream (1: shard order only)."}
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per process."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Eval batch size."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes per rank."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on at most this many samples."})


@dataclass
class StreamTrainingArguments:
    """Optimisation, checkpointing, evaluation and logging of a stream training run."""

    output_dir: str = field(metadata={"help": "Checkpoints, logs and the final model go here."})
    max_steps: int = field(default=1000, metadata={"help": "Optimizer steps."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(
        default=0.2, metadata={"help": "AdamW weight decay (not on biases, norms, embeddings, logit_scale)."}
    )
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.98, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1e-6, metadata={"help": "AdamW epsilon."})
    max_grad_norm: float | None = field(default=None, metadata={"help": "Clip the gradient norm (None: no clip)."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warmup steps before the cosine decay."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    mixed_precision: str | None = field(
        default=None, metadata={"help": "no, fp16 or bf16; default: what `accelerate launch` was given."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of model init, stream shuffling and augmentation."})
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
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start fresh: delete the checkpoints, log_history.jsonl and final/ of an earlier run in output_dir "
            "(without it, a run refuses to start fresh where another run left checkpoints)."
        },
    )
    max_skipped_fraction: float | None = field(
        default=0.01,
        metadata={
            "help": "Stop the run when more than this fraction of the samples read so far (all ranks) was skipped as "
            "unreadable or invalid (None: never stop)."
        },
    )
    skip_nonfinite_steps: bool = field(
        default=False,
        metadata={
            "help": "On a NaN/inf loss, skip that optimizer step (gradients zeroed) and count it, instead of "
            "stopping the run with an error naming the step and the batch's sample keys."
        },
    )
    push_to_hub: str | None = field(
        default=None,
        metadata={
            "help": "Publish final/ (safetensors, processor, remote code, model card) to this repo id (org/name) "
            "with `hfvision publish` at the end; its card names this id."
        },
    )

    def __post_init__(self) -> None:
        if self.push_to_hub is not None:  # a bad repo id fails now, not after the training
            from .hub.publish import check_repo_id

            check_repo_id(self.push_to_hub)


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


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """Parses `--config file.yaml` (optional) and the flags of `dataclass_types` with `HfArgumentParser`.

    Checks what every stream run needs: `max_steps` and `gradient_accumulation_steps` >= 1.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument("--config")
    known, rest = config_parser.parse_known_args(argv)
    if known.config:
        rest = _yaml_to_argv(known.config) + rest
    parsed = HfArgumentParser(tuple(dataclass_types)).parse_args_into_dataclasses(args=rest)
    for value in parsed:
        if isinstance(value, StreamTrainingArguments) and (
            value.max_steps < 1 or value.gradient_accumulation_steps < 1
        ):
            raise ValueError("`max_steps` and `gradient_accumulation_steps` must be >= 1")
        fraction = value.max_skipped_fraction if isinstance(value, StreamTrainingArguments) else None
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ValueError(f"`max_skipped_fraction` must be in [0, 1], got {fraction}")
    return tuple(parsed)


# --- setup ---------------------------------------------------------------------------------------------------------


def _tracker_names(report_to: str) -> list[str] | None:
    """accelerate trackers from `--report_to`; requested ones that are not installed are dropped with a warning."""
    names = [name.strip() for name in report_to.split(",") if name.strip() and name.strip() != "none"]
    available = {str(tracker) for tracker in get_available_trackers()}
    missing = [name for name in names if name != "all" and name not in available]
    if missing:
        logging.getLogger(__name__).warning("--report_to: %s not installed, not logging there", ", ".join(missing))
    return [name for name in names if name not in missing] or None


def make_accelerator(args: StreamTrainingArguments) -> Accelerator:
    """The run's `Accelerator` (CPU when no GPU), logging set up, `output_dir` created, seed set.

    Batches are not dispatched from rank 0: every rank reads its own shards. Gradient accumulation is counted by the
    loop (a stream has no length to sync with).
    """
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=args.gradient_accumulation_steps, sync_with_dataloader=False
        ),
        dataloader_config=DataLoaderConfiguration(dispatch_batches=False),
        log_with=_tracker_names(args.report_to),
        project_dir=str(output_dir),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    # accelerate logs every file of every checkpoint at INFO, httpx every Hub request: the script's own lines say
    # what was saved and published
    for chatty in ("accelerate", "httpx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if not accelerator.is_main_process:
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
    logger.debug("%s", accelerator.state)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    transformers.set_seed(args.seed)
    return accelerator


def weight_decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups with open_clip's rule: no decay on biases, norms, embeddings, scalars (ndim < 2 or Embedding).

    Frozen parameters are left out.
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


def build_optimizer(
    model: nn.Module, args: StreamTrainingArguments, param_groups: list[dict[str, Any]] | None = None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over `param_groups` (default: `weight_decay_param_groups`) and linear warmup then cosine decay.

    The scheduler is stepped once per optimizer step by `train`; do not pass it to `accelerator.prepare` (that would
    step it `num_processes` times per step). `resume` registers it for checkpointing.
    """
    optimizer = torch.optim.AdamW(
        param_groups if param_groups is not None else weight_decay_param_groups(model, args.weight_decay),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    return optimizer, get_cosine_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps)


# --- the training stream -------------------------------------------------------------------------------------------


def batch_seed(seed: int, epoch: int, keys: Sequence[str]) -> int:
    """A seed for one batch's random augmentation: a hash of (run seed, epoch, the batch's sample keys).

    The same batch gets the same augmentation in an uninterrupted run, a resumed one (which replays batches) and with
    any number of DataLoader workers, while every batch and epoch gets fresh randomness.
    """
    return zlib.crc32(json.dumps([seed, epoch, list(keys)]).encode("utf-8"))


class EpochAwareCollator(Protocol):
    """A DataLoader collate_fn with an `epoch` attribute (set by `TrainStream` before each pass) for `batch_seed`.

    Its batches carry the samples' `keys` (a list of str), which the loop pops before calling the model.
    """

    epoch: int

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]: ...


def _count_key(reason: str, shard: str) -> str:
    return f"{reason}\t{shard}"


@dataclass
class StreamPosition:
    """Where one rank is in its training stream, and the run's counters; saved per rank in every checkpoint."""

    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches this rank has consumed in `epoch`
    skipped_before_epoch: int = 0  # corrupt samples this rank's stream dropped in earlier epochs
    # This rank's SkipCounter counts of earlier epochs, "reason\tshard" -> n (kept samples under reason "ok").
    counts_before_epoch: dict[str, int] = field(default_factory=dict)
    num_nonfinite_steps: int = 0  # optimizer steps skipped for a non-finite loss (same on every rank)


class TrainStream:
    """This rank's endless micro-batch iterator over the prepared DataLoader, restarting the stream each epoch.

    A resumed rank restarts its epoch and drops the batches it had already consumed (`accelerator.skip_first_batches`:
    they are re-read and re-collated, then discarded). The cost is re-reading up to one epoch of this rank's data.
    A rank whose stream ends starts it again as a new epoch, so all ranks run exactly `max_steps` steps (skipped
    corrupt samples leave ranks with unequal counts; stopping at one rank's end would hang the others).
    """

    def __init__(
        self,
        accelerator: Accelerator,
        loader: DataLoader,
        collator: EpochAwareCollator,
        skip_counter: SkipCounter,
        position: StreamPosition | None = None,
    ) -> None:
        self.accelerator = accelerator
        self.loader = loader
        self.collator = collator
        self.skip_counter = skip_counter
        self.position = position if position is not None else StreamPosition()
        self._at_epoch_start = self._counter_snapshot()

    def _counter_snapshot(self) -> dict[str, int]:
        counts = self.skip_counter.counts(include_ok=True)
        return {_count_key(reason, shard): count for (reason, shard), count in counts.items()}

    def counts(self) -> dict[str, int]:
        """This rank's counts over the whole run (resumes included), `"reason\tshard" -> n`: the skip and drop
        reasons of `SkipCounter` plus `"ok"` for kept samples. A resumed epoch re-reads its start, so the counts of
        the current epoch restart with it."""
        totals = dict(self.position.counts_before_epoch)
        for name, count in self._counter_snapshot().items():
            totals[name] = totals.get(name, 0) + count - self._at_epoch_start.get(name, 0)
        return {name: count for name, count in totals.items() if count}

    def totals(self) -> dict[str, int]:
        """`counts()` summed over shards: reason -> n."""
        totals: dict[str, int] = {}
        for name, count in self.counts().items():
            reason = name.split("\t", 1)[0]
            totals[reason] = totals.get(reason, 0) + count
        return totals

    @property
    def num_skipped(self) -> int:
        """Corrupt samples this rank's stream has dropped, over the whole run (resumes included)."""
        totals = self.totals()
        return sum(totals.get(reason, 0) for reason in self.skip_counter.SKIP_REASONS)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        position = self.position
        while True:
            self._at_epoch_start = self._counter_snapshot()
            self.loader.set_epoch(position.epoch)
            self.collator.epoch = position.epoch
            already_consumed = position.batches_in_epoch
            epoch_loader = (
                self.accelerator.skip_first_batches(self.loader, already_consumed) if already_consumed else self.loader
            )
            batches = iter(epoch_loader)
            # Starting a DataLoader pass draws a base seed from the global RNG, and a resumed run starts one pass
            # more than the run it continues; isolating that draw keeps the model's own random draws (masks,
            # dropout) identical to the uninterrupted run's. So collators must not use the global RNG (`batch_seed`).
            with torch.random.fork_rng(devices=[]):
                batch = next(batches, None)
            while batch is not None:
                position.batches_in_epoch += 1
                yield batch
                batch = next(batches, None)
            if position.batches_in_epoch == 0:
                raise RuntimeError(
                    f"rank {self.accelerator.process_index}'s training stream gave no full batch: it holds fewer "
                    "samples than `per_device_train_batch_size`"
                )
            position.skipped_before_epoch = self.num_skipped
            position.counts_before_epoch = self.counts()
            self._at_epoch_start = self._counter_snapshot()
            position.epoch += 1
            position.batches_in_epoch = 0


# --- checkpoints ---------------------------------------------------------------------------------------------------


def _position_file(checkpoint: Path, rank: int) -> Path:
    return checkpoint / f"stream_position_rank{rank}.json"


def _is_complete(checkpoint: Path, world_size: int) -> bool:
    """Every rank writes its position file after `save_state` finished everywhere, so all of them mark completion."""
    return all(_position_file(checkpoint, rank).is_file() for rank in range(world_size))


def _checkpoint_steps(output_dir: Path) -> list[tuple[int, Path]]:
    suffixes = ((path.name[len(CHECKPOINT_PREFIX) :], path) for path in output_dir.glob(f"{CHECKPOINT_PREFIX}*"))
    return sorted((int(suffix), path) for suffix, path in suffixes if suffix.isdigit())


def find_latest_checkpoint(output_dir: Path, world_size: int) -> Path | None:
    """The complete `checkpoint-STEP` folder with the highest step, or None."""
    complete = [path for _, path in _checkpoint_steps(output_dir) if _is_complete(path, world_size)]
    return complete[-1] if complete else None


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    """`values` as they read back from JSON (tuples become lists, paths and enums strings)."""
    return json.loads(json.dumps(values, default=str))


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: Path,
    step: int,
    stream: TrainStream,
    total_limit: int | None,
    run_arguments: dict[str, Any] | None = None,
) -> Path:
    """`save_state` (model, optimizer, scheduler, RNG), this rank's stream position and the run's arguments, written
    to `checkpoint-STEP.tmp` and renamed to `checkpoint-STEP` once complete on every rank; prunes old checkpoints.

    A kill at any point leaves either the previous complete `checkpoint-STEP` or the new one, never a mix: a
    re-save of the same step (after resuming from an earlier one) moves the old folder aside before the rename.
    """
    checkpoint = output_dir / f"{CHECKPOINT_PREFIX}{step}"
    staging = output_dir / f"{CHECKPOINT_PREFIX}{step}.tmp"
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    # accelerate writes one dataloader state for all ranks (hf_stack.md section 5), so each rank saves its own.
    state = {
        **asdict(stream.position),
        "num_skipped": stream.num_skipped,
        "step": step,
        "world_size": accelerator.num_processes,
        "batch_size": stream.loader.batch_size,
    }
    _position_file(staging, accelerator.process_index).write_text(json.dumps(state, indent=1) + "\n")
    if accelerator.is_main_process:
        arguments = _json_safe(run_arguments or {})
        (staging / RUN_ARGUMENTS_FILE).write_text(json.dumps(arguments, indent=1, sort_keys=True) + "\n")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replaced = output_dir / f"{CHECKPOINT_PREFIX}{step}.old"
        if checkpoint.exists():
            shutil.rmtree(replaced, ignore_errors=True)
            os.replace(checkpoint, replaced)
        os.replace(staging, checkpoint)
        shutil.rmtree(replaced, ignore_errors=True)
        if total_limit:
            for _, stale in _checkpoint_steps(output_dir)[:-total_limit]:
                shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return checkpoint


def _differing_arguments(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    current = _json_safe(current)
    names = (set(saved) | set(current)) - RESUME_MAY_CHANGE
    missing = object()
    return sorted(name for name in names if saved.get(name, missing) != current.get(name, missing))


def check_run_arguments(checkpoint: Path, run_arguments: dict[str, Any]) -> None:
    """Raises if `checkpoint` was saved by a run with other arguments than `run_arguments` (all fields but the step
    budget and the output/resume flags, `RESUME_MAY_CHANGE`); warns for a checkpoint that has no arguments."""
    path = checkpoint / RUN_ARGUMENTS_FILE
    if not path.is_file():
        logger.warning("%s holds no %s: cannot check that it belongs to this run", checkpoint, RUN_ARGUMENTS_FILE)
        return
    saved = json.loads(path.read_text())
    differing = _differing_arguments(saved, run_arguments)
    if differing:
        details = "; ".join(
            f"{name}: checkpoint {saved.get(name, '<unset>')!r}, now {_json_safe(run_arguments).get(name, '<unset>')!r}"
            for name in differing
        )
        raise ValueError(
            f"refusing to resume from {checkpoint}: it belongs to a run with other arguments ({details}). Only "
            f"{', '.join(sorted(RESUME_MAY_CHANGE))} may change on resume; use the same arguments, another "
            "--output_dir, or --overwrite_output_dir to start fresh."
        )


def resolve_resume_checkpoint(
    resume_from_checkpoint: str | None,
    output_dir: Path,
    world_size: int,
    run_arguments: dict[str, Any] | None = None,
) -> Path | None:
    """The checkpoint to resume from: None (fresh start), the latest in `output_dir`, or the given folder.

    With `run_arguments` (the run's `run_config`), a checkpoint saved with other arguments is refused
    (`check_run_arguments`).
    """
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        checkpoint = find_latest_checkpoint(output_dir, world_size)
        if checkpoint is None:
            logger.info("no checkpoint in %s yet: starting fresh", output_dir)  # the normal first run
    else:
        checkpoint = Path(resume_from_checkpoint)
        if not _is_complete(checkpoint, world_size):
            raise ValueError(
                f"{checkpoint} is not a complete checkpoint of a {world_size}-process run (missing "
                "stream_position_rank*.json; resuming needs the same number of processes)"
            )
    if checkpoint is not None and run_arguments is not None:
        check_run_arguments(checkpoint, run_arguments)
    return checkpoint


def prepare_output_dir(
    accelerator: Accelerator, args: StreamTrainingArguments, run_arguments: dict[str, Any]
) -> Path | None:
    """Readies `output_dir` for this run and returns the checkpoint to resume from (None: a fresh start).

    - `--overwrite_output_dir`: deletes an earlier run's checkpoints, `log_history.jsonl` and `final/`; fresh start.
    - Removes half-written checkpoint folders (`checkpoint-N.tmp` / `.old`) a kill left behind.
    - `--resume_from_checkpoint`: `resolve_resume_checkpoint` with the arguments check.
    - A fresh start where complete checkpoints exist is refused (they would mix with this run's).
    """
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process and output_dir.is_dir():
        for path in output_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            if path.is_dir() and path.suffix in (".tmp", ".old"):
                shutil.rmtree(path, ignore_errors=True)
        if args.overwrite_output_dir:
            for _, path in _checkpoint_steps(output_dir):
                shutil.rmtree(path)
            shutil.rmtree(output_dir / "final", ignore_errors=True)
            (output_dir / "log_history.jsonl").unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    if args.overwrite_output_dir:
        return None
    checkpoint = resolve_resume_checkpoint(
        args.resume_from_checkpoint, output_dir, accelerator.num_processes, run_arguments
    )
    if checkpoint is None:
        existing = find_latest_checkpoint(output_dir, accelerator.num_processes)
        if existing is not None:
            raise ValueError(
                f"{output_dir} holds checkpoints of another run (latest: {existing.name}); pass "
                "--resume_from_checkpoint latest to continue it, --overwrite_output_dir to start fresh, or another "
                "--output_dir"
            )
    return checkpoint


def resume(
    accelerator: Accelerator,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    checkpoint: Path | None,
    batch_size: int,
) -> tuple[int, StreamPosition]:
    """Registers the scheduler for checkpointing and, given a checkpoint, restores the prepared objects from it.

    Returns this rank's (global step, stream position): (0, start) without a checkpoint.
    """
    accelerator.register_for_checkpointing(lr_scheduler)
    if checkpoint is None:
        return 0, StreamPosition()
    accelerator.load_state(str(checkpoint))
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
        counts_before_epoch=state.get("counts_before_epoch", {}),
        num_nonfinite_steps=state.get("num_nonfinite_steps", 0),
    )
    logger.info("resumed from %s at step %d", checkpoint, state["step"])
    return state["step"], position


def prepare_stream(
    accelerator: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    source: str,
    collator: EpochAwareCollator,
    data_args: StreamDataArguments,
    seed: int,
    resume_checkpoint: Path | None,
    *,
    captions: bool = False,
    load_stream: Callable[..., Any] | None = None,
) -> tuple[nn.Module, torch.optim.Optimizer, TrainStream, int]:
    """The training stream of `source`, prepared with the model and optimizer, resumed from `resume_checkpoint`.

    Reads `source` with `load_image_text_stream` (`captions=True`) or `load_image_stream`, or with `load_stream` when
    given (any reader called as `load_stream(source, split=, shuffle_buffer=, seed=, skip_counter=)` that returns a
    sharded `datasets.IterableDataset` and counts skips in the `SkipCounter`), batches it with `collator`
    (full batches only: equal batch sizes on every rank), passes model, optimizer and loader through
    `accelerator.prepare` (each rank gets `num_shards / world_size` whole shards) and restores a checkpoint.

    Returns:
        The prepared model and optimizer, this rank's `TrainStream`, and the global step to start from.
    """
    skip_counter = SkipCounter()
    load = load_stream or (load_image_text_stream if captions else load_image_stream)
    stream = load(
        source,
        split=data_args.train_split,
        shuffle_buffer=data_args.shuffle_buffer,
        seed=seed,
        skip_counter=skip_counter,
    )
    if stream.num_shards % accelerator.num_processes != 0:
        logger.warning(
            "%d training shards do not divide among %d processes: every rank decodes all of them",
            stream.num_shards,
            accelerator.num_processes,
        )
    loader = DataLoader(
        stream,
        batch_size=data_args.per_device_train_batch_size,
        collate_fn=collator,
        num_workers=data_args.dataloader_num_workers,
        drop_last=True,
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    global_step, position = resume(accelerator, lr_scheduler, resume_checkpoint, data_args.per_device_train_batch_size)
    return model, optimizer, TrainStream(accelerator, loader, collator, skip_counter, position), global_step


# --- the loop ------------------------------------------------------------------------------------------------------


def parameters_sha256(model: nn.Module) -> str:
    """SHA-256 over every parameter's bytes, in name order (equal on every rank after a DDP step)."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        digest.update(name.encode("utf-8"))
        digest.update(parameter.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class LossWindow:
    """Running sums of the loss terms (output fields) between two logging steps."""

    def __init__(self, terms: Sequence[str]) -> None:
        self.terms = ("loss", *terms)
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def add(self, outputs: Any) -> None:
        for name in self.terms:
            value = getattr(outputs, name, None)
            if value is not None:  # e.g. a baseline objective without some terms
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


def _write_debug_files(
    accelerator: Accelerator, model: nn.Module, output_dir: Path, keys: list[str], enabled: bool
) -> None:
    """With `--debug_log_keys`: this rank's consumed sample keys and the SHA-256 of its parameters."""
    if not enabled:
        return
    rank = accelerator.process_index
    (output_dir / f"keys_rank{rank}.txt").write_text("".join(f"{key}\n" for key in keys))
    (output_dir / f"params_sha256_rank{rank}.txt").write_text(parameters_sha256(accelerator.unwrap_model(model)))


def _truncate_log_history(output_dir: Path, step: int) -> None:
    """Drops the entries after `step` from `log_history.jsonl` (a resumed run logs those steps again; a fresh run,
    `step` 0, starts an empty history). A torn last line is dropped too."""
    path = output_dir / "log_history.jsonl"
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("step", math.inf) <= step:
            kept.append(line + "\n")
    temporary = path.with_suffix(".jsonl.tmp")
    temporary.write_text("".join(kept), encoding="utf-8")
    os.replace(temporary, path)


def _reduced_totals(accelerator: Accelerator, stream: TrainStream, samples: int) -> tuple[dict[str, int], int]:
    """Every rank's reason totals (skips, drops, "ok") summed over ranks, and the summed `samples`."""
    counter = stream.skip_counter
    reasons = (*counter.SKIP_REASONS, *counter.DROP_REASONS, "ok")
    totals = stream.totals()
    values = torch.tensor([totals.get(reason, 0) for reason in reasons] + [samples], device=accelerator.device)
    values = accelerator.reduce(values, "sum").tolist()
    return dict(zip(reasons, (int(value) for value in values[:-1]), strict=True)), int(values[-1])


def skip_table(accelerator: Accelerator, stream: TrainStream) -> list[dict[str, Any]]:
    """Skipped samples and dropped annotations of all ranks by (reason, shard), largest first (a collective: call
    it on every rank)."""
    counts = stream.counts()
    gathered = gather_object([counts]) if accelerator.num_processes > 1 else [counts]
    merged: dict[str, int] = defaultdict(int)
    for rank_counts in gathered:
        for name, count in rank_counts.items():
            if not name.startswith("ok\t"):
                merged[name] += count
    rows = [
        {"reason": name.split("\t", 1)[0], "shard": name.split("\t", 1)[1], "count": count}
        for name, count in merged.items()
    ]
    return sorted(rows, key=lambda row: (-row["count"], row["reason"], row["shard"]))


def _skip_logs(totals: dict[str, int], stream: TrainStream) -> dict[str, Any]:
    counter = stream.skip_counter
    skipped = sum(totals[reason] for reason in counter.SKIP_REASONS)
    values: dict[str, Any] = {
        "train/num_skipped_samples": skipped,
        "train/skipped_fraction": skipped / max(skipped + totals["ok"], 1),
    }
    for reason in (*counter.SKIP_REASONS, *counter.DROP_REASONS):
        if totals[reason]:
            values[f"train/skipped/{reason}"] = totals[reason]
    return values


def _check_skipped_fraction(
    accelerator: Accelerator, stream: TrainStream, logs: dict[str, Any], args: StreamTrainingArguments, step: int
) -> None:
    """Stops the run (every rank: the counts are reduced) when too large a fraction of the samples was skipped."""
    if args.max_skipped_fraction is None or logs["train/skipped_fraction"] <= args.max_skipped_fraction:
        return
    rows = skip_table(accelerator, stream)
    worst = ", ".join(f"{row['reason']} in {row['shard']}: {row['count']}" for row in rows[:10])
    raise RuntimeError(
        f"step {step}: {logs['train/num_skipped_samples']} of the samples read so far were skipped "
        f"({logs['train/skipped_fraction']:.2%} > --max_skipped_fraction {args.max_skipped_fraction:.2%}); by reason "
        f"and shard: {worst}. Fix or remove those shards, or raise --max_skipped_fraction."
    )


def _is_finite(loss: torch.Tensor) -> bool:
    return bool(torch.isfinite(loss.detach()).all())


def train(
    accelerator: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    stream: TrainStream,
    args: StreamTrainingArguments,
    global_step: int,
    *,
    forward: Callable[[nn.Module, dict[str, Any]], Any],
    loss_terms: Sequence[str] = (),
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    extra_logs: Callable[[nn.Module], dict[str, float]] | None = None,
    description: str = "train",
    run_arguments: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The step loop from `global_step` to `args.max_steps`; returns the final metrics.

    Safety: a non-finite loss on any rank stops the run with the step and the batch's sample keys, or with
    `--skip_nonfinite_steps` skips that optimizer step on every rank (gradients of all its micro-batches zeroed, no
    scheduler step) and counts it (`train/num_nonfinite_steps`). The skipped-sample counts of all ranks are logged
    by reason with every log entry, checked against `--max_skipped_fraction`, and written by (reason, shard) as the
    last entry of `log_history.jsonl` (`data/skipped`) and in the metrics. Entries of `log_history.jsonl` after
    `global_step` (from a run that went further before it was killed) are dropped first.

    Args:
        forward: `(model, batch) -> outputs` with `outputs.loss`; the batch is the collator's, minus `keys`.
        loss_terms: Output fields averaged and logged next to `loss` (`train/<name>`).
        evaluate: `(unwrapped model) -> metrics`, run on the main process every `eval_steps` and at the end (the
            model is in training mode when called; switch and restore yourself). Logged as `eval/<name>`.
        extra_logs: `(unwrapped model) -> values` logged with the losses (e.g. a temperature).
        description: Label of the progress bar.
        run_arguments: The run's arguments (`run_config`), stored in every checkpoint so that a resume with other
            arguments is refused; default: `args` alone.
    """
    output_dir = Path(args.output_dir)
    run_arguments = run_arguments if run_arguments is not None else asdict(args)
    if accelerator.is_main_process:
        _truncate_log_history(output_dir, global_step)
    window = LossWindow(loss_terms)
    first_loss, last_logged, eval_metrics = None, {}, {}
    consumed_keys: list[str] = []
    batches = iter(stream)
    progress = tqdm(
        total=args.max_steps, initial=global_step, desc=description, disable=not accelerator.is_local_main_process
    )
    window_start, window_samples = time.perf_counter(), 0
    # Loader throughput: samples of this run, the loop's wall time and the part of it spent waiting for batches.
    run_start, run_samples, data_seconds = time.perf_counter(), 0, 0.0
    model.train()
    while global_step < args.max_steps:
        # One optimizer step = gradient_accumulation_steps micro-batches (accelerate syncs on the last one).
        nonfinite_keys: list[str] = []
        for _ in range(args.gradient_accumulation_steps):
            fetch_start = time.perf_counter()
            batch = next(batches)
            data_seconds += time.perf_counter() - fetch_start
            keys = batch.pop("keys")
            window_samples += len(keys)
            run_samples += len(keys)
            if args.debug_log_keys:
                consumed_keys += keys
            with accelerator.accumulate(model):
                outputs = forward(model, batch)
                finite = _is_finite(outputs.loss)
                if not finite:
                    nonfinite_keys += keys
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients:
                    # Every rank learns whether any rank saw a non-finite loss in this step, so all act alike.
                    flags = torch.tensor([len(nonfinite_keys) > 0], dtype=torch.int64, device=accelerator.device)
                    ranks_nonfinite = int(accelerator.reduce(flags, "sum").item())
                    if ranks_nonfinite and not args.skip_nonfinite_steps:
                        where = f"batch keys {nonfinite_keys}" if nonfinite_keys else "on another rank"
                        raise FloatingPointError(
                            f"non-finite loss at global step {global_step + 1} (rank {accelerator.process_index}, "
                            f"{where}); the weights are left as after step {global_step}. Check those samples, "
                            "lower the learning rate, or pass --skip_nonfinite_steps to skip such steps."
                        )
                    if ranks_nonfinite:
                        stream.position.num_nonfinite_steps += 1
                        logger.warning(
                            "step %d: non-finite loss (%s); optimizer step skipped",
                            global_step + 1,
                            nonfinite_keys or "another rank",
                        )
                    else:
                        if args.max_grad_norm:
                            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                        optimizer.step()
                        if not accelerator.optimizer_step_was_skipped:
                            lr_scheduler.step()
                optimizer.zero_grad()
            if finite:
                window.add(outputs)
        global_step += 1
        progress.update(1)
        is_last = global_step == args.max_steps

        if global_step % args.logging_steps == 0 or is_last:
            # Skip counts and sample counts are per rank, so they are summed.
            totals, samples = _reduced_totals(accelerator, stream, window_samples)
            last_logged = {
                **window.pop_means(),
                "train/learning_rate": lr_scheduler.get_last_lr()[0],
                "train/epoch": stream.position.epoch,
                **_skip_logs(totals, stream),
                "train/num_nonfinite_steps": stream.position.num_nonfinite_steps,
                "train/samples_per_second": float(samples) / max(time.perf_counter() - window_start, 1e-9),
                **(extra_logs(accelerator.unwrap_model(model)) if extra_logs else {}),
            }
            first_loss = last_logged.get("train/loss") if first_loss is None else first_loss
            _append_log(accelerator, output_dir, global_step, last_logged)
            if "train/loss" in last_logged:
                progress.set_postfix(loss=f"{last_logged['train/loss']:.4f}")
            window_start, window_samples = time.perf_counter(), 0
            _check_skipped_fraction(accelerator, stream, last_logged, args, global_step)

        if args.checkpointing_steps and global_step % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, output_dir, global_step, stream, args.checkpoints_total_limit, run_arguments)

        if (
            evaluate is not None
            and accelerator.is_main_process
            and (is_last or (args.eval_steps and global_step % args.eval_steps == 0))
        ):
            eval_metrics = {f"eval/{name}": value for name, value in evaluate(accelerator.unwrap_model(model)).items()}
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
    throughput = _throughput_logs(run_samples, time.perf_counter() - run_start, data_seconds)
    logger.info(
        "data: %d samples in %.1f s on this rank; the model consumed %.1f samples/s while computing; the loop waited "
        "%.1f s (%.0f%%) for batches",
        run_samples,
        throughput["train/run_seconds"],
        throughput["train/compute_samples_per_second"],
        data_seconds,
        100 * throughput["train/data_wait_fraction"],
    )
    _write_debug_files(accelerator, model, output_dir, consumed_keys, args.debug_log_keys)
    skipped = skip_table(accelerator, stream)
    if accelerator.is_main_process:
        with open(output_dir / "log_history.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": global_step, "data/skipped": skipped}) + "\n")
        if skipped:
            logger.warning(
                "skipped or dropped during the run, by reason and shard:\n%s",
                "\n".join(f"  {row['reason']:<20} {row['count']:>8}  {row['shard']}" for row in skipped),
            )
        else:
            logger.info("no sample was skipped")
    return {
        **eval_metrics,
        "train/loss_first_window": first_loss if first_loss is not None else math.nan,
        "train/loss_last_window": last_logged.get("train/loss", math.nan),
        "train/num_skipped_samples": last_logged.get("train/num_skipped_samples", 0),
        "train/num_nonfinite_steps": stream.position.num_nonfinite_steps,
        **throughput,
        "data/skipped": skipped,
        "global_step": global_step,
    }


def _throughput_logs(samples: int, run_seconds: float, data_seconds: float) -> dict[str, float]:
    """This rank's data throughput over a run: the samples per second the model consumes when a batch is ready
    (wall time minus the waits for batches) and the fraction of the wall time spent waiting for the loader. A wait
    fraction near 0 means the loader delivers at least what the model consumes."""
    compute_seconds = max(run_seconds - data_seconds, 1e-9)
    return {
        "train/run_seconds": run_seconds,
        "train/compute_samples_per_second": samples / compute_seconds,
        "train/data_wait_fraction": data_seconds / max(run_seconds, 1e-9),
    }


# --- the end -------------------------------------------------------------------------------------------------------


def save_final(
    accelerator: Accelerator,
    model: nn.Module,
    processor: Any,
    output_dir: Path,
    metrics: dict[str, Any],
    run_config: dict[str, Any],
    card_pictures: Callable[[Path], None] | None = None,
) -> Path:
    """On the main process: `save_pretrained` of model and processor (safetensors), `eval_results.json` and the model
    card `README.md` (`hfvision.hub.card.write_model_card`: the method's template, the measured results, the run's
    hyperparameters); with `--push_to_hub REPO_ID` (`run_config["push_to_hub"]`) the folder is then published with
    `hfvision.hub.publish` (no pickles, the card as README.md).

    Args:
        accelerator: the run's accelerator.
        model: the trained model (wrapped or not).
        processor: its processor (or a pipeline, whose `save_pretrained` also writes the pipeline's code).
        output_dir: the run's folder; the model goes to `output_dir/final`.
        metrics: the final metrics (`train` returns them).
        run_config: the run's arguments (`run_config`).
        card_pictures: writes the pictures the card shows into the folder it is given, before the card is rendered.

    Returns `output_dir/final`.
    """
    from .hub.card import MODEL_TYPE_METHODS, write_model_card
    from .hub.publish import publish

    final_dir = Path(output_dir) / "final"
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(final_dir)
        processor.save_pretrained(final_dir)
        results = {"global_step": metrics.get("global_step"), "metrics": metrics, "config": run_config}
        (final_dir / "eval_results.json").write_text(json.dumps(results, indent=1) + "\n")
        if card_pictures is not None:
            card_pictures(final_dir)
        _plot_training_curves(output_dir, final_dir)
        model_type = accelerator.unwrap_model(model).config.model_type
        if model_type in MODEL_TYPE_METHODS:
            write_model_card(final_dir)
        else:  # a transformers baseline (e.g. ViTMAE beside MCMAE): hfvision has no card template for it
            logger.warning("no model card in %s: %r is not the model_type of an hfvision method", final_dir, model_type)
        logger.info("final model in %s: %s", final_dir, json.dumps(metrics))
        if run_config.get("push_to_hub"):
            uploaded = publish(final_dir, run_config["push_to_hub"], commit_message=f"{Path(output_dir).name} final")
            logger.info("published %s to %s", ", ".join(uploaded), run_config["push_to_hub"])
    accelerator.wait_for_everyone()
    return final_dir


def _plot_training_curves(output_dir: Path, final_dir: Path) -> None:
    """Draw the run's logged curves into `final_dir/training_curves.png` (the card shows it) when matplotlib, the
    `plots` extra, is installed; without it the card simply has no curves."""
    from .plotting import plot_training_curves

    try:
        plot_training_curves(output_dir, final_dir / "training_curves.png")
    except ImportError as error:
        logger.info("no training curves in the card: %s", error)


def finish(accelerator: Accelerator) -> None:
    """Ends the trackers; a one-process run also resets accelerate's state so a later in-process run can start."""
    accelerator.end_training()
    if accelerator.num_processes == 1:
        AcceleratorState._reset_state(reset_partial_state=True)


def run_config(*arguments: Any) -> dict[str, Any]:
    """The run's arguments (dataclasses) as one flat dict, for trackers and `eval_results.json`."""
    merged: dict[str, Any] = {}
    for value in arguments:
        merged.update(asdict(value))
    return merged


def exit_cleanly() -> None:
    """Exit after a script's `main`: a clean interpreter shutdown after gloo/DDP intermittently aborts (SIGABRT;
    hf_stack.md section 5), so flush and leave with `os._exit(0)`."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
