"""Train AutoLink (He, Wandt, Rhodin; NeurIPS 2022, arXiv 2205.10636) on an image stream with Accelerate.

Self-supervised: the only signal is restoring an 80%-masked image from the edge map of the detected keypoints and
the learned graph. Usage (one or many processes, CPU or GPUs; a YAML file gives defaults, flags override them)::

    accelerate launch training/train_autolink.py --config training/configs/train_autolink_stick_figures.yaml
    python training/train_autolink.py --train_data path/to/faces_imagefolder --model_preset autolink-faces \
        --output_dir runs/autolink-faces
    # the no-graph ablation: the decoder gets an all-zero edge map, so the detector never gets a gradient
    python training/train_autolink.py --config training/configs/train_autolink_stick_figures.yaml --use_edge_map false
    # the frozen-graph control: the detector trains, the graph keeps its initial (random) edge weights
    python training/train_autolink.py --config training/configs/train_autolink_stick_figures.yaml --freeze_graph

What it does:
1. data: `--stick_figures` first writes seeded articulated stick figures (`hfvision.data.build_stick_figures`:
   known skeleton, ground-truth keypoints) into `output_dir/stick_figures_data`; otherwise `--train_data` /
   `--eval_data` name an image folder, tar/parquet globs or a Hub id read by `hfvision.data.load_image_stream`
   (ground-truth `keypoints` in the samples are used for evaluation only, never for training);
2. model from a preset (`--model_preset`, overrides `--num_keypoints` / `--edge_thickness` / `--image_size`) or a
   checkpoint; the paper's optimiser: AdamW, lr 1e-4, weight decay 1e-3 on every parameter (the graph's x512
   reparametrisation lives in the model), with warmup + cosine by default or the paper's constant rate
   (`--lr_schedule constant --warmup_steps 0`); `--freeze_graph` keeps the edge scores out of training (a control);
   `--perceptual_backbone DIR` trains with the paper's feature loss (`perceptual_loss="vgg"`) on a small VGG-style
   network standing in for VGG16, whose ImageNet weights cannot be had offline: if DIR holds none yet, one is first
   trained there as a classifier on Fashion-MNIST with random colours (`train_feature_network`);
3. each batch: the processor's resize + [-1, 1] normalisation, the paper's random horizontal flip, and the block
   mask's noise, all seeded by the batch's sample keys (`hfvision.training.batch_seed`), so resume is exact;
4. the shared loop of `hfvision.training` (accumulation, mixed precision, checkpoints, resume, progress, trackers);
5. every `eval_steps` and at the end, on the eval split (with ground truth): the reconstruction loss with fixed
   masks, the keypoint error after a linear regression to the true joints (`keypoint_regression_error`; first half
   fits, second half scores; normalised by the figure's box diagonal) and how many of the graph's strongest edges are
   true bones (`skeleton_recovery`, with the bones of the data folder's `skeleton.json`: Hungarian-matched precision
   and the nearest-joint bone recall, each beside its exact chance level, `*_chance`). The shuffled-graph control is
   evaluated alongside (`shuffled_graph_*`): the same trained model with its learned edge weights permuted among the
   keypoint pairs (a seeded permutation, `--shuffled_graph_seed`), so the weights keep their values but lose their
   pairs;
6. at the end: `save_pretrained` of model + processor into `output_dir/final` with `eval_results.json` and
   `keypoints.png`, held-out images with their keypoints and the learned skeleton drawn on them, and
   `edge_weights.png`, the learned graph as a heatmap (with matplotlib, the `plots` extra).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup

import hfvision  # noqa: F401  (registers AutoLink with the Auto classes)
from hfvision import training
from hfvision.data import build_stick_figures, load_image_stream
from hfvision.data.fashion_mnist import load_fashion_mnist
from hfvision.data.stick_figures import DARK_ON_LIGHT
from hfvision.metrics import load_metric
from hfvision.models.autolink import (
    AutoLinkConfig,
    AutoLinkForSelfSupervisedKeypoints,
    AutoLinkImageProcessor,
    draw_keypoint_strip,
)
from hfvision.models.autolink.modeling_autolink import IMAGENET_MEAN, IMAGENET_STD
from hfvision.plotting import plot_matrix
from hfvision.training import StreamDataArguments, StreamTrainingArguments

logger = get_logger(__name__)

LOSS_TERMS = ("l1_loss", "ssim_loss", "perceptual_loss")
OVERLAY_IMAGES = 8
LR_SCHEDULES = ("cosine", "constant")
SKELETON_SCORES = (
    "edge_precision",
    "edge_precision_chance",
    "nearest_joint_bone_recall",
    "nearest_joint_bone_recall_chance",
    "bone_to_nonbone_weight_ratio",
)
FEATURE_NETWORK_FILE = "feature_network.safetensors"
FEATURE_NETWORK_INFO = "feature_network.json"


@dataclass
class ModelArguments:
    model_preset: str = field(
        default="autolink-small",
        metadata={"help": "Preset: autolink-faces, autolink-taichi, autolink-h36m, autolink-small, autolink-tiny."},
    )
    model_name_or_path: str | None = field(default=None, metadata={"help": "Checkpoint to continue training."})
    num_keypoints: int | None = field(default=None, metadata={"help": "Keypoints K; default: the preset's."})
    edge_thickness: float | None = field(default=None, metadata={"help": "Edge thickness; default: the preset's."})
    image_size: int | None = field(default=None, metadata={"help": "Input size; default: the preset's."})
    graph_lr_scale: float | None = field(
        default=None,
        metadata={
            "help": "The graph's reparametrisation factor (paper: 512, i.e. a 512x effective step on the edge logits). "
            "With a learning rate r times the paper's 1e-4, 512 / r keeps the graph's step the paper's."
        },
    )
    mask_grid_size: int | None = field(
        default=None, metadata={"help": "Cells per side of the block mask (paper: 16 at 128 px); default: preset's."}
    )
    use_edge_map: bool = field(
        default=True, metadata={"help": "False: the no-graph ablation (the decoder sees an all-zero edge map)."}
    )
    freeze_graph: bool = field(
        default=False,
        metadata={
            "help": "The frozen-graph control: the edge scores keep their initial values (requires_grad False, left "
            "out of the optimiser and its weight decay) while the detector, the decoder and alpha train."
        },
    )
    perceptual_backbone: str | None = field(
        default=None,
        metadata={
            "help": "Folder of a small VGG-style feature network for the paper's feature loss (perceptual_loss=vgg) "
            "in place of VGG16; if it holds none yet, one is first trained there on Fashion-MNIST with random colours."
        },
    )
    perceptual_backbone_steps: int = field(
        default=1000, metadata={"help": "Steps (batches of 128) of the feature network's classification training."}
    )


@dataclass
class DataArguments(StreamDataArguments):
    stick_figures: bool = field(
        default=False, metadata={"help": "Write seeded stick figures to output_dir/stick_figures_data, train on them."}
    )
    stick_figures_num_train: int = field(default=8192, metadata={"help": "Training figures."})
    stick_figures_num_eval: int = field(default=512, metadata={"help": "Held-out figures (with ground truth)."})
    stick_figures_image_size: int = field(default=64, metadata={"help": "Side of the figure images."})
    stick_figures_backgrounds: str = field(
        default="flat,gradient,noise", metadata={"help": "Comma-separated background kinds of the stick figures."}
    )
    stick_figures_max_rotation: float = field(default=30.0, metadata={"help": "Largest figure rotation, degrees."})
    stick_figures_line_width: str = field(
        default="0.045,0.065", metadata={"help": "Range of the limb width as a fraction of the image side, 'low,high'."}
    )
    stick_figures_fixed_colors: bool = field(
        default=False,
        metadata={
            "help": "Dark figures on light backgrounds instead of random colours (the stick-figure config's choice; "
            "the benchmark's `colours` setting measures the random ones)."
        },
    )
    shards_per_process: int = field(default=2, metadata={"help": "Stick-figure shards per training process."})
    horizontal_flip: bool = field(default=True, metadata={"help": "Random horizontal flips (the paper's)."})
    skeleton: str | None = field(
        default=None, metadata={"help": "skeleton.json with the true bones; default: found in the eval data folder."}
    )


@dataclass
class TrainingArguments(StreamTrainingArguments):
    """The shared loop's arguments with the paper's optimiser defaults."""

    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (paper: 1e-4)."})
    weight_decay: float = field(default=1e-3, metadata={"help": "AdamW weight decay on every parameter (1e-3)."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    lr_schedule: str = field(
        default="cosine",
        metadata={
            "help": "cosine: linear warmup, then cosine decay. constant: the paper's (the official code has no "
            "scheduler); `--warmup_steps 0` for no warmup."
        },
    )
    shuffled_graph_seed: int = field(
        default=0, metadata={"help": "Seed of the permutation of the edge weights in the shuffled-graph control."}
    )


def parse_args(argv: Sequence[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    model_args, data_args, training_args = training.parse_args((ModelArguments, DataArguments, TrainingArguments), argv)
    if data_args.stick_figures == bool(data_args.train_data):
        raise ValueError("pass either `--stick_figures` or `--train_data` (an image folder, tar/parquet glob, Hub id)")
    if len(data_args.stick_figures_line_width.split(",")) != 2:
        raise ValueError(
            f"`--stick_figures_line_width` must be two fractions 'low,high', got {data_args.stick_figures_line_width!r}"
        )
    if training_args.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"`--lr_schedule` must be one of {LR_SCHEDULES}, got {training_args.lr_schedule!r}")
    if model_args.perceptual_backbone_steps < 1:
        raise ValueError(f"`--perceptual_backbone_steps` must be >= 1, got {model_args.perceptual_backbone_steps}")
    return model_args, data_args, training_args


def prepare_stick_figures(data_args: DataArguments, output_dir: Path, accelerator: Accelerator, seed: int) -> Path:
    """Writes the stick figures once (main process first; the others then find them); returns their folder."""
    data_dir = output_dir / "stick_figures_data"
    world_size = accelerator.num_processes
    with accelerator.main_process_first():
        if accelerator.is_main_process and not (data_dir / "skeleton.json").is_file():
            build_stick_figures(
                data_dir,
                num_train=data_args.stick_figures_num_train,
                num_eval=data_args.stick_figures_num_eval,
                image_size=data_args.stick_figures_image_size,
                backgrounds=data_args.stick_figures_backgrounds.split(","),
                max_rotation=data_args.stick_figures_max_rotation,
                line_width_range=tuple(float(value) for value in data_args.stick_figures_line_width.split(",")),
                colors=DARK_ON_LIGHT if data_args.stick_figures_fixed_colors else None,
                seed=seed,
                num_shards=world_size * data_args.shards_per_process,
                num_eval_shards=world_size,
                world_size=world_size,
                overwrite=True,
            )
    return data_dir


def build_model(model_args: ModelArguments) -> tuple[AutoLinkForSelfSupervisedKeypoints, AutoLinkImageProcessor]:
    """A fresh model from the preset (with overrides; `perceptual_loss="vgg"` with a `perceptual_backbone`) and its
    processor, or the checkpoint's; with `freeze_graph`, its edge scores are frozen (`requires_grad` False)."""
    model, processor = _new_or_pretrained_model(model_args)
    if model_args.perceptual_backbone and model.config.perceptual_loss != "vgg":
        raise ValueError(
            f"`--perceptual_backbone` needs a model with perceptual_loss='vgg', but {model_args.model_name_or_path} "
            f"has {model.config.perceptual_loss!r}"
        )
    if model_args.freeze_graph:
        model.autolink.graph.edge_scores.requires_grad_(False)
    return model, processor


def _new_or_pretrained_model(
    model_args: ModelArguments,
) -> tuple[AutoLinkForSelfSupervisedKeypoints, AutoLinkImageProcessor]:
    if model_args.model_name_or_path:
        model = AutoLinkForSelfSupervisedKeypoints.from_pretrained(model_args.model_name_or_path)
        return model, AutoLinkImageProcessor.from_pretrained(model_args.model_name_or_path)
    overrides = {
        name: value
        for name, value in (
            ("num_keypoints", model_args.num_keypoints),
            ("edge_thickness", model_args.edge_thickness),
            ("image_size", model_args.image_size),
            ("graph_lr_scale", model_args.graph_lr_scale),
            ("mask_grid_size", model_args.mask_grid_size),
        )
        if value is not None
    }
    if model_args.perceptual_backbone:
        overrides["perceptual_loss"] = "vgg"
    config = AutoLinkConfig.from_preset(model_args.model_preset, use_edge_map=model_args.use_edge_map, **overrides)
    size = {"height": config.image_size, "width": config.image_size}
    return AutoLinkForSelfSupervisedKeypoints(config), AutoLinkImageProcessor(size=size)


def build_optimizer(
    model: AutoLinkForSelfSupervisedKeypoints, training_args: TrainingArguments
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The paper's AdamW with weight decay on every trainable parameter (a frozen graph is left out), and the
    learning-rate schedule (`cosine` after a linear warmup, or the paper's `constant`)."""
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer, lr_scheduler = training.build_optimizer(
        model, training_args, [{"params": trainable, "weight_decay": training_args.weight_decay}]
    )
    if training_args.lr_schedule == "constant":
        lr_scheduler = get_constant_schedule_with_warmup(optimizer, training_args.warmup_steps)
    return optimizer, lr_scheduler


# --- the feature network standing in for VGG16 ---------------------------------------------------------------------
class FeatureNetwork(nn.Module):
    """A small VGG-style network: stages of (conv3x3, BatchNorm, ReLU) x 2 (BatchNorm as in VGG16-BN, so that it trains
    from scratch in a few hundred steps), a 2x2 max-pool before every stage but the first.

    Called on ImageNet-normalised RGB `(B, 3, s, s)`, it returns every stage's last ReLU output (as VGG16's relu1_2,
    relu2_2, relu3_3 cuts the paper's loss reads), the list `perceptual_loss="vgg"` expects; `classify` adds a linear
    head on the pooled last stage, used only to train it.
    """

    def __init__(self, hidden_sizes: Sequence[int] = (16, 32, 64), num_classes: int = 10) -> None:
        super().__init__()
        self.hidden_sizes = list(hidden_sizes)
        stages, in_channels = [], 3
        for index, width in enumerate(self.hidden_sizes):
            layers = [nn.MaxPool2d(2)] if index else []
            for conv_in in (in_channels, width):
                layers += [nn.Conv2d(conv_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            stages.append(nn.Sequential(*layers))
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            images = stage(images)
            features.append(images)
        return features

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """`(B, 3, s, s)` -> class logits `(B, num_classes)`."""
        return self.classifier(self(images)[-1].mean(dim=(2, 3)))


def colourised_fashion_mnist(images: np.ndarray, size: int, generator: torch.Generator) -> torch.Tensor:
    """Grayscale `(B, 28, 28)` uint8 -> ImageNet-normalised RGB `(B, 3, size, size)`: each image's ink and paper get
    random colours (as the stick figures' random colours), then the bilinear resize to the loss's input size."""
    ink = torch.from_numpy(images).float()[:, None] / 255  # (B, 1, 28, 28)
    figure, background = torch.rand(2, len(images), 3, 1, 1, generator=generator)
    rgb = background * (1 - ink) + figure * ink  # (B, 3, 28, 28) in [0, 1]
    rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (rgb - mean) / std


def train_feature_network(folder: Path, image_size: int, steps: int, seed: int) -> FeatureNetwork:
    """Trains a `FeatureNetwork` as a Fashion-MNIST classifier (Adam, lr 1e-3, `steps` batches of 128 drawn from the
    first min(60000, 128 steps) training images, random colours); saves its weights and its held-out accuracy (first
    2000 test images) into `folder`."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # a seeded init that leaves the run's own random state alone
        torch.manual_seed(seed)
        network = FeatureNetwork()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    train = load_fashion_mnist("train", limit=min(60_000, 128 * steps)).with_format("numpy")  # what it can sample
    train_images, train_labels = np.asarray(train["image"]), torch.as_tensor(np.asarray(train["label"]))
    for _ in tqdm(range(steps), desc="feature network on Fashion-MNIST"):
        index = torch.randint(len(train_images), (128,), generator=generator)
        inputs = colourised_fashion_mnist(train_images[index.numpy()], image_size, generator)
        loss = F.cross_entropy(network.classify(inputs), train_labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test = load_fashion_mnist("test", limit=2000).with_format("numpy")
    network.eval()
    with torch.no_grad():
        logits = network.classify(colourised_fashion_mnist(np.asarray(test["image"]), image_size, generator))
    accuracy = float((logits.argmax(-1).numpy() == np.asarray(test["label"])).mean())
    folder.mkdir(parents=True, exist_ok=True)
    save_file(network.state_dict(), str(folder / FEATURE_NETWORK_FILE))
    info = {"hidden_sizes": network.hidden_sizes, "image_size": image_size, "steps": steps, "seed": seed}
    (folder / FEATURE_NETWORK_INFO).write_text(json.dumps({**info, "test_accuracy": accuracy}, indent=2) + "\n")
    logger.info("feature network: Fashion-MNIST test accuracy %.3f (random colours)", accuracy, main_process_only=False)
    return network


def perceptual_backbone(
    folder: Path, image_size: int, steps: int, seed: int, accelerator: Accelerator
) -> tuple[FeatureNetwork, float]:
    """The feature network in `folder` (trained there first, on the main process, if absent) and its test accuracy."""
    with accelerator.main_process_first():
        if accelerator.is_main_process and not (folder / FEATURE_NETWORK_FILE).is_file():
            train_feature_network(folder, image_size, steps, seed)
    info = json.loads((folder / FEATURE_NETWORK_INFO).read_text())
    network = FeatureNetwork(info["hidden_sizes"])
    network.load_state_dict(load_file(str(folder / FEATURE_NETWORK_FILE)))
    return network, info["test_accuracy"]


class KeypointBatchCollator:
    """collate_fn of the training DataLoader: processor, seeded horizontal flip and block-mask noise."""

    def __init__(self, image_processor: AutoLinkImageProcessor, mask_grid_size: int, flip: bool, seed: int) -> None:
        self.image_processor = image_processor
        self.mask_grid_size = mask_grid_size
        self.flip = flip
        self.seed = seed
        self.epoch = 0

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [sample["__key__"] for sample in samples]
        generator = torch.Generator().manual_seed(training.batch_seed(self.seed, self.epoch, keys))
        pixel_values = self.image_processor([sample["image"] for sample in samples], return_tensors="pt").pixel_values
        if self.flip:
            flips = torch.rand(len(samples), generator=generator) < 0.5
            pixel_values = torch.where(flips[:, None, None, None], pixel_values.flip(-1), pixel_values)
        grid = self.mask_grid_size
        noise = torch.rand(len(samples), grid, grid, generator=generator)
        return {"pixel_values": pixel_values, "noise": noise, "keys": keys}


@dataclass
class EvalData:
    """The eval split, resized for the model, with its ground truth in the model input's pixel frame."""

    pixel_values: torch.Tensor  # (N, C, S, S)
    keypoints: np.ndarray  # (N, J, 2) pixel (x, y) at the model's input size
    images: list[Image.Image]  # the first OVERLAY_IMAGES originals, for drawing
    bones: list[list[int]] | None


def load_eval_data(
    data_args: DataArguments, eval_source: str, image_processor: AutoLinkImageProcessor
) -> EvalData | None:
    """Reads the eval split (images with ground-truth `keypoints`) and the true bones, or None without one."""
    try:
        stream = load_image_stream(eval_source, split=data_args.eval_split)
    except (ValueError, FileNotFoundError) as error:
        logger.warning("no evaluation: %s", error)
        return None
    if data_args.max_eval_samples:
        stream = stream.take(data_args.max_eval_samples)
    samples = [sample for sample in stream if sample["keypoints"]]
    if len(samples) < 8:
        logger.warning("no evaluation: the eval split has %d samples with ground-truth keypoints", len(samples))
        return None
    size = image_processor.size["height"], image_processor.size["width"]
    # Ground truth at the model input's size, as the processor's resize moves pixel centres: x' = (x + 0.5) s - 0.5.
    scales = np.array([[size[1], size[0]]]) / np.array([sample["image"].size for sample in samples])  # (N, 2)
    original = np.stack([np.asarray(sample["keypoints"], dtype=np.float64) for sample in samples])  # (N, J, 2)
    keypoints = (original + 0.5) * scales[:, None] - 0.5
    pixel_values = image_processor([sample["image"] for sample in samples], return_tensors="pt").pixel_values
    skeleton_path = Path(data_args.skeleton) if data_args.skeleton else Path(eval_source) / "skeleton.json"
    bones = json.loads(skeleton_path.read_text())["bones"] if skeleton_path.is_file() else None
    images = [sample["image"] for sample in samples[:OVERLAY_IMAGES]]
    return EvalData(pixel_values=pixel_values, keypoints=keypoints, images=images, bones=bones)


@contextlib.contextmanager
def shuffled_graph(model: AutoLinkForSelfSupervisedKeypoints, seed: int) -> Iterator[torch.Tensor]:
    """The shuffled-graph control: inside the block, the model's learned edge weights are permuted among the keypoint
    pairs i < j by a permutation seeded with `seed` (the same values on other pairs); restored bit-identical after.

    Yields:
        The permutation `(K (K - 1) / 2,)`: pair p (in `triu_indices` order) takes the weight of pair `permutation[p]`.
    """
    edge_scores = model.autolink.graph.edge_scores
    first, second = torch.triu_indices(*edge_scores.shape, offset=1, device=edge_scores.device)
    permutation = torch.randperm(len(first), generator=torch.Generator().manual_seed(seed)).to(edge_scores.device)
    learned = edge_scores.detach().clone()
    with torch.no_grad():  # w = softplus(sklr * S) elementwise: permuting the scores permutes the weights
        edge_scores[first, second] = learned[first, second][permutation]
    try:
        yield permutation
    finally:
        with torch.no_grad():
            edge_scores.copy_(learned)


@torch.no_grad()
def _predict(
    model: AutoLinkForSelfSupervisedKeypoints, data: EvalData, batch_size: int, device: torch.device
) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean reconstruction loss with fixed masks, keypoints `(N, K, 2)` in pixels, the graph `(K, K)`."""
    was_training = model.training
    model.eval()
    grid = model.config.mask_grid_size
    generator = torch.Generator().manual_seed(0)  # the same masks at every evaluation and in every run
    noise = torch.rand(len(data.pixel_values), grid, grid, generator=generator)
    losses, keypoints = [], []
    for start in range(0, len(data.pixel_values), batch_size):
        pixel_values = data.pixel_values[start : start + batch_size].to(device)
        outputs = model(pixel_values=pixel_values, noise=noise[start : start + batch_size].to(device))
        losses.append(float(outputs.loss) * len(pixel_values))
        keypoints.append(outputs.keypoints.float().cpu())
    model.train(was_training)
    height, width = data.pixel_values.shape[-2:]
    learned = (torch.cat(keypoints).numpy() + 1) / 2 * np.array([width - 1, height - 1])  # (N, K, 2) pixels
    return sum(losses) / len(learned), learned, outputs.edge_weights.float().cpu().numpy()


def _skeleton_scores(learned: np.ndarray, data: EvalData, edge_weights: np.ndarray) -> dict[str, float]:
    """`skeleton_recovery`'s two readings of the graph, each with its exact chance level, and the weight ratio."""
    recovery = load_metric("skeleton_recovery").compute(
        predictions=learned, references=data.keypoints, edge_weights=edge_weights, bones=data.bones
    )
    return {
        **{name: float(recovery[name]) for name in SKELETON_SCORES},
        "spanning_tree_match": float(recovery["spanning_tree_match"]),
    }


def evaluate_keypoints(
    model: AutoLinkForSelfSupervisedKeypoints,
    data: EvalData,
    batch_size: int,
    device: torch.device,
    shuffled_graph_seed: int = 0,
) -> dict[str, float]:
    """Reconstruction loss with fixed masks, regressed keypoint error and skeleton recovery (with chance levels) on
    the eval split; with true bones, also the shuffled-graph control (`shuffled_graph_*`: the reconstruction loss and
    the skeleton scores of the same model with its edge weights permuted among the pairs)."""
    reconstruction_loss, learned, edge_weights = _predict(model, data, batch_size, device)
    metrics = {"reconstruction_loss": reconstruction_loss, "num_samples": float(len(learned))}
    regression = load_metric("keypoint_regression_error").compute(
        predictions=learned, references=data.keypoints, num_fit=len(learned) // 2, normalizer="bbox_diagonal"
    )
    metrics.update(keypoint_nme=regression["nme"], mean_pose_nme=regression["mean_pose_nme"])
    if data.bones is not None:
        metrics.update(_skeleton_scores(learned, data, edge_weights))
        with shuffled_graph(model, shuffled_graph_seed):
            shuffled_loss, _, shuffled_weights = _predict(model, data, batch_size, device)
        metrics["shuffled_graph_reconstruction_loss"] = shuffled_loss
        for name, value in _skeleton_scores(learned, data, shuffled_weights).items():
            metrics[f"shuffled_graph_{name}"] = value
    return metrics


@torch.no_grad()
def save_overlays(
    model: AutoLinkForSelfSupervisedKeypoints, processor: AutoLinkImageProcessor, data: EvalData, path: Path
) -> None:
    """Held-out images side by side, each with its detected keypoints and the graph's strong edges."""
    was_training = model.training
    model.eval()
    pixel_values = processor(data.images, return_tensors="pt").pixel_values.to(model.device)
    outputs = model.autolink(pixel_values)
    results = processor.post_process_keypoint_detection(
        outputs, target_sizes=[image.size[::-1] for image in data.images]
    )
    draw_keypoint_strip(data.images, results).save(path)
    model.train(was_training)


def save_graph_plot(model: AutoLinkForSelfSupervisedKeypoints, path: Path) -> None:
    """The learned graph as a heatmap: the weight of every keypoint pair (matplotlib, the `plots` extra)."""
    weights = model.autolink.graph().detach().float().cpu()  # (K, K), symmetric, zero diagonal
    plot_matrix(weights, path, title="learned graph: edge weight of each keypoint pair", colorbar_label="weight")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the training; returns the final metrics (eval metrics on the main process)."""
    model_args, data_args, training_args = parse_args(argv)
    output_dir = Path(training_args.output_dir)
    accelerator = training.make_accelerator(training_args)
    run_config = training.run_config(model_args, data_args, training_args)
    # Refuses to resume another run's checkpoint or to mix a fresh run into one (--overwrite_output_dir starts over).
    resume_checkpoint = training.prepare_output_dir(accelerator, training_args, run_config)
    if data_args.stick_figures:
        data_dir = prepare_stick_figures(data_args, output_dir, accelerator, training_args.seed)
        train_source = eval_source = str(data_dir)
    else:
        train_source, eval_source = data_args.train_data, data_args.eval_data or data_args.train_data

    model, processor = build_model(model_args)
    logger.info("%.2fM parameters", sum(parameter.numel() for parameter in model.parameters()) / 1e6)
    backbone_accuracy = None
    if model_args.perceptual_backbone:
        backbone, backbone_accuracy = perceptual_backbone(
            Path(model_args.perceptual_backbone),
            model.config.perceptual_image_size,
            model_args.perceptual_backbone_steps,
            training_args.seed,
            accelerator,
        )
        model.set_perceptual_backbone(backbone.to(accelerator.device))
    # The paper decays every parameter (the graph logits included; its x512 reparametrisation is in the model).
    optimizer, lr_scheduler = build_optimizer(model, training_args)

    collator = KeypointBatchCollator(
        processor, model.config.mask_grid_size, data_args.horizontal_flip, training_args.seed
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

    eval_data = load_eval_data(data_args, eval_source, processor) if accelerator.is_main_process else None

    def evaluate(unwrapped: nn.Module) -> dict[str, float]:
        metrics = evaluate_keypoints(
            unwrapped,
            eval_data,
            data_args.per_device_eval_batch_size,
            accelerator.device,
            training_args.shuffled_graph_seed,
        )
        if backbone_accuracy is not None:
            metrics["perceptual_backbone_test_accuracy"] = backbone_accuracy
        return metrics

    accelerator.init_trackers("train_autolink", config={k: v for k, v in run_config.items() if v is not None})
    metrics = training.train(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        stream,
        training_args,
        global_step,
        forward=lambda model, batch: model(**batch),
        loss_terms=LOSS_TERMS,
        evaluate=evaluate if eval_data is not None else None,
        extra_logs=lambda unwrapped: {
            "train/max_edge_weight": float(unwrapped.autolink.graph().detach().max()),
            "train/masked_image_scale": float(unwrapped.masked_image_scale.detach()),
        },
        description="train autolink",
        run_arguments=run_config,
    )

    def card_pictures(final_dir: Path) -> None:
        if eval_data is not None:
            save_overlays(accelerator.unwrap_model(model), processor, eval_data, final_dir / "keypoints.png")
        try:
            save_graph_plot(accelerator.unwrap_model(model), final_dir / "edge_weights.png")
        except ImportError as error:  # matplotlib is optional
            logger.warning("no edge_weights.png: %s", error)

    training.save_final(accelerator, model, processor, output_dir, metrics, run_config, card_pictures=card_pictures)
    training.finish(accelerator)
    return metrics


if __name__ == "__main__":
    main()
    training.exit_cleanly()
