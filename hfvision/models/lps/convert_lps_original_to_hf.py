"""Convert an official LPS checkpoint to an hfvision LPS-ResNet (config, safetensors, image processor, model card).

The official code (https://github.com/raymondyeh07/learnable_polyphase_sampling) releases its ImageNet classifiers as
PyTorch Lightning checkpoints (`ResNet18_LPS_circular_basic.ckpt`, ...): a `state_dict` of the `ResNet18Custom` /
`ResNet50Custom` / `ResNet101Custom` module (keys `core.<torchvision ResNet name>`), with the hyper-parameters of the
run pickled beside it. The architecture is read from the checkpoint: stem, block type, depths and widths from the
weights' names and shapes, the low-pass filter from its stored taps, the padding from the run's `padding_mode`.

    python -m hfvision.models.lps.convert_lps_original_to_hf \
        --checkpoint_path checkpoints/classification/ResNet18_LPS_circular_basic.ckpt \
        --output_dir lps-resnet18-imagenet [--labels_file imagenet_classes.txt] [--push_to_hub org/lps-resnet18]

Every tensor of the checkpoint is either mapped to a parameter or buffer of `LpsResNetForImageClassification` (same
shape) or dropped for a stated reason, and every tensor of the hfvision model is filled; otherwise nothing is
written. Dropped by design:
- the bias of the scoring network's second convolution: it adds one constant to the scores of all 4 components,
  which changes neither the argmax nor the Gumbel-softmax (hfvision's scorer has no such bias);
- the residual shortcuts' `gumbel_tau` buffers (the shortcut reuses the main branch's decision, never samples);
- the low-pass filters' `filt` buffers, after checking that they hold the binomial taps hfvision computes.

Refused, with the reason: checkpoints without LPS layers, DDAC anti-aliasing (the `*_DDAC3_*` releases: LpsResNet
has the layer, `antialias="ddac"`, but no official DDAC outputs are in the test fixture to check a mapping), zero-padded
networks (the released `*_zero*` ResNet-50/101: the official code still pads the LPS scorer, the low-pass filter and
the stem's max-pool circularly there, which `LpsResNetConfig.padding_mode` cannot express) and runs with
`--swap_conv_pool`, `--conv1_stride`, `--maxpool_zpad`, `--LPS_convex`, `--LPS_gumbel` or `--selection_noantialias`.

The checkpoint is read with `torch.load(weights_only=True)`: no code from it runs. Lightning pickles non-tensor
objects beside the weights (the pooling layer as a `functools.partial`, its `AttributeDict`, callback classes); each
such global is replaced by an inert stand-in that only records its arguments, so the hyper-parameters stay readable.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .configuration_lps import LpsResNetConfig
from .image_processing_lps import LpsImageProcessor
from .modeling_lps import LpsResNetForImageClassification

OFFICIAL_REPOSITORY = "raymondyeh07/learnable_polyphase_sampling"
# Hub id of the data set the released classifiers were trained on (their 1000 classes).
IMAGENET_HUB_ID = "ILSVRC/imagenet-1k"
# What `--preset` fixes: the checkpoint must have the preset's network.
ARCHITECTURE_FIELDS = ("num_channels", "embedding_size", "hidden_sizes", "depths", "layer_type", "stem")


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


def _partial_keywords(value: Any) -> dict[str, Any]:
    """The keyword arguments of a pickled `functools.partial` stand-in (empty for anything else)."""
    state = getattr(value, "state", None)
    if getattr(value, "global_name", "") == "functools.partial" and isinstance(state, tuple) and len(state) >= 3:
        return dict(state[2] or {})
    return {}


def _check_run_options(hyper_parameters: dict[str, Any], padding_mode: str) -> None:
    """Refuse official options whose behaviour hfvision's LPS-ResNet does not reproduce."""
    extras = hyper_parameters.get("extras_model") or {}
    for flag in ("swap_conv_pool", "conv1_stride", "maxpool_zpad"):
        if extras.get(flag):
            raise ValueError(f"the checkpoint was trained with --{flag}, which LpsResNet does not implement")
    pool = _partial_keywords(hyper_parameters.get("pooling_layer"))
    for flag, name in (("comp_convex", "LPS_convex"), ("comp_fix_train", "LPS_gumbel"), ("selection_noantialias", "")):
        if pool.get(flag):
            raise ValueError(f"the checkpoint was trained with --{name or flag}, which LpsResNet does not implement")
    logits_pad = pool.get("logits_pad", padding_mode)
    antialias_pad = _partial_keywords(pool.get("antialias_layer")).get("padding_mode", padding_mode)
    if logits_pad != padding_mode or antialias_pad != padding_mode:
        raise ValueError(
            f"the checkpoint pads its convolutions with {padding_mode!r}, the LPS scorer with {logits_pad!r} and the "
            f"low-pass filter with {antialias_pad!r}; LpsResNet pads all three with `padding_mode`"
        )


def _binomial_filter(size: int, channels: int) -> torch.Tensor:
    taps = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float64)
    kernel = torch.outer(taps, taps)
    return (kernel / kernel.sum()).expand(channels, 1, size, size)


def _stage_blocks(state_dict: dict[str, torch.Tensor], stage: int) -> int:
    return len({int(match.group(1)) for key in state_dict if (match := re.match(rf"core\.layer{stage}\.(\d+)\.", key))})


def config_from_checkpoint(
    state_dict: dict[str, torch.Tensor],
    hyper_parameters: dict[str, Any],
    padding_mode: str | None = None,
    id2label: dict[int, str] | None = None,
) -> LpsResNetConfig:
    """The `LpsResNetConfig` of an official LPS classifier, from its weights and hyper-parameters.

    Args:
        state_dict: the official state dict (`core.` keys).
        hyper_parameters: the Lightning hyper-parameters (may be empty).
        padding_mode: the run's padding (`--circular_pad` gives "circular"); read from the hyper-parameters when None.
        id2label: class names; default `LABEL_<i>`.

    Raises:
        ValueError: if the checkpoint is not an LPS ResNet classifier hfvision reproduces.
    """
    saved_padding = hyper_parameters.get("padding_mode")
    if padding_mode is None:
        padding_mode = saved_padding
    if padding_mode is None:
        raise ValueError(
            "the checkpoint does not record its padding; pass padding_mode ('circular' for runs trained with "
            "--circular_pad, else 'zeros')"
        )
    if saved_padding is not None and saved_padding != padding_mode:
        raise ValueError(f"padding_mode {padding_mode!r} contradicts the checkpoint's {saved_padding!r}")
    if padding_mode != "circular":
        raise ValueError(
            f"the checkpoint pads its convolutions with {padding_mode!r}; the official code still pads the LPS "
            "scorer, the low-pass filter and the stem's max-pool circularly (its --LPS_pad, --antialias_padding_mode "
            "and --maxpool_zpad defaults), which LpsResNet, with one padding_mode for all, cannot reproduce"
        )
    _check_run_options(hyper_parameters, padding_mode)
    if "core.conv1.weight" not in state_dict or "core.fc.weight" not in state_dict:
        raise ValueError("the state dict has no `core.conv1.weight` / `core.fc.weight`: not an official LPS ResNet")
    if not any(".component_selection.get_logits." in key for key in state_dict):
        raise ValueError("the checkpoint has no LPS layers (component_selection.get_logits); only LPS is converted")
    ddac = sorted(key for key in state_dict if "._antialias_layer." in key and not key.endswith(".filt"))
    if ddac:
        raise ValueError(
            f'DDAC anti-aliasing ({ddac[0]}, ...) is not converted: LpsResNet has the layer (`antialias="ddac"`), '
            "but its weight mapping is not yet checked against the official model's outputs"
        )
    bottleneck = "core.layer1.0.conv3.weight" in state_dict
    depths = []
    while blocks := _stage_blocks(state_dict, len(depths) + 1):
        depths.append(blocks)
    last_norms = [f"core.layer{stage}.0.{'bn3' if bottleneck else 'bn2'}.weight" for stage in range(1, len(depths) + 1)]
    if not depths or any(key not in state_dict for key in last_norms):
        raise ValueError(f"the state dict lacks the residual stages' {last_norms or 'layer1'}: not an LPS ResNet")
    hidden_sizes = [state_dict[key].shape[0] for key in last_norms]
    scorer_widths = {
        key: (value.shape[0], value.shape[1])
        for key, value in state_dict.items()
        if key.endswith(".get_logits.conv1.weight")
    }
    if all(hidden == channels for hidden, channels in scorer_widths.values()):
        logits_hidden_size = None
    elif len({hidden for hidden, _ in scorer_widths.values()}) == 1:
        logits_hidden_size = next(iter(scorer_widths.values()))[0]
    else:
        raise ValueError(
            f"the LPS scorers have per-layer widths {sorted(set(scorer_widths.values()))} (--logits_channels); "
            "LpsResNet has one `logits_hidden_size`"
        )
    filter_sizes = {value.shape[-1] for key, value in state_dict.items() if key.endswith("._antialias_layer.filt")}
    if len(filter_sizes) > 1:
        raise ValueError(f"the low-pass filters have several sizes {sorted(filter_sizes)}")
    tau_key = next(iter(scorer_widths)).replace("get_logits.conv1.weight", "gumbel_tau")
    num_labels = state_dict["core.fc.weight"].shape[0]
    return LpsResNetConfig(
        num_channels=state_dict["core.conv1.weight"].shape[1],
        embedding_size=state_dict["core.conv1.weight"].shape[0],
        hidden_sizes=hidden_sizes,
        depths=depths,
        layer_type="bottleneck" if bottleneck else "basic",
        stem="imagenet" if state_dict["core.conv1.weight"].shape[-1] == 7 else "cifar",
        downsample="lps",
        padding_mode=padding_mode,
        gumbel_tau=float(state_dict[tau_key]) if tau_key in state_dict else 1.0,
        logits_hidden_size=logits_hidden_size,
        lowpass_filter_size=next(iter(filter_sizes), 0),
        id2label=id2label or {index: f"LABEL_{index}" for index in range(num_labels)},
    )


# What a polyphase layer of the official code holds, relative to the layer: (pattern, hfvision name or None = dropped)
_POOL_RULES = (
    (r"component_selection\.get_logits\.conv1\.(weight|bias)", r"logits_model.conv1.\1"),
    (r"component_selection\.get_logits\.conv2\.weight", r"logits_model.conv2.weight"),
    (r"component_selection\.get_logits\.conv2\.bias", None),  # one constant added to all 4 scores
    (r"component_selection\.gumbel_tau", r"gumbel_tau"),
    (r"_antialias_layer\.filt", None),  # checked against the binomial taps, recomputed by hfvision
)


def _pool_name(rest: str, prefix: str, with_scorer: bool) -> str | None:
    """The hfvision name of a tensor `rest` inside an official polyphase layer, None if dropped.

    A residual shortcut's layer (`with_scorer=False`) reuses the main branch's decision: it may hold only its unused
    temperature and filter taps, both dropped.
    """
    for pattern, target in _POOL_RULES:
        if re.fullmatch(pattern, rest):
            if with_scorer:
                return None if target is None else prefix + re.sub(pattern, target, rest)
            if target is None or target == "gumbel_tau":
                return None
            break
    raise KeyError(rest)


def rename_key(key: str, config: LpsResNetConfig) -> str | None:
    """The hfvision name of an official state-dict key, or None for a tensor dropped by design.

    Raises:
        KeyError: for a key with no counterpart (an unsupported layer).
    """
    base = "lps_resnet."
    name = key.removeprefix("core.")
    if name == "conv1.weight":
        return base + "embeddings.embedder.convolution.weight"
    if match := re.fullmatch(r"bn1\.(\w+)", name):
        return base + f"embeddings.embedder.normalization.{match.group(1)}"
    if match := re.fullmatch(r"fc\.(weight|bias)", name):
        return f"classifier.{match.group(1)}"
    if match := re.fullmatch(r"maxpool\.(0|3)\.(.+)", name):  # stem: LPD, circular pad, max-pool, LPD
        index, rest = int(match.group(1)) // 3, match.group(2)
        if index == 0 and rest.startswith("_antialias_layer"):
            raise KeyError(key)  # hfvision's first stem downsampler has no filter (--maxpool_no_antialias)
        return _pool_name(rest, base + f"embeddings.downsamplers.{index}.", with_scorer=True)
    match = re.fullmatch(r"layer(\d+)\.(\d+)\.(.+)", name)
    if match is None:
        raise KeyError(key)
    stage, block, rest = int(match.group(1)) - 1, int(match.group(2)), match.group(3)
    layer = base + f"encoder.stages.{stage}.layers.{block}."
    pooled_conv = "conv3" if config.layer_type == "bottleneck" else "conv2"  # the conv preceded by the LPD
    if match := re.fullmatch(r"(conv\d)\.(?:1\.)?weight", rest):
        return layer + f"{match.group(1)}.convolution.weight"
    if match := re.fullmatch(r"bn(\d)\.(\w+)", rest):
        return layer + f"conv{match.group(1)}.normalization.{match.group(2)}"
    if match := re.fullmatch(rf"{pooled_conv}\.0\.(.+)", rest):
        return _pool_name(match.group(1), layer + "downsample.", with_scorer=True)
    if match := re.fullmatch(r"downsample\.(\d)\.(.+)", rest):  # shortcut: [pool,] conv1x1, BN
        index, leaf = int(match.group(1)) - (1 if stage > 0 else 0), match.group(2)
        if index < 0:
            return _pool_name(leaf, "", with_scorer=False)
        return layer + f"shortcut.projection.{('convolution', 'normalization')[index]}.{leaf}"
    raise KeyError(key)


def convert_state_dict(state_dict: dict[str, torch.Tensor], config: LpsResNetConfig) -> dict[str, torch.Tensor]:
    """Map an official state dict onto `LpsResNetForImageClassification(config)`, checking every tensor.

    Raises:
        ValueError: listing the official keys without a counterpart, the hfvision tensors left unfilled, shape
            mismatches, and low-pass filters whose taps are not binomial.
    """
    with torch.device("meta"):  # names and shapes only
        expected = LpsResNetForImageClassification(config).state_dict()
    converted, unexpected, problems = {}, [], []
    for key, value in state_dict.items():
        try:
            name = rename_key(key, config)
        except KeyError:
            unexpected.append(key)
            continue
        if key.endswith("._antialias_layer.filt"):
            binomial = _binomial_filter(value.shape[-1], value.shape[0])
            if value.shape != binomial.shape or not torch.allclose(value.double(), binomial, atol=1e-6):
                problems.append(f"{key} does not hold normalised binomial taps (a --antialias_scale run?)")
        if name is None:
            continue
        if name not in expected:
            unexpected.append(key)
        elif value.shape != expected[name].shape:
            problems.append(f"{key} {tuple(value.shape)} -> {name} {tuple(expected[name].shape)}")
        else:
            converted[name] = value.to(expected[name].dtype)
    missing = sorted(set(expected) - set(converted))
    if unexpected or missing or problems:
        raise ValueError(
            "the checkpoint does not map onto LpsResNetForImageClassification; nothing was written:\n"
            + "\n".join(
                [f"  unexpected (no counterpart): {key}" for key in unexpected]
                + [f"  missing (not in the checkpoint): {key}" for key in missing]
                + [f"  {problem}" for problem in problems]
            )
        )
    return converted


def _read_labels(labels_file: str | Path | None, num_labels: int) -> dict[int, str] | None:
    if labels_file is None:
        return None
    names = [line.strip() for line in Path(labels_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != num_labels:
        raise ValueError(f"labels_file has {len(names)} class names; the checkpoint's classifier has {num_labels}")
    return dict(enumerate(names))


def check_preset(config: LpsResNetConfig, preset: str) -> None:
    """Raise a `ValueError` naming the differences unless `config` has the network of `LpsResNetConfig` `preset`."""
    expected = LpsResNetConfig.from_preset(preset)
    differences = [
        f"{field} {getattr(config, field)!r} (preset: {getattr(expected, field)!r})"
        for field in ARCHITECTURE_FIELDS
        if getattr(config, field) != getattr(expected, field)
    ]
    if differences:
        raise ValueError(f"the checkpoint is not a {preset}: " + ", ".join(differences))


def convert_lps_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    preset: str | None = None,
    padding_mode: str | None = None,
    labels_file: str | Path | None = None,
    push_to_hub: str | None = None,
) -> LpsResNetForImageClassification:
    """Convert, check, then write config + safetensors + image processor + model card (and publish).

    Args:
        checkpoint_path: the official checkpoint (`.ckpt`, `.pth`, `.pth.tar`, `.pt`).
        output_dir: where `save_pretrained` writes.
        preset: an `LpsResNetConfig` preset the checkpoint must match (`lps-resnet18`, ...); None accepts the
            network the checkpoint holds.
        padding_mode: the run's padding when the checkpoint does not record it.
        labels_file: class names, one per line, in the classifier's order.
        push_to_hub: publish the folder to this repo id (`org/name`) through `hfvision.hub.publish`.

    Returns:
        The converted model, in eval mode.
    """
    state_dict, hyper_parameters = load_original_checkpoint(checkpoint_path)
    num_labels = state_dict["core.fc.weight"].shape[0] if "core.fc.weight" in state_dict else 0
    config = config_from_checkpoint(state_dict, hyper_parameters, padding_mode, _read_labels(labels_file, num_labels))
    if preset is not None:
        check_preset(config, preset)
    converted = convert_state_dict(state_dict, config)
    model = LpsResNetForImageClassification(config)
    model.load_state_dict(converted, strict=True)
    model.eval()
    # everything is checked: write
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    # the official ImageNet evaluation: resize the shorter side to 256, center-crop 224 (a multiple of the stride 32)
    image_processor = LpsImageProcessor(
        size={"shortest_edge": 256}, do_center_crop=True, crop_size={"height": 224, "width": 224}, size_divisor=1
    )
    image_processor.save_pretrained(output_dir)
    model_id = push_to_hub or f"local/{output_dir.resolve().name}"
    _model_card(config, Path(checkpoint_path).name, model_id).save(output_dir / "README.md")
    if push_to_hub:
        from hfvision.hub.publish import publish  # the converter runs with hfvision installed; the model code does not

        publish(output_dir, push_to_hub)
    return model


def _model_card(config: LpsResNetConfig, checkpoint_name: str, model_id: str) -> Any:
    from hfvision.hub.card import render_model_card

    imagenet = config.num_labels == 1000
    data = "ImageNet-1k (ILSVRC2012) training images" if imagenet else "the data set of the official run"
    return render_model_card(
        "lps",
        # the license of the authors' release (MIT)
        license="mit",
        model_id=model_id,
        eval_results=[],
        training_config={
            "converted_from": checkpoint_name,
            "official_code": f"https://github.com/{OFFICIAL_REPOSITORY}",
            "converter": "hfvision/models/lps/convert_lps_original_to_hf.py",
        },
        datasets=[IMAGENET_HUB_ID] if imagenet else [],
        pipeline_tag="image-classification",
        training_data=f"{data}, trained by the authors with the official code (not re-trained here).",
        architecture="LpsResNetForImageClassification",
        downsample="lps",
        padding_mode=config.padding_mode,
        model_description=(
            f"The authors' released LPS-ResNet checkpoint `{checkpoint_name}`, converted to hfvision with "
            "`convert_lps_original_to_hf.py`. The converter maps every tensor and refuses a checkpoint that does not "
            "map completely; a test checks that the converted model reproduces the official code's logits to 1e-5. "
            "The accuracy and consistency of this checkpoint are the paper's (Tables 2-3) and were not re-measured "
            "here. The weights are the authors', released with the official code under the MIT License."
        ),
        training_data_description=(
            "Converted weights: hfvision neither re-trained nor re-evaluated this checkpoint (see the paper for its "
            "ImageNet accuracy and consistency); the training section below describes hfvision's fine-tuning script, "
            "which can continue from it."
        ),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint_path", required=True, help="official checkpoint (.ckpt/.pth/.pth.tar/.pt)")
    parser.add_argument("--output_dir", required=True, help="folder for the converted checkpoint")
    parser.add_argument(
        "--preset",
        choices=sorted(LpsResNetConfig.PRESETS),
        help="check that the checkpoint is this network (default: convert the network it holds)",
    )
    parser.add_argument(
        "--padding_mode",
        choices=["circular", "zeros"],
        help="the run's padding (--circular_pad gives circular); read from the checkpoint when omitted",
    )
    parser.add_argument("--labels_file", help="class names, one per line, in the classifier's order")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="publish the converted folder to this repo")
    args = parser.parse_args(argv)
    try:
        model = convert_lps_checkpoint(
            args.checkpoint_path, args.output_dir, args.preset, args.padding_mode, args.labels_file, args.push_to_hub
        )
    except (ValueError, FileNotFoundError) as error:
        parser.exit(1, f"error: {error}\n")
    print(f"wrote {args.output_dir} ({model.num_parameters():,} parameters)")
    print(json.dumps({"architecture": model.config.architectures, "total_stride": model.config.total_stride}))


if __name__ == "__main__":
    main()
