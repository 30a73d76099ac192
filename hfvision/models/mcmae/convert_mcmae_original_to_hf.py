"""Convert an official ConvMAE checkpoint to a hfvision MCMAE folder (config, safetensors, image processor, model card),
optionally pushed to the Hub.

The official release (https://github.com/Alpha-VL/ConvMAE, links in its README) saves `{"model": state_dict, ...}`
(`util/misc.py` `save_model`). Two kinds convert:
- a pretraining checkpoint (`models_convmae.py` `MaskedAutoencoderConvViT`: encoder, multi-scale fusion convs, MAE
  decoder) -> [`McMaeForPreTraining`];
- a fine-tuned checkpoint (`models_convvit.py` `ConvViT` with `global_pool=True`: encoder, `fc_norm`, `head`) ->
  [`McMaeForImageClassification`]. A `global_pool=False` model reads a CLS token the architecture does not have, and
  is refused.

Where each official tensor goes (official -> hfvision, under `mcmae.` for the encoder):
- `patch_embed1` / `patch_embed2` (`proj`, `norm`) -> `conv_stages.0` / `.1.patch_embeddings` (`projection`,
  `layernorm`); `patch_embed3` -> `embeddings.patch_embeddings`; `patch_embed4` -> `embeddings.projection`;
  `pos_embed` -> `embeddings.position_embeddings`;
- conv blocks `blocks1.{i}` / `blocks2.{i}` (`norm1`, `conv1`, `attn`, `conv2`, `norm2`, `mlp.fc1`, `mlp.fc2`) ->
  `conv_stages.0` / `.1.blocks.{i}` (`layernorm_before`, `conv_in`, `spatial_conv`, `conv_out`, `layernorm_after`,
  `fc1`, `fc2`);
- transformer blocks `blocks3.{i}` (`norm1`, `attn.qkv` (q, k, v stacked), `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`)
  -> `layers.{i}` (`layernorm_before`, `attention.q_proj/k_proj/v_proj`, `attention.o_proj`, `layernorm_after`,
  `mlp.fc1`, `mlp.fc2`); the decoder's `decoder_blocks.{i}` -> `decoder.decoder_layers.{i}` the same way;
- pretraining: `stage1_output_decode` / `stage2_output_decode` -> `stage1_fusion` / `stage2_fusion`, `norm` ->
  `encoder_norm`, `decoder_embed`, `mask_token`, `decoder_pos_embed`, `decoder_norm`, `decoder_pred` -> `decoder.*`;
- fine-tuned: `fc_norm` -> `mcmae.pooler.layernorm`, `head` -> `classifier`.

The architecture is read from the tensor shapes; the attention heads, which are not stored, default to the official
configs' (width / 64 in the encoder, 16 in the decoder) and `--preset` / `--config_file` set them explicitly. Every
tensor is mapped and checked (no missing, no unexpected, equal shapes) before anything is written.

Usage:

    python -m hfvision.models.mcmae.convert_mcmae_original_to_hf \\
        --checkpoint_path convmae_base_finetuned.pth --output_dir mcmae-base-in1k --push_to_hub your-org/mcmae-base-in1k
"""

from __future__ import annotations

import argparse
import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .configuration_mcmae import McMaeConfig
from .image_processing_mcmae import McMaeImageProcessor
from .modeling_mcmae import McMaeForImageClassification, McMaeForPreTraining

COPY, SPLIT_QKV = "copy", "split_qkv"
PRETRAINING, CLASSIFICATION = "pretraining", "classification"
MODEL_CLASSES = {PRETRAINING: McMaeForPreTraining, CLASSIFICATION: McMaeForImageClassification}


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


def checkpoint_kind(state_dict: dict[str, torch.Tensor]) -> str:
    """`"pretraining"` (MAE decoder present) or `"classification"` (fine-tuned `global_pool` head).

    Raises:
        ValueError: neither, or a fine-tuned model without `fc_norm` (`global_pool=False`).
    """
    if "decoder_embed.weight" in state_dict:
        return PRETRAINING
    if "head.weight" in state_dict:
        if "fc_norm.weight" not in state_dict:
            raise ValueError(
                "This fine-tuned ConvMAE checkpoint was trained with global_pool=False: its head reads token 0 as a "
                "CLS token, which the ConvViT architecture does not have. Only global_pool=True models convert."
            )
        return CLASSIFICATION
    raise ValueError(
        "Not an official ConvMAE checkpoint: expected a pretraining model (`decoder_embed.weight`) or a fine-tuned "
        "one (`head.weight`)."
    )


def config_from_checkpoint(
    state_dict: dict[str, torch.Tensor], num_attention_heads: int | None = None, decoder_num_attention_heads: int = 16
) -> McMaeConfig:
    """The [`McMaeConfig`] of an official checkpoint, read from its tensor shapes.

    Args:
        state_dict: official tensors (see `load_original_checkpoint`).
        num_attention_heads: heads of the transformer stage; by default width / 64 (official Base: 768 / 64 = 12).
        decoder_num_attention_heads: heads of the MAE decoder (official: 16); unused for fine-tuned checkpoints.
    """
    kind = checkpoint_kind(state_dict)

    def depth(prefix: str) -> int:
        return len({key[len(prefix) :].split(".")[0] for key in state_dict if key.startswith(prefix)})

    hidden_sizes = [state_dict[f"patch_embed{stage}.proj.weight"].shape[0] for stage in (1, 2, 3)]
    patch_sizes = [state_dict[f"patch_embed{stage}.proj.weight"].shape[-1] for stage in (1, 2, 3)]
    mlp_ratios = [
        state_dict[f"blocks{stage}.0.mlp.fc1.weight"].shape[0] / hidden_sizes[stage - 1] for stage in (1, 2, 3)
    ]
    grid = round(state_dict["pos_embed"].shape[1] ** 0.5)
    fields: dict[str, Any] = {
        "image_size": grid * patch_sizes[0] * patch_sizes[1] * patch_sizes[2],
        "num_channels": state_dict["patch_embed1.proj.weight"].shape[1],
        "hidden_sizes": hidden_sizes,
        "depths": [depth(f"blocks{stage}.") for stage in (1, 2, 3)],
        "patch_sizes": patch_sizes,
        "mlp_ratios": mlp_ratios,
        "num_attention_heads": num_attention_heads or max(1, hidden_sizes[2] // 64),
        "conv_kernel_size": state_dict["blocks1.0.attn.weight"].shape[-1],
    }
    if kind == PRETRAINING:
        fields |= {
            "use_multiscale_fusion": "stage1_output_decode.weight" in state_dict,
            "decoder_hidden_size": state_dict["decoder_embed.weight"].shape[0],
            "decoder_num_hidden_layers": depth("decoder_blocks."),
            "decoder_num_attention_heads": decoder_num_attention_heads,
            "decoder_intermediate_size": state_dict["decoder_blocks.0.mlp.fc1.weight"].shape[0],
        }
    else:
        fields["num_labels"] = state_dict["head.weight"].shape[0]
    return McMaeConfig(**fields)


def _transformer_block(original: str, hf: str) -> list[tuple[str, tuple[str, ...], str]]:
    """Key pairs of one official timm-style `Block` (`original` and `hf` are the block prefixes)."""
    pairs = [
        (f"{original}.attn.qkv.{suffix}", tuple(f"{hf}.attention.{p}_proj.{suffix}" for p in "qkv"), SPLIT_QKV)
        for suffix in ("weight", "bias")
    ]
    renames = {
        "norm1": "layernorm_before",
        "attn.proj": "attention.o_proj",
        "norm2": "layernorm_after",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    for official_name, hf_name in renames.items():
        pairs += [(f"{original}.{official_name}.{s}", (f"{hf}.{hf_name}.{s}",), COPY) for s in ("weight", "bias")]
    return pairs


def _renamed(pairs: dict[str, str]) -> list[tuple[str, tuple[str, ...], str]]:
    """Weight and bias pairs of modules renamed one to one."""
    return [(f"{old}.{s}", (f"{new}.{s}",), COPY) for old, new in pairs.items() for s in ("weight", "bias")]


def key_mapping(config: McMaeConfig, kind: str) -> list[tuple[str, tuple[str, ...], str]]:
    """Every official key of a `kind` model of `config`, with its hfvision key(s) and how the tensor is converted.

    Returns:
        `(official_key, hf_keys, operation)` triples; `operation` is `"copy"` or `"split_qkv"` (the stacked q, k, v
        of `attn.qkv` split into three tensors).
    """
    modules = {
        "patch_embed1.proj": "mcmae.conv_stages.0.patch_embeddings.projection",
        "patch_embed1.norm": "mcmae.conv_stages.0.patch_embeddings.layernorm",
        "patch_embed2.proj": "mcmae.conv_stages.1.patch_embeddings.projection",
        "patch_embed2.norm": "mcmae.conv_stages.1.patch_embeddings.layernorm",
        "patch_embed3.proj": "mcmae.embeddings.patch_embeddings.projection",
        "patch_embed3.norm": "mcmae.embeddings.patch_embeddings.layernorm",
        "patch_embed4": "mcmae.embeddings.projection",
    }
    conv_block = {
        "norm1": "layernorm_before",
        "conv1": "conv_in",
        "attn": "spatial_conv",
        "conv2": "conv_out",
        "norm2": "layernorm_after",
        "mlp.fc1": "fc1",
        "mlp.fc2": "fc2",
    }
    for stage in (0, 1):
        for index in range(config.depths[stage]):
            official, hf = f"blocks{stage + 1}.{index}", f"mcmae.conv_stages.{stage}.blocks.{index}"
            modules |= {f"{official}.{old}": f"{hf}.{new}" for old, new in conv_block.items()}
    mapping = [("pos_embed", ("mcmae.embeddings.position_embeddings",), COPY)]
    mapping += [
        pair
        for index in range(config.depths[2])
        for pair in _transformer_block(f"blocks3.{index}", f"mcmae.layers.{index}")
    ]
    if kind == PRETRAINING:
        modules["norm"] = "encoder_norm"
        modules |= {f"decoder_{name}": f"decoder.decoder_{name}" for name in ("embed", "norm", "pred")}
        if config.use_multiscale_fusion:
            modules |= {"stage1_output_decode": "stage1_fusion", "stage2_output_decode": "stage2_fusion"}
        mapping += [
            ("mask_token", ("decoder.mask_token",), COPY),
            ("decoder_pos_embed", ("decoder.decoder_pos_embed",), COPY),
        ]
        for index in range(config.decoder_num_hidden_layers):
            mapping += _transformer_block(f"decoder_blocks.{index}", f"decoder.decoder_layers.{index}")
    else:
        modules |= {"fc_norm": "mcmae.pooler.layernorm", "head": "classifier"}
    return mapping + _renamed(modules)


def convert_state_dict(state_dict: dict[str, torch.Tensor], config: McMaeConfig, kind: str) -> dict[str, torch.Tensor]:
    """Official tensors -> the state dict of the hfvision model of `kind` (see `MODEL_CLASSES`), checked completely.

    Raises:
        ValueError: official keys missing or left unmapped, or any converted shape that differs from the model's,
            each listed by name.
    """
    mapping = key_mapping(config, kind)
    expected = {original for original, _, _ in mapping}
    missing, unexpected = sorted(expected - state_dict.keys()), sorted(state_dict.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"The checkpoint does not match the official ConvMAE {kind} layout of this config: missing {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''} ({len(missing)}), unexpected {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)})."
        )
    converted = {}
    for original, hf_keys, operation in mapping:
        pieces = state_dict[original].chunk(3, dim=0) if operation == SPLIT_QKV else (state_dict[original],)
        converted.update({key: piece.contiguous() for key, piece in zip(hf_keys, pieces, strict=True)})
    with torch.device("meta"):
        reference = MODEL_CLASSES[kind](config).state_dict()
    problems = sorted(reference.keys() ^ converted.keys())
    problems += [
        f"{key}: checkpoint {tuple(converted[key].shape)} vs model {tuple(reference[key].shape)}"
        for key in sorted(reference.keys() & converted.keys())
        if converted[key].shape != reference[key].shape
    ]
    if problems:
        raise ValueError(f"Converted tensors do not fit {MODEL_CLASSES[kind].__name__}: {problems[:10]}.")
    return converted


def render_card(repo_id: str, checkpoint_name: str, config: McMaeConfig, kind: str) -> Any:
    """The MCMAE model card of a converted checkpoint (no evaluation is run by the conversion)."""
    from hfvision.hub.card import render_model_card  # card rendering only; the model folder stays self-contained

    architecture = MODEL_CLASSES[kind].__name__
    return render_model_card(
        "mcmae",
        # the license of the authors' release (MIT)
        license="mit",
        model_id=repo_id,
        eval_results=[],
        training_config={
            "converted_from": checkpoint_name,
            "official_code": "https://github.com/Alpha-VL/ConvMAE",
            "kind": kind,
            "hidden_sizes": config.hidden_sizes,
            "depths": config.depths,
            "image_size": config.image_size,
        },
        datasets=[],
        pipeline_tag="image-classification" if kind == CLASSIFICATION else None,
        training_data="ImageNet-1K (the official release; pretraining without labels, fine-tuning with them)",
        architecture=architecture,
        model_description=(
            f"ConvMAE converted from the official checkpoint `{checkpoint_name}` "
            "([Alpha-VL/ConvMAE](https://github.com/Alpha-VL/ConvMAE)) to hfvision's `"
            f"{architecture}` with `convert_mcmae_original_to_hf.py`, which maps every tensor; on a tiny model built "
            "with the official code the converted model reproduces the official reconstructions, loss, pooled "
            "features and logits to 1e-5. The conversion runs no evaluation, so the Results table is empty; the "
            "official README reports ConvMAE-B's ImageNet-1K fine-tuning top-1 (85.0) and linear-probe top-1 (70.9)."
        ),
        training_data_description="Weights are the authors' (ImageNet-1K, 1600-epoch pretraining for ConvMAE-B).",
    )


def convert_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    preset: str | None = None,
    config: McMaeConfig | None = None,
    push_to_hub: str | None = None,
) -> McMaeForPreTraining | McMaeForImageClassification:
    """Convert, check, then write `output_dir` (config, safetensors, image processor, README.md), optionally push it.

    Args:
        checkpoint_path: the official `.pth` (pretraining or fine-tuned).
        output_dir: folder to write; nothing is written when any check fails.
        preset: an `McMaeConfig` preset the checkpoint must match (`mcmae-base`, `mcmae-small`); a fine-tuned
            checkpoint keeps its head size. By default the architecture is read from the checkpoint.
        config: an explicit config instead (overrides `preset`).
        push_to_hub: a Hub repo id (`namespace/name`) to publish to with `hfvision publish`'s checks.

    Returns:
        The converted model, in eval mode.
    """
    state_dict, _ = load_original_checkpoint(checkpoint_path)
    kind = checkpoint_kind(state_dict)
    if config is None and preset:
        head = {"num_labels": state_dict["head.weight"].shape[0]} if kind == CLASSIFICATION else {}
        config = McMaeConfig.from_preset(preset, **head)
    config = config or config_from_checkpoint(state_dict)
    converted = convert_state_dict(state_dict, config, kind)
    if push_to_hub is not None:
        from hfvision.hub.publish import check_repo_id

        check_repo_id(push_to_hub)

    model = MODEL_CLASSES[kind](config).eval()
    model.load_state_dict(converted, strict=True)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    size = config.image_size
    McMaeImageProcessor(
        size={"shortest_edge": round(size / 0.875)}, crop_size={"height": size, "width": size}
    ).save_pretrained(output_dir)
    card = render_card(push_to_hub or output_dir.name, Path(checkpoint_path).name, config, kind)
    card.save(output_dir / "README.md")
    if push_to_hub is not None:
        from hfvision.hub.publish import publish

        publish(output_dir, push_to_hub, commit_message=f"Convert {Path(checkpoint_path).name}")
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint_path", required=True, help="official .pth / .pth.tar / .pt file")
    parser.add_argument("--output_dir", required=True, help="folder to write the converted model to")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", choices=["mcmae-base", "mcmae-small"], help="expected size")
    group.add_argument("--config_file", help="an McMaeConfig config.json instead of a preset")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="publish the folder to this Hub repo")
    args = parser.parse_args(argv)
    config = None
    if args.config_file:
        config = McMaeConfig.from_dict(json.loads(Path(args.config_file).read_text(encoding="utf-8")))
    convert_checkpoint(args.checkpoint_path, args.output_dir, args.preset, config, push_to_hub=args.push_to_hub)
    print(
        f"Converted {args.checkpoint_path} -> {args.output_dir}"
        + (f" -> {args.push_to_hub}" if args.push_to_hub else "")
    )


if __name__ == "__main__":
    main()
