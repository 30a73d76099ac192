"""Fine-tune any hfvision model with an image-classification head, with `transformers.Trainer`.

Works for every checkpoint that `AutoModelForImageClassification` and `AutoImageProcessor` open (a local folder or a
Hub id; `--trust_remote_code` for checkpoints carrying their own code). The head is re-created when the data set's
class count differs from the checkpoint's, and `config.id2label` / `label2id` are set from the data set's class
names. With `--zero_shot_init` a model offering `init_classifier_from_text` (CLIP-style models such as PyramidCLIP)
starts from its zero-shot classifier, built from the prompts "a photo of a {class name}." tokenised by the
checkpoint's `AutoProcessor`. Models with LPS layers (`gumbel_tau` buffers) train with `GumbelTemperatureCallback`,
which anneals the Gumbel-softmax temperature as a function of the global step (`--gumbel_tau_*`; off with
`--anneal_gumbel_tau false`). The model is evaluated before and after training (top-1 / top-5 accuracy from the
shipped `zero_shot_accuracy` metric); the final model and its processor are saved with `save_pretrained`
(safetensors), the metrics as `eval_results.json`, the run's arguments as `training_config.json` and the model card
`README.md` (the method's template, `hfvision.hub.card.write_model_card`: the accuracy after fine-tuning beside the
same model's before, `base_model` when `--model_name_or_path` is a Hub id) in `--output_dir`. With
`--push_to_hub --hub_model_id org/name` the final model is published with `hfvision.hub.publish` (safetensors,
processor, remote code and that card, after the same checks as `hfvision publish`), never with Trainer's own push,
which uploads the output folder as it is, pickles (`training_args.bin`) included, with Trainer's generic card;
intermediate checkpoints are not pushed.

The fine-tuning recipe of MAE-style papers (MAE, ConvMAE/MCMAE: `main_finetune.py` and `util/lr_decay.py` of their
official code), each part an option, all off by default:
- `--layer_decay 0.65`: layer-wise learning-rate decay. Parameters before the first transformer block (patch
  embeddings, position table, CLS token; for MCMAE its two conv stages and the stage-3 embedding) are layer 0,
  transformer block i is layer i + 1, everything after it (final / pooler norm, head) layer L + 1 with L blocks; a
  parameter of layer l trains at `learning_rate * layer_decay ** (L + 1 - l)`. With it the weight-decay split is the
  official one (no decay for 1-D parameters, the position table and the CLS token). Implemented in
  `ImageClassificationTrainer.create_optimizer` (the groups' learning rates then follow the Trainer's scheduler);
  supported for MCMAE (`mcmae`) and ViT (`vit`, MAE checkpoints included).
- `--drop_path_rate 0.1`: stochastic depth, set on the checkpoint's config (models whose config has the field, e.g.
  MCMAE: linear in depth up to this rate, as the official code); transformers' ViT has none.
- `--mixup 0.8 --cutmix 1.0` (Beta concentrations) with `--label_smoothing_factor 0.1` (Trainer's own argument):
  timm's batch-mode Mixup, as the official fine-tuning runs it: per training batch, cutmix with probability 1/2
  (when both are on), the batch mixed with itself reversed, the targets the same mix of label-smoothed one-hot
  vectors (`MixupCutmixCollator`, training batches only). The model gets no labels for such a batch (its own loss
  reads float labels as multi-label): `ImageClassificationTrainer.compute_loss` computes the soft-target
  cross-entropy from its logits. Evaluation batches keep integer labels and the model's loss (with Trainer's label
  smoothing when `--label_smoothing_factor` is set).
- `--lr_scheduler_type cosine` (Trainer's) for the official half-cycle cosine after the warm-up.
Not implemented: RandAugment and random erasing (`--aa rand-m9-mstd0.5-inc1 --reprob 0.25` in the official runs).
`--vitmae_pooling mean` fine-tunes an MAE (`vit_mae`) checkpoint the way MAE does
(`ViTMeanPoolingForImageClassification`: mean of the patch tokens, a new LayerNorm, a linear head) instead of through
the CLS token.

Data sets (`--dataset`):
- `fashion_mnist`: the Debian `dataset-fashion-mnist` idx files (`hfvision.data.fashion_mnist`), train / test;
- `synthetic`: a few hundred seeded colour images whose class is their dominant colour (tests and smoke runs);
- anything `datasets.load_dataset` opens (a Hub id, a local folder, `imagefolder` with `--data_dir`), with
  `--image_column` / `--label_column` and `--train_split` / `--eval_split`.

Usage (plain `python` or `accelerate launch`; a YAML file first, or as `--config`, then CLI overrides)::

    python training/finetune_image_classification.py training/configs/finetune_pyramidclip_fashion_mnist.yaml \\
        --model_name_or_path path/to/pyramidclip-tiny --output_dir runs/pyramidclip-fashion-mnist
    python training/finetune_image_classification.py --model_name_or_path path/to/checkpoint --dataset synthetic \\
        --output_dir /tmp/run --max_steps 40 --use_cpu --report_to none
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
import transformers
import yaml
from PIL import Image
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoProcessor,
    EvalPrediction,
    HfArgumentParser,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    ViTConfig,
    ViTModel,
    ViTPreTrainedModel,
    set_seed,
)
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput

import hfvision  # noqa: F401  (registers hfvision's models with the Auto classes)
from hfvision.data.fashion_mnist import load_fashion_mnist
from hfvision.hub.card import MODEL_TYPE_METHODS, TRAINER_HYPERPARAMETERS, TRAINING_CONFIG_FILE, write_model_card
from hfvision.hub.publish import check_repo_id, publish
from hfvision.metrics import load_metric
from hfvision.models.lps import GumbelTemperatureCallback, gumbel_tau_buffers

logger = logging.getLogger(__name__)

# Class name -> RGB of the synthetic data set: the six saturated corners of the RGB cube.
SYNTHETIC_COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
}
SYNTHETIC_SIZES = {"train": 384, "eval": 192}


@dataclass
class ModelArguments:
    """Which checkpoint to fine-tune and how to initialise its head."""

    model_name_or_path: str = field(
        metadata={"help": "Local folder or Hub id of a checkpoint AutoModelForImageClassification can open."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow the checkpoint's own modeling/processing code (its auto_map)."}
    )
    zero_shot_init: bool = field(
        default=False,
        metadata={
            "help": "Initialise the head from class-name prompts (models with `init_classifier_from_text`, e.g. "
            "PyramidCLIP), using the checkpoint's AutoProcessor tokenizer."
        },
    )
    prompt_template: str = field(
        default="a photo of a {}.", metadata={"help": "Zero-shot prompt; `{}` is replaced by the class name."}
    )
    anneal_gumbel_tau: bool = field(
        default=True,
        metadata={
            "help": "For models with LPS layers (`gumbel_tau` buffers): anneal their Gumbel-softmax temperature, "
            "tau = max(tau_0 * decay ** (step // decay_steps), min), as the official LPS training does."
        },
    )
    gumbel_tau_decay: float = field(default=0.85, metadata={"help": "Temperature factor per decay (LPS: 0.85)."})
    gumbel_tau_decay_epochs: float = field(default=10.0, metadata={"help": "Epochs between decays (LPS: 10)."})
    gumbel_tau_decay_steps: int | None = field(
        default=None, metadata={"help": "Optimizer steps between decays; overrides `gumbel_tau_decay_epochs`."}
    )
    gumbel_tau_min: float = field(default=0.025, metadata={"help": "Temperature floor (LPS: 0.025)."})
    vitmae_pooling: str = field(
        default="cls",
        metadata={
            "help": "How an MAE (`vit_mae`) checkpoint is fine-tuned: 'cls' as transformers' ViTForImageClassification "
            "(LayerNorm, then the CLS token); 'mean' as MAE does (mean of the patch tokens, a new LayerNorm, linear)."
        },
    )
    drop_path_rate: float | None = field(
        default=None,
        metadata={
            "help": "Stochastic depth: sets `drop_path_rate` of the checkpoint's config (models that have it, e.g. "
            "MCMAE; ConvMAE / MAE fine-tuning: 0.1). Default: the checkpoint's value."
        },
    )
    layer_decay: float = field(
        default=1.0,
        metadata={
            "help": "Layer-wise learning-rate decay (ConvMAE: 0.65): layer l of L + 1 trains at "
            "learning_rate * layer_decay ** (L + 1 - l); 1 turns it off (MCMAE and ViT models)."
        },
    )


@dataclass
class DataArguments:
    """Which data to train and evaluate on."""

    dataset: str = field(
        default="fashion_mnist",
        metadata={"help": "'fashion_mnist', 'synthetic', or a `datasets.load_dataset` path (Hub id, local folder)."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Config name for `load_dataset`."})
    data_dir: str | None = field(default=None, metadata={"help": "`data_dir` for `load_dataset` (e.g. imagefolder)."})
    train_split: str = field(default="train", metadata={"help": "Training split of a `load_dataset` data set."})
    eval_split: str = field(
        default="test",
        metadata={
            "help": "Evaluation split of a `load_dataset` data set; if absent, `validation`, else a held-out "
            "`eval_fraction` of the training split."
        },
    )
    eval_fraction: float = field(
        default=0.1, metadata={"help": "Fraction of the training split held out when no evaluation split exists."}
    )
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    label_column: str = field(default="label", metadata={"help": "Column holding the class ids or names."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on at most this many samples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on at most this many samples."})
    mixup: float = field(
        default=0.0, metadata={"help": "Mixup Beta(alpha, alpha) concentration on training batches; 0: off (0.8)."}
    )
    cutmix: float = field(
        default=0.0, metadata={"help": "CutMix Beta(alpha, alpha) concentration on training batches; 0: off (1.0)."}
    )


# ---------------------------------------------------------------------------------------------------------------
# Arguments: dataclasses from the CLI, optionally on top of a YAML file
# ---------------------------------------------------------------------------------------------------------------


def _yaml_to_cli(path: str) -> list[str]:
    """Turn a flat YAML mapping into `--key value` arguments (lists become several values, `null` is skipped)."""
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a mapping of argument names to values, got {type(config).__name__}.")
    cli: list[str] = []
    for key, value in config.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            cli += [f"--{key}", *(str(item) for item in value)]
        elif isinstance(value, dict):
            cli += [f"--{key}", json.dumps(value)]
        else:
            cli += [f"--{key}", str(value)]
    return cli


def parse_args(argv: Sequence[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Parse the three argument dataclasses.

    A YAML file given as the first argument (`script.py config.yaml ...`) or as `--config config.yaml` supplies
    defaults; the other command-line arguments override it (argparse keeps the last value of an option).

    Args:
        argv: the arguments after the script name; `None` reads `sys.argv[1:]`.

    Returns:
        `(model_args, data_args, training_args)`.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    config_path = None
    if args and args[0].endswith((".yaml", ".yml")):
        config_path, args = args[0], args[1:]
    elif "--config" in args:
        index = args.index("--config")
        if index + 1 == len(args):
            raise ValueError("`--config` needs a YAML file path.")
        config_path, args = args[index + 1], args[:index] + args[index + 2 :]
    if config_path is not None:
        args = _yaml_to_cli(config_path) + args
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=args, look_for_args_file=False)
    return model_args, data_args, training_args


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def make_synthetic_colours(num_images: int, image_size: int = 32, seed: int = 0) -> datasets.Dataset:
    """Seeded images whose class is their dominant colour, for tests and smoke runs.

    Each image is an 8x8 grid of blocks: about 60% of the blocks take the class colour, the rest a colour drawn
    uniformly, and every pixel gets Gaussian noise and a per-image brightness, so the class is learnable from colour
    statistics but no single pixel gives it away.

    Args:
        num_images: number of rows.
        image_size: side of the square RGB images (a multiple of 8).
        seed: seed of the generator; the same seed gives the same images and labels.

    Returns:
        A `datasets.Dataset` with `image` (PIL RGB) and `label` (a `ClassLabel` over `SYNTHETIC_COLOURS`).
    """
    if image_size % 8:
        raise ValueError(f"`image_size` must be a multiple of 8, got {image_size}.")
    rng = np.random.default_rng(seed)
    palette = np.asarray(list(SYNTHETIC_COLOURS.values()), dtype=np.float32)  # (C, 3)
    labels = rng.integers(0, len(palette), num_images)  # (N,)
    blocks = rng.uniform(0, 1, (num_images, 8, 8, 3)).astype(np.float32)  # (N, 8, 8, 3) random colours
    dominant = rng.uniform(0, 1, (num_images, 8, 8)) < 0.6  # (N, 8, 8) blocks painted the class colour
    blocks[dominant] = palette[np.broadcast_to(labels[:, None, None], dominant.shape)[dominant]]
    pixels = blocks.repeat(image_size // 8, axis=1).repeat(image_size // 8, axis=2)  # (N, S, S, 3)
    pixels = pixels * rng.uniform(0.6, 1.0, (num_images, 1, 1, 1)) + rng.normal(0, 0.1, pixels.shape)
    pixels = (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(SYNTHETIC_COLOURS))}
    )
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(image) for image in pixels], "label": labels}, features=features
    )


def load_splits(data_args: DataArguments, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The training and evaluation splits, limited to `max_train_samples` / `max_eval_samples`.

    Args:
        data_args: data arguments.
        seed: seed of the synthetic generator, the held-out split and the training subsample.

    Returns:
        `(train, eval)` with the image and label columns named in `data_args`.
    """
    if data_args.dataset == "fashion_mnist":
        train = load_fashion_mnist("train", limit=data_args.max_train_samples)
        evaluation = load_fashion_mnist("test", limit=data_args.max_eval_samples)
        return train, evaluation  # the idx files are already shuffled: the first rows are a fair subsample
    if data_args.dataset == "synthetic":
        train = make_synthetic_colours(data_args.max_train_samples or SYNTHETIC_SIZES["train"], seed=seed)
        evaluation = make_synthetic_colours(data_args.max_eval_samples or SYNTHETIC_SIZES["eval"], seed=seed + 1)
        return train, evaluation

    splits = datasets.load_dataset(data_args.dataset, data_args.dataset_config_name, data_dir=data_args.data_dir)
    if data_args.train_split not in splits:
        raise ValueError(f"{data_args.dataset} has no split {data_args.train_split!r}; it has {list(splits)}.")
    train = splits[data_args.train_split]
    eval_split = next((name for name in (data_args.eval_split, "validation") if name in splits), None)
    if eval_split is None:
        held_out = train.train_test_split(test_size=data_args.eval_fraction, seed=seed)
        train, evaluation = held_out["train"], held_out["test"]
    else:
        evaluation = splits[eval_split]
    for column in (data_args.image_column, data_args.label_column):
        if column not in train.column_names:
            raise ValueError(f"{data_args.dataset} has no column {column!r}; it has {train.column_names}.")
    if data_args.max_train_samples is not None:
        train = train.shuffle(seed=seed).select(range(min(data_args.max_train_samples, len(train))))
    if data_args.max_eval_samples is not None:
        evaluation = evaluation.select(range(min(data_args.max_eval_samples, len(evaluation))))
    return train, evaluation


def label_mapping(
    train: datasets.Dataset, evaluation: datasets.Dataset, label_column: str
) -> tuple[list[str], dict[Any, int] | None]:
    """Class names in label order, and how raw labels map to class ids.

    Args:
        train: training split.
        evaluation: evaluation split.
        label_column: the label column.

    Returns:
        `(class_names, label_ids)`: for a `ClassLabel` column its names and `None` (the values already are ids);
        otherwise the sorted distinct values of both splits, as strings, and the value -> id mapping.
    """
    feature = train.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), None
    values = sorted(set(train.unique(label_column)) | set(evaluation.unique(label_column)))
    return [str(value) for value in values], {value: index for index, value in enumerate(values)}


def make_transform(
    image_processor: Callable[..., Any], image_column: str, label_column: str, label_ids: dict[Any, int] | None
) -> Callable[[dict[str, list[Any]]], dict[str, Any]]:
    """The `with_transform` function: images (as RGB) through the image processor, labels as class ids.

    Args:
        image_processor: called as `image_processor(images, return_tensors="pt")`, returning `pixel_values`.
        image_column: column holding PIL images.
        label_column: column holding labels.
        label_ids: raw label -> class id, for label columns that are not a `ClassLabel`; `None` keeps them.
    """

    def transform(batch: dict[str, list[Any]]) -> dict[str, Any]:
        images = [image.convert("RGB") for image in batch[image_column]]  # grayscale sets -> 3 channels
        labels = batch[label_column] if label_ids is None else [label_ids[label] for label in batch[label_column]]
        return {"pixel_values": image_processor(images, return_tensors="pt")["pixel_values"], "labels": labels}

    return transform


def collate(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack transformed rows into `pixel_values` `(B, 3, H, W)` and `labels` `(B,)`."""
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.tensor([int(example["labels"]) for example in examples], dtype=torch.long),
    }


@dataclass
class MixupCutmixCollator:
    """`collate`, then mixup or cutmix of the whole batch with itself reversed (timm's `Mixup` in batch mode).

    Each call draws one mixing weight `lam ~ Beta(alpha, alpha)` for the batch and picks cutmix with probability
    `switch_prob` when both are on. Mixup blends every image with its partner (sample i with sample B - 1 - i); cutmix
    pastes the partner's pixels into one random box (side `sqrt(1 - lam)` of the image's, centre uniform, clipped at
    the border) and sets `lam` to the image's area outside the box. Targets are the same blend of label-smoothed
    one-hot vectors (`1 - label_smoothing + label_smoothing / C` on the class, `label_smoothing / C` elsewhere), so
    each row sums to 1. Random draws come from torch's global generator (seeded by `--seed`; Trainer saves and
    restores it with each checkpoint).

    Attributes:
        num_labels: number of classes `C`.
        mixup_alpha: Beta concentration of mixup; 0 turns mixup off.
        cutmix_alpha: Beta concentration of cutmix; 0 turns cutmix off.
        label_smoothing: smoothing of the one-hot targets.
        switch_prob: probability of cutmix rather than mixup when both are on (official runs: 0.5).
    """

    num_labels: int
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    label_smoothing: float = 0.0
    switch_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.num_labels < 2:
            raise ValueError(f"`num_labels` must be at least 2, got {self.num_labels}.")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0 or self.mixup_alpha == self.cutmix_alpha == 0:
            raise ValueError(
                f"`mixup_alpha` and `cutmix_alpha` must be >= 0 and not both 0, got {self.mixup_alpha}, "
                f"{self.cutmix_alpha}."
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"`label_smoothing` must be in [0, 1), got {self.label_smoothing}.")

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = collate(examples)
        pixel_values, labels = self.mix(batch["pixel_values"], batch["labels"])
        return {"pixel_values": pixel_values, "labels": labels}

    def mix(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix a batch.

        Args:
            pixel_values: `(B, C, H, W)` images.
            labels: `(B,)` class ids.

        Returns:
            `(mixed_pixel_values (B, C, H, W), soft_labels (B, num_labels))`, float, each label row summing to 1.
        """
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or torch.rand(()).item() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = torch.distributions.Beta(alpha, alpha).sample().item()
        partners = pixel_values.flip(0)  # sample i is mixed with sample B - 1 - i
        if use_cutmix:
            height, width = pixel_values.shape[-2:]
            cut_ratio = (1 - lam) ** 0.5
            cut_height, cut_width = int(height * cut_ratio), int(width * cut_ratio)
            centre_y, centre_x = torch.randint(height, ()).item(), torch.randint(width, ()).item()
            top, bottom = max(centre_y - cut_height // 2, 0), min(centre_y + cut_height // 2, height)
            left, right = max(centre_x - cut_width // 2, 0), min(centre_x + cut_width // 2, width)
            mixed = pixel_values.clone()
            mixed[..., top:bottom, left:right] = partners[..., top:bottom, left:right]
            lam = 1 - (bottom - top) * (right - left) / (height * width)  # the area actually kept
        else:
            mixed = pixel_values * lam + partners * (1 - lam)
        off_value = self.label_smoothing / self.num_labels
        targets = F.one_hot(labels, self.num_labels).float() * (1 - self.label_smoothing) + off_value  # (B, C)
        return mixed, targets * lam + targets.flip(0) * (1 - lam)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against target distributions: `mean_b(-sum_c targets[b, c] * log_softmax(logits)[b, c])`.

    Args:
        logits: `(B, C)` class logits.
        targets: `(B, C)` target probabilities (rows summing to 1).
    """
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------


class ViTMeanPoolingForImageClassification(ViTPreTrainedModel):
    """ViT with MAE's fine-tuning head (`global_pool` in MAE's `models_vit.py`): mean of the patch tokens (the CLS
    token left out), a LayerNorm of its own (`fc_norm`), a linear classifier initialised near zero (std 2e-5).

    The encoder's final LayerNorm is dropped (MAE removes `norm` when pooling), so an MAE checkpoint's
    `vit.layernorm` weights go unused; its embeddings and blocks load by name. The saved folder reloads with this
    class (`ViTMeanPoolingForImageClassification.from_pretrained`), not with `AutoModelForImageClassification`, which
    would build the CLS-token head.
    """

    def __init__(self, config: ViTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.vit.layernorm = nn.Identity()
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is getattr(self, "classifier", None):
            init.trunc_normal_(module.weight, std=2e-5)  # MAE's fine-tuning head init
            init.zeros_(module.bias)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> ImageClassifierOutput:
        """Class logits `(B, num_labels)` of images `(B, 3, H, W)`; `loss` from `labels` as ViT's head computes it."""
        tokens = self.vit(pixel_values, **kwargs).last_hidden_state  # (B, 1 + N, D), not normalised
        logits = self.classifier(self.fc_norm(tokens[:, 1:].mean(dim=1)))  # (B, num_labels)
        loss = self.loss_function(labels, logits, self.config, **kwargs) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


def load_model(model_args: ModelArguments, class_names: list[str]) -> PreTrainedModel:
    """Open the checkpoint with a head over `class_names`, re-created when the class count differs."""
    id2label = dict(enumerate(class_names))
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code)
    if model_args.vitmae_pooling not in ("cls", "mean"):
        raise ValueError(f"--vitmae_pooling must be 'cls' or 'mean', got {model_args.vitmae_pooling!r}.")
    if model_args.vitmae_pooling == "mean" and config.model_type != "vit_mae":
        raise ValueError(f"--vitmae_pooling mean needs an MAE (vit_mae) checkpoint, got a {config.model_type!r} one.")
    model_class = AutoModelForImageClassification
    if config.model_type == "vit_mae":
        # transformers has no ViTMAE classifier: an MAE checkpoint fine-tunes as ViT, whose parameter names its
        # encoder shares (`vit.embeddings.*`, `vit.layers.*`, `vit.layernorm`); the MAE decoder is dropped.
        vit_fields = ViTConfig().to_dict().keys() - {"model_type", "architectures", "transformers_version"}
        config = ViTConfig(**{name: value for name, value in config.to_dict().items() if name in vit_fields})
        config.num_labels = 0  # forces a new head below
        if model_args.vitmae_pooling == "mean":
            model_class = ViTMeanPoolingForImageClassification
    if model_args.drop_path_rate is not None:
        if not hasattr(config, "drop_path_rate"):
            raise ValueError(f"--drop_path_rate: {config.model_type!r} models have no stochastic depth to set.")
        config.drop_path_rate = model_args.drop_path_rate
    resize_head = config.num_labels != len(class_names)
    if resize_head:
        logger.info("Re-creating the classification head: %d -> %d classes.", config.num_labels, len(class_names))
    config.id2label, config.label2id = id2label, {name: index for index, name in id2label.items()}
    return model_class.from_pretrained(
        model_args.model_name_or_path,
        config=config,
        ignore_mismatched_sizes=resize_head,
        trust_remote_code=model_args.trust_remote_code,
    )


def load_processors(model_args: ModelArguments) -> tuple[Any, Any]:
    """`(image_processor, processor)`: the one the transform calls, and the one saved with the model.

    The saved one is the checkpoint's full `AutoProcessor` (image processor + tokenizer for CLIP-style models) where
    it has one, so the fine-tuned folder stays as complete as the checkpoint it came from.
    """
    image_processor = AutoImageProcessor.from_pretrained(
        model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code
    )
    try:
        processor = AutoProcessor.from_pretrained(
            model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code
        )
    except (OSError, ValueError, KeyError):  # no processor/tokenizer files: the image processor is all there is
        processor = image_processor
    return image_processor, processor


def init_head_from_class_names(
    model: PreTrainedModel, processor: Any, class_names: list[str], prompt_template: str
) -> bool:
    """Set the head to the zero-shot classifier of `class_names`, if the model and processor allow it.

    Args:
        model: a classification model; used only if it has `init_classifier_from_text`.
        processor: the checkpoint's `AutoProcessor` (its `tokenizer` tokenises the prompts).
        class_names: class names, in label order.
        prompt_template: prompt with one `{}` for the class name.

    Returns:
        Whether the head was initialised.
    """
    tokenizer = getattr(processor, "tokenizer", None)
    if not hasattr(model, "init_classifier_from_text") or tokenizer is None:
        logger.warning(
            "--zero_shot_init ignored: %s has no `init_classifier_from_text` or the checkpoint has no tokenizer.",
            type(model).__name__,
        )
        return False
    prompts = [prompt_template.format(name) for name in class_names]
    tokens = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
    model.init_classifier_from_text(tokens["input_ids"], tokens.get("attention_mask"), num_templates=1)
    logger.info("Head initialised from prompts such as %r.", prompts[0])
    return True


# ---------------------------------------------------------------------------------------------------------------
# The fine-tuning recipe: layer-wise learning-rate decay, mixup / cutmix targets
# ---------------------------------------------------------------------------------------------------------------

# model_type -> (parameters of layer 0: everything before the first transformer block, the blocks `(index)`).
LAYER_DECAY_PATTERNS = {
    "mcmae": (re.compile(r"mcmae\.(conv_stages|embeddings)\."), re.compile(r"mcmae\.layers\.(\d+)\.")),
    "vit": (re.compile(r"vit\.embeddings\."), re.compile(r"vit\.layers\.(\d+)\.")),
}
# Parameters without weight decay besides the 1-D ones (the official `no_weight_decay()`: `pos_embed`, `cls_token`).
NO_WEIGHT_DECAY_NAMES = ("position_embeddings", "cls_token")


def layer_id(name: str, model_type: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise lr decay (official `get_layer_id_for_vit` of ConvMAE / MAE / BEiT).

    Args:
        name: the parameter's name in the classification model (`mcmae.layers.2.mlp.fc1.weight`).
        model_type: a key of `LAYER_DECAY_PATTERNS`.
        num_layers: transformer blocks + 1.

    Returns:
        0 before the first block, `i + 1` for block `i`, `num_layers` after the last block (norms, head).
    """
    embeddings, blocks = LAYER_DECAY_PATTERNS[model_type]
    if embeddings.match(name):
        return 0
    block = blocks.match(name)
    return int(block.group(1)) + 1 if block else num_layers


def layer_decay_parameter_groups(
    model: PreTrainedModel, learning_rate: float, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """Optimizer parameter groups of layer-wise lr decay (official `param_groups_lrd`).

    A trainable parameter of layer `l` (`layer_id`) gets `lr = learning_rate * layer_decay ** (num_layers - l)`, with
    `num_layers` = transformer blocks + 1 (so the head trains at `learning_rate`, MCMAE's conv stages and every
    embedding at `layer_decay ** num_layers` of it), and `weight_decay` unless it is 1-D (biases, norms) or a
    position table / CLS token.

    Args:
        model: an MCMAE or ViT classification model.
        learning_rate: the peak learning rate of the head.
        weight_decay: weight decay of the decayed groups.
        layer_decay: decay per layer, in (0, 1].

    Returns:
        Groups `{"params", "lr", "weight_decay", "layer"}`, one per (layer, decayed or not) that has parameters.
    """
    if not 0 < layer_decay <= 1:
        raise ValueError(f"--layer_decay must be in (0, 1], got {layer_decay}.")
    model_type = model.config.model_type
    if model_type not in LAYER_DECAY_PATTERNS:
        raise ValueError(f"--layer_decay supports {sorted(LAYER_DECAY_PATTERNS)} models, got {model_type!r}.")
    num_layers = model.config.num_hidden_layers + 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        layer = layer_id(name, model_type, num_layers)
        decayed = parameter.ndim > 1 and not name.endswith(NO_WEIGHT_DECAY_NAMES)
        group = groups.setdefault(
            (layer, decayed),
            {
                "params": [],
                "lr": learning_rate * layer_decay ** (num_layers - layer),
                "weight_decay": weight_decay if decayed else 0.0,
                "layer": layer,
            },
        )
        group["params"].append(parameter)
    return list(groups.values())


class ImageClassificationTrainer(Trainer):
    """`Trainer` with the fine-tuning recipe's two hooks.

    - `create_optimizer`: with `layer_decay < 1`, the optimizer `--optim` names over `layer_decay_parameter_groups`
      (its scheduler then scales every group's learning rate alike).
    - `get_train_dataloader` collates training batches with `train_collator` (mixup / cutmix); evaluation keeps the
      plain `data_collator`. `compute_loss` takes the soft-target cross-entropy of the model's logits for batches whose
      labels are `(B, num_labels)` distributions, a per-batch mean (so with a `train_collator`,
      `loss_is_scaled_for_ga = False`); integer labels keep the model's own loss.

    Args:
        layer_decay: layer-wise learning-rate decay; 1 keeps Trainer's optimizer.
        train_collator: collator of training batches; `None` uses `data_collator`.
        *args, **kwargs: `Trainer`'s.
    """

    def __init__(
        self,
        *args: Any,
        layer_decay: float = 1.0,
        train_collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.layer_decay = layer_decay
        self.train_collator = train_collator
        if train_collator is not None:
            self.loss_is_scaled_for_ga = False

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.layer_decay == 1.0 or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        if {"params", "model", "optimizer_dict"} & optimizer_kwargs.keys():
            raise ValueError(f"--layer_decay needs an optimizer over parameter groups, not --optim {self.args.optim}.")
        groups = layer_decay_parameter_groups(
            opt_model, self.args.learning_rate, self.args.weight_decay, self.layer_decay
        )
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        if self.train_collator is None:
            return super().get_train_dataloader()
        eval_collator, self.data_collator = self.data_collator, self.train_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = eval_collator

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        labels = inputs.get("labels")
        if labels is None or labels.ndim == 1:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**{name: value for name, value in inputs.items() if name != "labels"})
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        loss = soft_target_cross_entropy(logits, labels)
        return (loss, outputs) if return_outputs else loss


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Fine-tune, evaluating before and after; save the model, its processor and `eval_results.json`.

    Args:
        argv: command-line arguments (see the module docstring); `None` reads `sys.argv[1:]`.

    Returns:
        The final metrics: `eval_top1_accuracy`, `eval_top5_accuracy`, `eval_loss`, ... after training and the same
        measured before training under `eval_init_*` (the zero-shot head's accuracy with `--zero_shot_init`), plus
        `train_loss` and `train_runtime`.
    """
    model_args, data_args, training_args = parse_args(argv)
    # Trainer's own push would upload `output_dir` as it is (training_args.bin and other pickles included): the final
    # model is published below with hfvision's `publish` instead.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    if push_to_hub:
        check_repo_id(training_args.hub_model_id or "--hub_model_id missing")
    # The transform needs the image column, which Trainer would otherwise drop as unused by `forward`.
    training_args.remove_unused_columns = False
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for chatty in ("accelerate", "httpx"):  # per-checkpoint-file and per-request INFO lines
        logging.getLogger(chatty).setLevel(logging.WARNING)
    logger.setLevel(logging.INFO if training_args.should_log else logging.WARNING)
    library_log_level = training_args.get_process_log_level()  # transformers' own level unless --log_level is set
    datasets.utils.logging.set_verbosity(library_log_level)
    transformers.utils.logging.set_verbosity(library_log_level)
    set_seed(training_args.seed)

    # 1. Data and class names.
    train, evaluation = load_splits(data_args, seed=training_args.seed)
    class_names, label_ids = label_mapping(train, evaluation, data_args.label_column)
    logger.info("%d training / %d evaluation images, %d classes.", len(train), len(evaluation), len(class_names))

    # 2. Model, processors, optional zero-shot head.
    model = load_model(model_args, class_names)
    image_processor, processor = load_processors(model_args)
    if model_args.zero_shot_init:
        init_head_from_class_names(model, processor, class_names, model_args.prompt_template)

    transform = make_transform(image_processor, data_args.image_column, data_args.label_column, label_ids)
    train, evaluation = train.with_transform(transform), evaluation.with_transform(transform)

    # 3. Metrics: top-1 / top-5 accuracy over the logits.
    accuracy = load_metric("zero_shot_accuracy")

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return accuracy.compute(predictions=logits, references=prediction.label_ids, top_k=(1, 5))

    # 4. Evaluate, train, evaluate; LPS models anneal their Gumbel temperature with the global step; the recipe's
    # mixup / cutmix on training batches and layer-wise lr decay when asked for.
    callbacks = []
    if model_args.anneal_gumbel_tau and gumbel_tau_buffers(model):
        callbacks.append(
            GumbelTemperatureCallback(
                decay=model_args.gumbel_tau_decay,
                decay_epochs=model_args.gumbel_tau_decay_epochs,
                decay_steps=model_args.gumbel_tau_decay_steps,
                min_tau=model_args.gumbel_tau_min,
            )
        )
    train_collator = None
    if data_args.mixup > 0 or data_args.cutmix > 0:
        train_collator = MixupCutmixCollator(
            num_labels=len(class_names),
            mixup_alpha=data_args.mixup,
            cutmix_alpha=data_args.cutmix,
            label_smoothing=training_args.label_smoothing_factor,
        )
    trainer = ImageClassificationTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=collate,
        train_collator=train_collator,
        layer_decay=model_args.layer_decay,
        compute_metrics=compute_metrics,
        processing_class=processor,
        callbacks=callbacks,
    )
    metrics = trainer.evaluate(metric_key_prefix="eval_init")
    trainer.log_metrics("eval_init", metrics)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics |= train_result.metrics
    metrics |= trainer.evaluate()
    trainer.log_metrics("eval", metrics)

    # 5. Save: model + processor (safetensors, remote code), trainer state, eval_results.json, the run's arguments
    # and the method's model card (never Trainer's generic one).
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    trainer.save_metrics("eval", metrics)
    repo_id = training_args.hub_model_id if push_to_hub else None
    if trainer.is_world_process_zero():
        run_arguments = {**asdict(model_args), **asdict(data_args)}
        run_arguments |= {name: getattr(training_args, name, None) for name in TRAINER_HYPERPARAMETERS}
        run_arguments["push_to_hub"] = repo_id
        config_path = Path(training_args.output_dir) / TRAINING_CONFIG_FILE
        config_path.write_text(json.dumps(run_arguments, indent=1, default=str) + "\n")
        if model.config.model_type in MODEL_TYPE_METHODS:
            write_model_card(training_args.output_dir)
        else:  # a transformers baseline (e.g. ViT): hfvision has no card template for it, and publishing refuses
            logger.warning("no model card: %r is not the model_type of an hfvision method", model.config.model_type)
    if push_to_hub and trainer.is_world_process_zero():
        uploaded = publish(
            training_args.output_dir,
            repo_id,
            private=bool(training_args.hub_private_repo),
            revision=training_args.hub_revision,
            commit_message="End of training",
            token=training_args.hub_token,
        )
        logger.info("Published %s to %s.", ", ".join(uploaded), repo_id)
    return metrics


if __name__ == "__main__":
    main()
