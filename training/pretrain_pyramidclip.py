"""Pretrain PyramidCLIP (Gao et al., NeurIPS 2022, arXiv 2204.14095) on an image-text stream with Accelerate.

Usage (one or many processes, CPU or GPUs; a YAML file gives defaults that command-line flags override)::

    accelerate launch training/pretrain_pyramidclip.py --config training/configs/pretrain_pyramidclip_tiny.yaml
    python training/pretrain_pyramidclip.py --config training/configs/pretrain_pyramidclip_tiny.yaml --max_steps 50
    # two CPU processes (gloo); `--cpu --num_processes 2` would silently run one:
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
        training/pretrain_pyramidclip.py --config training/configs/pretrain_pyramidclip_tiny.yaml

What it does, in order:
1. data: `--synthetic` first writes seeded synthetic scenes (WebDataset tars, a shard count that is a multiple of the
   world size) into `output_dir/synthetic_data` (or `--synthetic_data_dir`, reused when built with the same arguments)
   on the main process; otherwise `--train_data` / `--eval_data` name builder folders, tar globs or Hub ids read by
   `hfvision.data.load_image_text_stream`;
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
   scheduler, RNG and each rank's stream position (`hfvision.training` says why resume is exact);
6. every `eval_steps` and at the end: zero-shot top-1/top-5 accuracy ("a photo of a {class}." over
   `class_names.json`) and image<->text recall@k on the eval split, on the main process;
7. at the end: `save_pretrained` of the model and processor into `output_dir/final` (safetensors) with
   `eval_results.json` (final metrics + the run's arguments).

`--objective` picks the paper's objective or one of the ablations that tell its parts apart, on the same towers, data
and steps (`OBJECTIVES`): `pyramid` (the paper's: the six-term pyramid loss, alpha 0.2), `pyramid_hard` (the same with
alpha 0), `clip` (CLIP's InfoNCE on the global view and the caption), `clip_soft` (that single pair with alpha 0.2)
and `clip_multi` (CLIP with the summary and attribute text as extra captions: plain InfoNCE of the global view against
each of the three texts, averaged). With `--model_name_or_path` the objective's settings replace the checkpoint's.

Deviations from the paper's training recipe: region features are the processor's pixel stand-ins (no detector ships
offline); with gradient accumulation each micro-batch is its own contrastive batch (no feature caching).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

import hfvision  # noqa: F401  (registers PyramidCLIP with the Auto classes)
from hfvision import training
from hfvision.data import build_synthetic_scenes, load_image_text_stream
from hfvision.metrics import load_metric
from hfvision.models.pyramidclip import (
    PyramidClipConfig,
    PyramidClipImageProcessor,
    PyramidClipModel,
    PyramidClipProcessor,
    train_clip_tokenizer,
)
from hfvision.models.pyramidclip.modeling_pyramidclip import LOSS_TERMS, MULTI_CAPTION_LOSS_TERMS
from hfvision.training import StreamDataArguments, StreamTrainingArguments

logger = get_logger(__name__)

PROMPT_TEMPLATE = "a photo of a {}."
RECALL_AT = (1, 5, 10)
PAPER_ALPHA = 0.2  # the paper's softening of the negatives
CLIP_INPUTS = ("input_ids", "attention_mask", "pixel_values")
TEXT_VIEW_INPUTS = ("summary_input_ids", "summary_attention_mask", "attribute_input_ids", "attribute_attention_mask")


@dataclass(frozen=True)
class Objective:
    """One `--objective`: the config settings it trains with, the batch inputs it reads and its logged loss terms."""

    config: dict[str, Any]
    inputs: tuple[str, ...] | None = None  # None: the whole pyramid batch
    loss_terms: tuple[str, ...] = ()

    def select(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The part of a pyramid batch (`PyramidBatchCollator`) this objective trains on."""
        return dict(batch) if self.inputs is None else {name: batch[name] for name in self.inputs}


# The paper's objective and the ablations that separate its parts (softening, text pyramid, visual pyramid).
OBJECTIVES: dict[str, Objective] = {
    "pyramid": Objective({"softening_alpha": PAPER_ALPHA, "objective": "pyramid"}, loss_terms=LOSS_TERMS),
    "pyramid_hard": Objective({"softening_alpha": 0.0, "objective": "pyramid"}, loss_terms=LOSS_TERMS),
    "clip": Objective({"softening_alpha": 0.0}, CLIP_INPUTS),
    "clip_soft": Objective({"softening_alpha": PAPER_ALPHA}, CLIP_INPUTS),
    "clip_multi": Objective(
        {"softening_alpha": 0.0, "objective": "multi_caption"},
        CLIP_INPUTS + TEXT_VIEW_INPUTS,
        MULTI_CAPTION_LOSS_TERMS,
    ),
}


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
            "help": "pyramid: the PyramidCLIP objective (alpha 0.2); pyramid_hard: the same with alpha 0; clip: the "
            "baseline, plain CLIP InfoNCE between the global view and the caption; clip_soft: that pair with alpha "
            "0.2; clip_multi: CLIP with the summary and attribute text as extra captions (plain InfoNCE of the global "
            "view against each of the three texts, averaged). Same encoders and data for all."
        },
    )
    tokenizer_vocab_size: int = field(default=1000, metadata={"help": "Vocabulary size of the trained tokenizer."})
    tokenizer_train_samples: int = field(
        default=10_000, metadata={"help": "The tokenizer is trained on this many first captions of the stream."}
    )


@dataclass
class DataArguments(StreamDataArguments):
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
    synthetic_data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the synthetic scenes (default: output_dir/synthetic_data). Scenes already there that "
            "were built with the same arguments are reused (runs that differ only in the objective share one build); "
            "otherwise they are rebuilt in place."
        },
    )


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[ModelArguments, DataArguments, StreamTrainingArguments]:
    """Parses `--config file.yaml` (optional) and the flags of the three argument dataclasses."""
    model_args, data_args, training_args = training.parse_args(
        (ModelArguments, DataArguments, StreamTrainingArguments), argv
    )
    if model_args.objective not in OBJECTIVES:
        raise ValueError(f"`objective` must be one of {tuple(OBJECTIVES)}, got {model_args.objective!r}")
    if data_args.synthetic and data_args.train_data:
        raise ValueError("pass either `--synthetic` or `--train_data`, not both")
    if not data_args.synthetic and not data_args.train_data:
        raise ValueError("pass `--train_data` (a builder folder, tar glob or Hub id) or `--synthetic`")
    return model_args, data_args, training_args


# --- data, tokenizer, model ----------------------------------------------------------------------------------------


def prepare_synthetic_data(data_args: DataArguments, output_dir: Path, accelerator: Accelerator, seed: int) -> Path:
    """Builds the synthetic scenes once (main process first; the others then find them) and returns their folder.

    Scenes whose `build_args.json` equals this run's build arguments are reused as they are.
    """
    data_dir = Path(data_args.synthetic_data_dir) if data_args.synthetic_data_dir else output_dir / "synthetic_data"
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
    (pooled pixels + box), which replace the paper's 2052-d detector features. Either way the model trains with the
    settings of `--objective`.
    """
    objective_overrides = OBJECTIVES[model_args.objective].config
    if model_args.model_name_or_path:
        model = PyramidClipModel.from_pretrained(model_args.model_name_or_path, **objective_overrides)
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
    vision_overrides = {"roi_feature_dim": roi_feature_dim}
    if model_args.image_size is not None:
        vision_overrides["image_size"] = model_args.image_size
    config = PyramidClipConfig.from_preset(
        model_args.model_preset,
        text_config={"vocab_size": vocab_size},
        vision_config=vision_overrides,
        **objective_overrides,
    )
    return PyramidClipModel(config)


class PyramidBatchCollator:
    """collate_fn of the training DataLoader: stream samples -> the processor's pyramid batch (+ their keys).

    The crop seed is `hfvision.training.batch_seed` of (seed, epoch, the batch's sample keys), so resumed runs replay
    the same crops. `epoch` is set by `TrainStream` before each pass; workers copy it when the pass's iterator starts.
    """

    def __init__(self, processor: PyramidClipProcessor, seed: int) -> None:
        self.processor = processor
        self.seed = seed
        self.epoch = 0

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [sample["__key__"] for sample in samples]
        crop_seed = training.batch_seed(self.seed, self.epoch, keys)
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


# --- main ----------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the pretraining; returns the final metrics (eval metrics on the main process, train losses everywhere)."""
    model_args, data_args, training_args = parse_args(argv)
    output_dir = Path(training_args.output_dir)
    accelerator = training.make_accelerator(training_args)
    run_config = training.run_config(model_args, data_args, training_args)
    # Refuses to resume another run's checkpoint or to mix a fresh run into one (--overwrite_output_dir starts over).
    resume_checkpoint = training.prepare_output_dir(accelerator, training_args, run_config)

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
    optimizer, lr_scheduler = training.build_optimizer(model, training_args)

    # 3. Training stream: prepare() gives each rank whole shards; a checkpoint restores everything.
    collator = PyramidBatchCollator(processor, seed=training_args.seed)
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
        captions=True,
    )

    # 4. Evaluation (main process only).
    evaluate = None
    if accelerator.is_main_process:
        eval_loader, class_names = build_eval_loader(data_args, eval_source, processor)
        if eval_loader is not None:

            def evaluate(unwrapped: nn.Module) -> dict[str, float]:
                return evaluate_zero_shot(unwrapped, processor, eval_loader, class_names, accelerator.device)

    objective = OBJECTIVES[model_args.objective]

    def forward(model: nn.Module, batch: dict[str, Any]) -> Any:
        return model(**objective.select(batch), return_loss=True)  # the CLIP ablations read part of the pyramid

    # 5. Train.
    accelerator.init_trackers("pretrain_pyramidclip", config={k: v for k, v in run_config.items() if v is not None})
    metrics = training.train(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        stream,
        training_args,
        global_step,
        forward=forward,
        loss_terms=objective.loss_terms,
        evaluate=evaluate,
        extra_logs=lambda unwrapped: {"train/logit_scale": float(unwrapped.logit_scale.detach().exp())},
        description="pretrain",
        run_arguments=run_config,
    )

    # 6. Final model, processor and results.
    training.save_final(accelerator, model, processor, output_dir, metrics, run_config)
    training.finish(accelerator)
    return metrics


if __name__ == "__main__":
    main()
    training.exit_cleanly()
