"""Convert an official PyramidCLIP checkpoint to a hfvision `PyramidClipModel` folder (config, safetensors, processor,
model card), optionally pushed to the Hub.

The official release (https://github.com/Yuting-Gao/PyramidCLIP, model zoo in its README) is one `.pth.tar` per model
holding `{"state_dict": ...}` of the `MODEL` class in `models/models.py`. Only the ViT models convert (ViT-B/32,
ViT-B/16); the ResNet-50 models use CLIP's ModifiedResNet, which hfvision does not implement, and are refused.

Where each official tensor goes (official -> hfvision):
- `visual.conv1`, `visual.class_embedding`, `visual.positional_embedding` -> `vision_model.embeddings.*`;
  `visual.ln_pre` / `visual.ln_post` -> `vision_model.pre_layernorm` / `post_layernorm`;
- blocks `visual.transformer.resblocks1.{i}` (the 9 LeFF blocks) and `resblocks2.{j}` ->
  `vision_model.encoder.layers.{i}` and `{9 + j}`; the text `transformer` is split 9 + rest the same way (plain MLPs);
- in a block: `attn.in_proj_weight/bias` (q, k, v stacked) -> `self_attn.q_proj/k_proj/v_proj`; `attn.out_proj`,
  `ln_1`, `ln_2`, `mlp.c_fc`, `mlp.c_proj` -> `self_attn.out_proj`, `layer_norm1`, `layer_norm2`, `mlp.fc1`, `mlp.fc2`;
  LeFF `mlp.linear1`, `ac1.bn`, `depConv.depconv`, `depConv.bn`, `linear2`, `ac2.bn` -> `mlp.fc1`, `norm1`,
  `depthwise_conv`, `norm2`, `fc2`, `norm3` (BatchNorm running statistics included);
- `visual.proj_pre` `(2052, D)`, `visual.proj` `(D, P)`, `text_projection` `(D, P)` (used as `x @ W`) ->
  `vision_model.roi_projection`, `visual_projection`, `text_projection` (`nn.Linear` weights, transposed);
- `token_embedding`, `positional_embedding`, `ln_final`, `logit_scale` -> `text_model.embeddings.*`,
  `text_model.final_layer_norm`, `logit_scale`.

The attention head counts are not stored in the checkpoint: the official configs use width / 64 for both towers (what
`config_from_checkpoint` assumes); `--preset` or `--config_file` give them explicitly. Every tensor is mapped and
checked (no missing, no unexpected, equal shapes) before anything is written.

Usage:

    python -m hfvision.models.pyramidclip.convert_pyramidclip_original_to_hf \\
        --checkpoint_path PyramidCLIP-TOTAL143M-ViT-B16.pth.tar --output_dir pyramidclip-base \\
        --push_to_hub your-org/pyramidclip-base
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .configuration_pyramidclip import PyramidClipConfig
from .image_processing_pyramidclip import PyramidClipImageProcessor
from .modeling_pyramidclip import PyramidClipModel
from .processing_pyramidclip import PyramidClipProcessor
from .tokenization_pyramidclip import clip_tokenizer_from_bpe_file

# The official `Transformer` always builds its first 9 blocks as `resblocks1` (LeFF blocks in the vision tower).
OFFICIAL_FIRST_BLOCKS = 9
# Keys of the ResNet-50 visual tower (CLIP's ModifiedResNet), which hfvision does not implement.
RESNET_MARKERS = ("visual.layer1.", "visual.attnpool.")
COPY, TRANSPOSE, SPLIT_QKV = "copy", "transpose", "split_qkv"


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


def refuse_resnet(state_dict: dict[str, torch.Tensor]) -> None:
    """Raise a `ValueError` for the ResNet-50 models of the release, whose visual tower hfvision does not implement."""
    if any(key.startswith(RESNET_MARKERS) for key in state_dict):
        raise ValueError(
            "This is a PyramidCLIP ResNet-50 checkpoint (CLIP's ModifiedResNet visual tower); hfvision implements the "
            "ViT models only (ViT-B/32, ViT-B/16)."
        )


def config_from_checkpoint(
    state_dict: dict[str, torch.Tensor], vision_heads: int | None = None, text_heads: int | None = None
) -> PyramidClipConfig:
    """The [`PyramidClipConfig`] of an official ViT checkpoint, read from its tensor shapes.

    Args:
        state_dict: official tensors (see `load_original_checkpoint`).
        vision_heads, text_heads: attention heads; the checkpoint does not store them, so by default width / 64, the
            rule of every official config.

    Raises:
        ValueError: a ResNet checkpoint, or tensors this layout does not explain.
    """
    refuse_resnet(state_dict)
    needed = ("visual.conv1.weight", "visual.positional_embedding", "visual.proj", "visual.proj_pre",
              "token_embedding.weight", "positional_embedding", "text_projection")  # fmt: skip
    missing = [key for key in needed if key not in state_dict]
    if missing:
        raise ValueError(f"Not an official PyramidCLIP ViT checkpoint: missing {missing}.")

    def depth(prefix: str) -> int:
        indices = {int(key[len(prefix) :].split(".")[0]) for key in state_dict if key.startswith(prefix)}
        return len(indices)

    vision_width, _, patch_size, _ = state_dict["visual.conv1.weight"].shape
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    vision_layers = depth("visual.transformer.resblocks1.") + depth("visual.transformer.resblocks2.")
    text_width = state_dict["token_embedding.weight"].shape[1]
    text_layers = depth("transformer.resblocks1.") + depth("transformer.resblocks2.")
    return PyramidClipConfig(
        projection_dim=state_dict["visual.proj"].shape[1],
        vision_config={
            "hidden_size": vision_width,
            "intermediate_size": 4 * vision_width,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": vision_heads or max(1, vision_width // 64),
            "image_size": grid * patch_size,
            "patch_size": patch_size,
            "num_leff_layers": OFFICIAL_FIRST_BLOCKS,
            "num_roi_layers": vision_layers - OFFICIAL_FIRST_BLOCKS,
            "roi_feature_dim": state_dict["visual.proj_pre"].shape[0],
        },
        text_config={
            "vocab_size": state_dict["token_embedding.weight"].shape[0],
            "hidden_size": text_width,
            "intermediate_size": 4 * text_width,
            "num_hidden_layers": text_layers,
            "num_attention_heads": text_heads or max(1, text_width // 64),
            "max_position_embeddings": state_dict["positional_embedding"].shape[0],
        },
    )


def _block_keys(original: str, hf: str, leff: bool) -> list[tuple[str, tuple[str, ...], str]]:
    """Key pairs of one transformer block (`original` and `hf` are the block prefixes)."""
    pairs = [
        (f"{original}.attn.in_proj_weight", tuple(f"{hf}.self_attn.{p}_proj.weight" for p in "qkv"), SPLIT_QKV),
        (f"{original}.attn.in_proj_bias", tuple(f"{hf}.self_attn.{p}_proj.bias" for p in "qkv"), SPLIT_QKV),
    ]
    renames = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2"}
    if leff:
        renames |= {"mlp.linear1": "mlp.fc1", "mlp.depConv.depconv": "mlp.depthwise_conv", "mlp.linear2": "mlp.fc2"}
        for official_norm, hf_norm in (("ac1.bn", "norm1"), ("depConv.bn", "norm2"), ("ac2.bn", "norm3")):
            for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                pairs.append((f"{original}.mlp.{official_norm}.{suffix}", (f"{hf}.mlp.{hf_norm}.{suffix}",), COPY))
    else:
        renames |= {"mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for official_name, hf_name in renames.items():
        suffixes = ("weight",) if official_name == "mlp.depConv.depconv" else ("weight", "bias")
        for suffix in suffixes:
            pairs.append((f"{original}.{official_name}.{suffix}", (f"{hf}.{hf_name}.{suffix}",), COPY))
    return pairs


def key_mapping(config: PyramidClipConfig) -> list[tuple[str, tuple[str, ...], str]]:
    """Every official key of a model of `config`, with its hfvision key(s) and how the tensor is converted.

    Returns:
        `(official_key, hf_keys, operation)` triples; `operation` is `"copy"`, `"transpose"` (official `x @ W`
        matrices become `nn.Linear` weights) or `"split_qkv"` (stacked q, k, v split into three tensors).
    """
    vision, text = config.vision_config, config.text_config
    if vision.num_leff_layers != OFFICIAL_FIRST_BLOCKS or vision.num_roi_layers != vision.num_hidden_layers - 9:
        raise ValueError(
            f"The official layout has {OFFICIAL_FIRST_BLOCKS} LeFF blocks and runs the ROI branch through all the "
            f"others; got num_leff_layers={vision.num_leff_layers}, num_roi_layers={vision.num_roi_layers} of "
            f"{vision.num_hidden_layers}."
        )
    if text.num_hidden_layers < OFFICIAL_FIRST_BLOCKS:
        raise ValueError(f"The official text tower has at least 9 blocks, got {text.num_hidden_layers}.")
    mapping = [
        ("visual.conv1.weight", ("vision_model.embeddings.patch_embedding.weight",), COPY),
        ("visual.class_embedding", ("vision_model.embeddings.class_embedding",), COPY),
        ("visual.positional_embedding", ("vision_model.embeddings.position_embedding.weight",), COPY),
        ("visual.proj_pre", ("vision_model.roi_projection.weight",), TRANSPOSE),
        ("visual.proj", ("visual_projection.weight",), TRANSPOSE),
        ("token_embedding.weight", ("text_model.embeddings.token_embedding.weight",), COPY),
        ("positional_embedding", ("text_model.embeddings.position_embedding.weight",), COPY),
        ("text_projection", ("text_projection.weight",), TRANSPOSE),
        ("logit_scale", ("logit_scale",), COPY),
    ]
    norms = {
        "visual.ln_pre": "vision_model.pre_layernorm",
        "visual.ln_post": "vision_model.post_layernorm",
        "ln_final": "text_model.final_layer_norm",
    }
    for official, hf in norms.items():
        mapping += [(f"{official}.{suffix}", (f"{hf}.{suffix}",), COPY) for suffix in ("weight", "bias")]
    for official_prefix, hf_prefix, tower, leff in (
        ("visual.transformer", "vision_model.encoder.layers", vision, True),
        ("transformer", "text_model.encoder.layers", text, False),
    ):
        for index in range(tower.num_hidden_layers):
            group, position = ("resblocks1", index) if index < OFFICIAL_FIRST_BLOCKS else ("resblocks2", index - 9)
            block = f"{official_prefix}.{group}.{position}"
            mapping += _block_keys(block, f"{hf_prefix}.{index}", leff and index < OFFICIAL_FIRST_BLOCKS)
    return mapping


def convert_state_dict(state_dict: dict[str, torch.Tensor], config: PyramidClipConfig) -> dict[str, torch.Tensor]:
    """Official tensors -> the state dict of `PyramidClipModel(config)`, checked completely.

    Raises:
        ValueError: official keys missing or left unmapped, or any converted shape that differs from the model's,
            each listed by name.
    """
    refuse_resnet(state_dict)
    mapping = key_mapping(config)
    expected = {original for original, _, _ in mapping}
    missing, unexpected = sorted(expected - state_dict.keys()), sorted(state_dict.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"The checkpoint does not match the official PyramidCLIP layout of this config: missing {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''} ({len(missing)}), unexpected {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)})."
        )
    converted = {}
    for original, hf_keys, operation in mapping:
        tensor = state_dict[original]
        if operation == TRANSPOSE:
            tensor = tensor.t()
        pieces = tensor.chunk(3, dim=0) if operation == SPLIT_QKV else (tensor,)
        converted.update({key: piece.contiguous() for key, piece in zip(hf_keys, pieces, strict=True)})
    with torch.device("meta"):
        reference = PyramidClipModel(config).state_dict()
    problems = sorted(reference.keys() ^ converted.keys())
    problems += [
        f"{key}: checkpoint {tuple(converted[key].shape)} vs model {tuple(reference[key].shape)}"
        for key in sorted(reference.keys() & converted.keys())
        if converted[key].shape != reference[key].shape
    ]
    if problems:
        raise ValueError(f"Converted tensors do not fit PyramidClipModel({config.model_type}): {problems[:10]}.")
    return converted


def default_bpe_path() -> Path | None:
    """OpenAI CLIP's BPE merges file as the `open_clip_torch` wheel ships it (found without importing open_clip)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    return path if path.is_file() else None


def build_processor(config: PyramidClipConfig, bpe_path: str | Path) -> PyramidClipProcessor:
    """CLIP preprocessing at the model's resolution and the CLIP BPE tokenizer (the official `simple_tokenizer`)."""
    size = config.vision_config.image_size
    image_processor = PyramidClipImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    tokenizer = clip_tokenizer_from_bpe_file(bpe_path, model_max_length=config.text_config.max_position_embeddings)
    if len(tokenizer) != config.text_config.vocab_size:
        raise ValueError(
            f"`bpe_path` {bpe_path} gives {len(tokenizer)} tokens; the checkpoint has {config.text_config.vocab_size}."
        )
    return PyramidClipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def render_card(repo_id: str, checkpoint_name: str, config: PyramidClipConfig, note: str | None) -> Any:
    """The PyramidCLIP model card of a converted checkpoint (no evaluation is run by the conversion)."""
    from hfvision.hub.card import render_model_card  # card rendering only; the model folder stays self-contained

    description = (
        f"PyramidCLIP converted from the official checkpoint `{checkpoint_name}` "
        "([Yuting-Gao/PyramidCLIP](https://github.com/Yuting-Gao/PyramidCLIP)) with hfvision's "
        "`convert_pyramidclip_original_to_hf.py`, which maps every tensor; on a tiny model built with the official "
        "code the converted model reproduces the official image, text and region features to 1e-5. The conversion "
        "runs no evaluation, so the Results table is empty; the official README reports the ImageNet zero-shot top-1 "
        "of each released model."
    )
    if note:
        description = f"**{note}** {description}"
    vision = config.vision_config
    return render_model_card(
        "pyramidclip",
        # the license of the authors' release (its repository states none)
        license="unknown",
        model_id=repo_id,
        eval_results=[],
        training_config={
            "converted_from": checkpoint_name,
            "official_code": "https://github.com/Yuting-Gao/PyramidCLIP",
            "vision": f"ViT, width {vision.hidden_size}, {vision.num_hidden_layers} layers, patch {vision.patch_size}",
            "image_size": vision.image_size,
            "projection_dim": config.projection_dim,
        },
        datasets=[],
        training_data="the official release's pretraining data (YFCC15M-V1, YFCC15M-V2 or TOTAL143M, see the file name)"
        if note is None
        else "none: random weights in the official format",
        model_description=description,
        training_data_description=note
        or "Weights are the authors' (YFCC15M-V1/V2 or TOTAL143M pretraining, per the file converted); see the "
        "official README for the data of each released model.",
        extra_deviations=[
            "**Text features of converted weights:** they equal the official ones for texts padded with 0 to the full "
            "context and given without `attention_mask` (as the official code takes them); the processor pads with "
            "`<|endoftext|>` and returns an attention mask, so features pool over the real tokens only."
        ],
    )


def convert_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    preset: str | None = None,
    config: PyramidClipConfig | None = None,
    bpe_path: str | Path | None = None,
    push_to_hub: str | None = None,
    card_note: str | None = None,
) -> PyramidClipModel:
    """Convert, check, then write `output_dir` (config, safetensors, processor, README.md) and optionally push it.

    Args:
        checkpoint_path: the official `.pth.tar` (or `.pth` / `.pt`).
        output_dir: folder to write; nothing is written when any check fails.
        preset: a `PyramidClipConfig` preset the checkpoint must match (`pyramidclip-base` = ViT-B/16,
            `pyramidclip-vit-b-32`); by default the architecture is read from the checkpoint.
        config: an explicit config instead (overrides `preset`).
        bpe_path: CLIP's `bpe_simple_vocab_16e6.txt.gz` (the official repo's `dataset/` folder has it); by default the
            copy in the installed `open_clip_torch` wheel.
        push_to_hub: a Hub repo id (`namespace/name`) to publish to with `hfvision publish`'s checks.
        card_note: a sentence put first in the model card (e.g. that the weights are random).

    Returns:
        The converted model, in eval mode.
    """
    state_dict, _ = load_original_checkpoint(checkpoint_path)
    if config is None:
        config = PyramidClipConfig.from_preset(preset) if preset else config_from_checkpoint(state_dict)
    converted = convert_state_dict(state_dict, config)
    bpe_path = bpe_path or default_bpe_path()
    if bpe_path is None:
        raise ValueError(
            "`bpe_path` is needed: pass CLIP's bpe_simple_vocab_16e6.txt.gz (in the official repo's dataset/ folder) "
            "or install open_clip_torch (`pip install --no-deps open_clip_torch`), which ships it."
        )
    processor = build_processor(config, bpe_path)
    if push_to_hub is not None:
        from hfvision.hub.publish import check_repo_id

        check_repo_id(push_to_hub)

    model = PyramidClipModel(config).eval()
    model.load_state_dict(converted, strict=True)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    repo_id = push_to_hub or output_dir.name
    card = render_card(repo_id, Path(checkpoint_path).name, config, card_note)
    card.save(output_dir / "README.md")
    if push_to_hub is not None:
        from hfvision.hub.publish import publish

        publish(output_dir, push_to_hub, commit_message=f"Convert {Path(checkpoint_path).name}")
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint_path", required=True, help="official .pth.tar / .pth / .pt file")
    parser.add_argument("--output_dir", required=True, help="folder to write the converted model to")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", choices=["pyramidclip-base", "pyramidclip-vit-b-32"], help="expected size")
    group.add_argument("--config_file", help="a PyramidClipConfig config.json instead of a preset")
    parser.add_argument("--bpe_path", help="CLIP's bpe_simple_vocab_16e6.txt.gz (default: open_clip_torch's copy)")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="publish the folder to this Hub repo")
    args = parser.parse_args(argv)
    config = None
    if args.config_file:
        config = PyramidClipConfig.from_dict(json.loads(Path(args.config_file).read_text(encoding="utf-8")))
    convert_checkpoint(
        args.checkpoint_path, args.output_dir, args.preset, config, args.bpe_path, push_to_hub=args.push_to_hub
    )
    print(
        f"Converted {args.checkpoint_path} -> {args.output_dir}"
        + (f" -> {args.push_to_hub}" if args.push_to_hub else "")
    )


if __name__ == "__main__":
    main()
