"""Convert an official AutoLink checkpoint to hfvision (config, safetensors, image processor, pipeline, model card).

The official code (https://github.com/xingzhehe/AutoLink-Self-supervised-Learning-of-Human-Skeletons-and-Object-Outlines-by-Linking-Keypoints)
releases PyTorch Lightning checkpoints (`checkpoints/<run>/model.ckpt`, e.g. `celeba_wild_k8_m0.8_b16_t0.0025_sklr512`):
the `state_dict` of its `Model` (keys `encoder.detector.*`, `decoder.*` and `vgg_loss.*`) and the run's
hyper-parameters (`n_parts`, `thick`, `missing`, `block`, `sklr`, `image_size`). Widths and depths are read from the
weights' shapes, the rest from the hyper-parameters.

    python -m hfvision.models.autolink.convert_autolink_original_to_hf \
        --checkpoint_path checkpoints/celeba_wild_k8_m0.8_b16_t0.0025_sklr512/model.ckpt \
        --output_dir autolink-celeba-wild-k8 [--push_to_hub org/autolink-celeba-wild-k8]

Every tensor of the checkpoint is mapped onto `AutoLinkForSelfSupervisedKeypoints` (same shape) or dropped for a
stated reason, and every tensor of the hfvision model is filled; otherwise nothing is written. By design:
- the biases of the convolutions followed by BatchNorm (hfvision's have none) are folded into the BatchNorm's running
  mean: BN(conv(x) + b) = BN'(conv(x)) with running_mean' = running_mean - b, exact in eval mode (in training mode
  BatchNorm subtracts the batch mean and the bias cancels anyway); the bilinear x0.5 between the detector's
  convolutions and their BatchNorm averages, so it carries the constant through unchanged;
- the heatmap convolution's bias is dropped: one constant per map, which the spatial softmax ignores;
- the detector's `coord` grid is checked against the soft-argmax grid hfvision computes, then dropped;
- `vgg_loss.*`, the loss's frozen ImageNet VGG16, is dropped: it is not part of the model. The converted config keeps
  `perceptual_loss="vgg"` (how the authors trained); to fine-tune with it pass a backbone
  (`from_pretrained(..., perceptual_backbone=...)`), or set `perceptual_loss="l1_ssim"`.

The checkpoint is read with `torch.load(weights_only=True)`: no code from it runs. Lightning pickles non-tensor
objects beside the weights (its `AttributeDict` of hyper-parameters, callback classes); each such global is replaced
by an inert stand-in that only records its arguments.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .configuration_autolink import AutoLinkConfig
from .image_processing_autolink import AutoLinkImageProcessor
from .modeling_autolink import AutoLinkForSelfSupervisedKeypoints

OFFICIAL_REPOSITORY = (
    "xingzhehe/AutoLink-Self-supervised-Learning-of-Human-Skeletons-and-Object-Outlines-by-Linking-Keypoints"
)
# The official detector resizes every input to 128 px and its decoder draws the edge map at 128 px.
OFFICIAL_IMAGE_SIZE = 128
# What `--preset` fixes: the checkpoint must have the preset's network and graph settings.
ARCHITECTURE_FIELDS = (
    "num_channels",
    "num_keypoints",
    "image_size",
    "edge_thickness",
    "detector_hidden_sizes",
    "detector_upsample_sizes",
    "decoder_hidden_sizes",
)


# Copied from hfvision.models.lps.convert_lps_original_to_hf._Unpickled
class _Unpickled:
    """Inert stand-in for an object the checkpoint pickled beside its tensors; records its arguments, runs nothing.

    Rebuilt without arguments (a dict subclass such as Lightning's `AttributeDict`, whose items follow), it becomes a
    plain `dict`. A `functools.partial` keeps `(func, args, keywords, dict)` in `state`.
    """

    global_name = ""

    def __new__(cls, *args: Any) -> Any:
        if not args:
            return {}
        return super().__new__(cls)

    def __init__(self, *args: Any) -> None:
        self.arguments = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


# Copied from hfvision.models.lps.convert_lps_original_to_hf.load_original_checkpoint
def load_original_checkpoint(checkpoint_path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an official checkpoint's weights and hyper-parameters without running code from it.

    Accepts a Lightning checkpoint (`state_dict` + `hyper_parameters`), a `{"model": state_dict}` or
    `{"state_dict": ...}` file, or a bare state dict, as `.ckpt`, `.pth`, `.pth.tar` or `.pt`. `module.` prefixes
    (DataParallel / DistributedDataParallel) are removed.

    Returns:
        The state dict and the hyper-parameters (empty when the file has none).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file holds no state dict of tensors.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint_path {path} does not exist")
    try:  # the MAE-family training scripts save their `argparse.Namespace` (plain data) beside the weights
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        names = set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) - {"argparse.Namespace"}
        stand_ins = [(type(name, (_Unpickled,), {"global_name": name}), name) for name in sorted(names)]
        with torch.serialization.safe_globals([argparse.Namespace, *stand_ins]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"checkpoint_path {path} holds a {type(checkpoint).__name__}, not a state dict")
    hyper_parameters = checkpoint.get("hyper_parameters")
    for key in ("state_dict", "model"):
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    if not checkpoint or not all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        raise ValueError(
            f"checkpoint_path {path} holds no state dict of tensors (looked at the file, `state_dict` and `model`)"
        )
    state_dict = {}
    for key, value in checkpoint.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        state_dict[key] = value
    return state_dict, dict(hyper_parameters) if isinstance(hyper_parameters, Mapping) else {}


def _indices(state_dict: dict[str, torch.Tensor], pattern: str) -> list[int]:
    return sorted({int(match.group(1)) for key in state_dict if (match := re.fullmatch(pattern, key))})


def config_from_checkpoint(state_dict: dict[str, torch.Tensor], hyper_parameters: dict[str, Any]) -> AutoLinkConfig:
    """The `AutoLinkConfig` of an official checkpoint: widths from the weights, the rest from the hyper-parameters.

    Raises:
        ValueError: if the checkpoint is not an official AutoLink model, or lacks a hyper-parameter.
    """
    required = ("decoder.skeleton_scalar", "encoder.detector.coord", "encoder.detector.conv.0.net.0.weight")
    absent = [key for key in (*required, "decoder.down0.0.weight") if key not in state_dict]
    if absent:
        raise ValueError(f"the state dict has no {absent}: not an official AutoLink checkpoint")
    missing = [name for name in ("thick", "missing", "block", "sklr") if name not in hyper_parameters]
    if missing:
        raise ValueError(
            f"the checkpoint's hyper-parameters lack {missing}; the official Lightning checkpoints record them "
            "(train.py's --thick, --missing, --block, --sklr)"
        )
    image_size = int(hyper_parameters.get("image_size", OFFICIAL_IMAGE_SIZE))
    if image_size != OFFICIAL_IMAGE_SIZE:
        raise ValueError(f"image_size {image_size}: the official model only runs at {OFFICIAL_IMAGE_SIZE} px")
    down = _indices(state_dict, r"encoder\.detector\.conv\.(\d+)\.conv_res\.0\.weight")
    up = [i for i in _indices(state_dict, r"encoder\.detector\.conv\.(\d+)\.net\.1\.weight") if i not in down]
    decoder_down = _indices(state_dict, r"decoder\.down(\d+)\.net\.0\.weight")
    num_keypoints = state_dict["decoder.skeleton_scalar"].shape[0]
    return AutoLinkConfig(
        num_channels=state_dict["encoder.detector.conv.0.net.0.weight"].shape[1],
        num_keypoints=num_keypoints,
        image_size=image_size,
        edge_map_size=image_size,
        edge_thickness=float(hyper_parameters["thick"]),
        mask_ratio=float(hyper_parameters["missing"]),
        mask_grid_size=int(hyper_parameters["block"]),
        graph_lr_scale=float(hyper_parameters["sklr"]),
        detector_hidden_sizes=[state_dict[f"encoder.detector.conv.{i}.net.0.weight"].shape[0] for i in down],
        detector_upsample_sizes=[state_dict[f"encoder.detector.conv.{i}.net.1.weight"].shape[0] for i in up],
        decoder_hidden_sizes=[state_dict["decoder.down0.0.weight"].shape[0]]
        + [state_dict[f"decoder.down{i}.net.0.weight"].shape[0] for i in decoder_down],
        perceptual_loss="vgg",
    )


def _rules(config: AutoLinkConfig) -> list[tuple[str, str | None]]:
    """(official key pattern, hfvision name) pairs; a name `fold:<norm>` folds a conv bias into that BatchNorm, None
    drops the tensor."""
    detector, num_down = "autolink.detector.", len(config.detector_hidden_sizes)
    norm = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
    rules = [
        (r"encoder\.detector\.coord", None),  # checked against the soft-argmax grid
        (r"vgg_loss\..+", None),  # the loss's frozen VGG16
        (r"decoder\.alpha", "masked_image_scale"),
        (r"decoder\.skeleton_scalar", "autolink.graph.edge_scores"),
        (r"decoder\.down0\.0\.(weight|bias)", r"decoder.stem.0.\1"),
        (r"decoder\.conv\.(weight|bias)", r"decoder.output_conv.\1"),
    ]
    for index in range(num_down):
        official, ours = rf"encoder\.detector\.conv\.{index}\.", f"{detector}down_blocks.{index}."
        rules += [
            (official + r"net\.0\.weight", ours + "conv1.weight"),
            (official + r"net\.0\.bias", f"fold:{ours}norm1"),
            (official + rf"net\.2\.{norm}", ours + r"norm1.\1"),
            (official + r"net\.4\.weight", ours + "conv2.weight"),
            (official + r"net\.4\.bias", f"fold:{ours}norm2"),
            (official + rf"net\.5\.{norm}", ours + r"norm2.\1"),
            (official + r"conv_res\.0\.weight", ours + "shortcut_conv.weight"),
            (official + r"conv_res\.0\.bias", f"fold:{ours}shortcut_norm"),
            (official + rf"conv_res\.2\.{norm}", ours + r"shortcut_norm.\1"),
        ]
    for offset in range(len(config.detector_upsample_sizes)):
        official, ours = rf"encoder\.detector\.conv\.{num_down + offset}\.", f"{detector}up_blocks.{offset}."
        rules += [
            (official + r"net\.1\.weight", ours + "conv.weight"),
            (official + r"net\.1\.bias", f"fold:{ours}norm"),
            (official + rf"net\.2\.{norm}", ours + r"norm.\1"),
        ]
    head = num_down + len(config.detector_upsample_sizes)
    rules += [
        (rf"encoder\.detector\.conv\.{head}\.weight", f"{detector}heatmap_head.weight"),
        (rf"encoder\.detector\.conv\.{head}\.bias", None),  # one constant per map: the spatial softmax ignores it
    ]
    for index in range(1, len(config.decoder_hidden_sizes)):
        for official, ours, layers in (
            (rf"decoder\.down{index}\.net\.", f"decoder.down_blocks.{index - 1}.", (0, 1, 3, 4)),
            (rf"decoder\.up{index}\.net\.", f"decoder.up_blocks.{index - 1}.", (1, 2, 4, 5)),
        ):
            conv1, norm1, conv2, norm2 = layers
            rules += [
                (official + rf"{conv1}\.weight", ours + "conv1.weight"),
                (official + rf"{conv1}\.bias", f"fold:{ours}norm1"),
                (official + rf"{norm1}\.{norm}", ours + r"norm1.\1"),
                (official + rf"{conv2}\.weight", ours + "conv2.weight"),
                (official + rf"{conv2}\.bias", f"fold:{ours}norm2"),
                (official + rf"{norm2}\.{norm}", ours + r"norm2.\1"),
            ]
    return rules


def _soft_argmax_grid(size: int) -> torch.Tensor:
    """The official detector's `coord`: (row, col) of every heatmap cell on the align-corners [-1, 1] grid."""
    line = torch.linspace(-1, 1, size)
    rows, cols = torch.meshgrid(line, line, indexing="ij")
    return torch.stack([rows, cols], dim=-1).reshape(1, 1, size * size, 2)


def convert_state_dict(state_dict: dict[str, torch.Tensor], config: AutoLinkConfig) -> dict[str, torch.Tensor]:
    """Map an official state dict onto `AutoLinkForSelfSupervisedKeypoints(config)`, checking every tensor.

    Raises:
        ValueError: listing the official keys without a counterpart, the hfvision tensors left unfilled, shape
            mismatches, and a `coord` grid that is not the soft-argmax grid.
    """
    with torch.device("meta"):  # names and shapes only
        expected = AutoLinkForSelfSupervisedKeypoints(config).state_dict()
    rules = [(re.compile(pattern), target) for pattern, target in _rules(config)]
    converted, folds, unexpected, problems = {}, {}, [], []
    for key, value in state_dict.items():
        rule = next(((pattern, target) for pattern, target in rules if pattern.fullmatch(key)), None)
        if rule is None:
            unexpected.append(key)
            continue
        pattern, target = rule
        if key == "encoder.detector.coord":
            grid = _soft_argmax_grid(config.heatmap_size)
            if value.shape != grid.shape or not torch.allclose(value, grid, atol=1e-6):
                problems.append(f"{key} is not the {config.heatmap_size}x{config.heatmap_size} soft-argmax grid")
            continue
        if target is None:
            continue
        if target.startswith("fold:"):
            folds[target.removeprefix("fold:") + ".running_mean"] = (key, value)
            continue
        name = pattern.sub(target, key)
        if name not in expected:
            unexpected.append(key)
        elif value.shape != expected[name].shape:
            problems.append(f"{key} {tuple(value.shape)} -> {name} {tuple(expected[name].shape)}")
        else:
            converted[name] = value.to(expected[name].dtype)
    for name, (key, bias) in folds.items():  # BN(conv(x) + b) = BN'(conv(x)) with running_mean' = running_mean - b
        if name in converted and bias.shape == converted[name].shape:
            converted[name] = converted[name] - bias.to(converted[name].dtype)
        else:
            problems.append(f"{key} {tuple(bias.shape)} has no BatchNorm {name} of that size to fold into")
    missing = sorted(set(expected) - set(converted))
    if unexpected or missing or problems:
        raise ValueError(
            "the checkpoint does not map onto AutoLinkForSelfSupervisedKeypoints; nothing was written:\n"
            + "\n".join(
                [f"  unexpected (no counterpart): {key}" for key in unexpected]
                + [f"  missing (not in the checkpoint): {key}" for key in missing]
                + [f"  {problem}" for problem in problems]
            )
        )
    return converted


def check_preset(config: AutoLinkConfig, preset: str) -> None:
    """Raise a `ValueError` naming the differences unless `config` has the network of `AutoLinkConfig` `preset`."""
    expected = AutoLinkConfig.from_preset(preset)
    differences = [
        f"{field} {getattr(config, field)!r} (preset: {getattr(expected, field)!r})"
        for field in ARCHITECTURE_FIELDS
        if getattr(config, field) != getattr(expected, field)
    ]
    if differences:
        raise ValueError(f"the checkpoint is not {preset}: " + ", ".join(differences))


def convert_autolink_checkpoint(
    checkpoint_path: str | Path, output_dir: str | Path, preset: str | None = None, push_to_hub: str | None = None
) -> AutoLinkForSelfSupervisedKeypoints:
    """Convert, check, then write config + safetensors + image processor + pipeline code + model card (and publish).

    Args:
        checkpoint_path: the official checkpoint (`model.ckpt`; `.pth`, `.pth.tar`, `.pt` too).
        output_dir: where `save_pretrained` writes.
        preset: an `AutoLinkConfig` preset the checkpoint must match (`autolink-faces`, ...); None accepts the
            settings the checkpoint holds.
        push_to_hub: publish the folder to this repo id (`org/name`) through `hfvision.hub.publish`.

    Returns:
        The converted model, in eval mode.
    """
    state_dict, hyper_parameters = load_original_checkpoint(checkpoint_path)
    config = config_from_checkpoint(state_dict, hyper_parameters)
    if preset is not None:
        check_preset(config, preset)
    converted = convert_state_dict(state_dict, config)
    model = AutoLinkForSelfSupervisedKeypoints(config)
    model.load_state_dict(converted, strict=True)
    model.eval()
    # everything is checked: write
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)  # with the keypoint-detection pipeline's code and `custom_pipelines` entry
    AutoLinkImageProcessor(size={"height": config.image_size, "width": config.image_size}).save_pretrained(output_dir)
    model_id = push_to_hub or f"local/{output_dir.resolve().name}"
    run_name = str(hyper_parameters.get("log") or Path(checkpoint_path).parent.name)
    _model_card(config, hyper_parameters, run_name, model_id).save(output_dir / "README.md")
    if push_to_hub:
        from hfvision.hub.publish import publish  # the converter runs with hfvision installed; the model code does not

        publish(output_dir, push_to_hub)
    return model


def _model_card(config: AutoLinkConfig, hyper_parameters: dict[str, Any], run_name: str, model_id: str) -> Any:
    from hfvision.hub.card import render_model_card

    dataset = hyper_parameters.get("dataset", "the official run's data set")
    return render_model_card(
        "autolink",
        # the license of the authors' release (MIT)
        license="mit",
        model_id=model_id,
        eval_results=[],
        training_config={
            "converted_from": run_name,
            "official_code": f"https://github.com/{OFFICIAL_REPOSITORY}",
            "converter": "hfvision/models/autolink/convert_autolink_original_to_hf.py",
            "hyper_parameters": {
                key: hyper_parameters[key]
                for key in ("n_parts", "thick", "missing", "block", "sklr", "image_size", "lr", "batch_size", "dataset")
                if key in hyper_parameters
            },
        },
        datasets=[],
        pipeline_tag="keypoint-detection",
        training_data=f"`{dataset}` (the official data loader), trained by the authors with the official code.",
        architecture="AutoLinkForSelfSupervisedKeypoints",
        num_keypoints=config.num_keypoints,
        edge_thickness=config.edge_thickness,
        graph_lr_scale=config.graph_lr_scale,
        perceptual_loss="vgg",
        perceptual_backbone_description="(the authors': torchvision's ImageNet VGG16 cut after relu1_2, relu2_2, "
        "relu3_3 and relu4_3; hfvision does not ship it)",
        model_description=(
            f"The authors' released AutoLink checkpoint `{run_name}`, converted to hfvision with "
            "`convert_autolink_original_to_hf.py`. The converter maps every tensor and refuses a checkpoint that does "
            "not map completely; a test checks that the converted model reproduces the official code's keypoints "
            "and heatmaps to 1e-5, and its edge map and reconstruction to 1e-4 (the keypoints' float32 rounding, "
            "amplified by the thin lines). The keypoint accuracy of this checkpoint is the paper's and was "
            "not re-measured here. The weights are the authors', released with the official code under the MIT "
            "License."
        ),
        training_data_description=(
            "Converted weights: hfvision neither re-trained nor re-evaluated this checkpoint (see the paper for its "
            "keypoint error on its data set)."
        ),
        extra_deviations=[
            "Converted from the official checkpoint: the official convolution biases before BatchNorm are folded "
            "into the running means (exact in eval mode) and the heatmap convolution's bias is dropped (the spatial "
            "softmax ignores it).",
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint_path", required=True, help="official checkpoint (model.ckpt/.pth/.pt)")
    parser.add_argument("--output_dir", required=True, help="folder for the converted checkpoint")
    parser.add_argument(
        "--preset",
        choices=sorted(AutoLinkConfig.PRESETS),
        help="check that the checkpoint is this setting (default: convert the one it holds)",
    )
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="publish the converted folder to this repo")
    args = parser.parse_args(argv)
    try:
        model = convert_autolink_checkpoint(args.checkpoint_path, args.output_dir, args.preset, args.push_to_hub)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(1, f"error: {error}\n")
    print(f"wrote {args.output_dir} ({model.num_parameters():,} parameters)")
    print(json.dumps({"num_keypoints": model.config.num_keypoints, "edge_thickness": model.config.edge_thickness}))


if __name__ == "__main__":
    main()
