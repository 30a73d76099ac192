"""The official-checkpoint converter reproduces the official ConvMAE code and refuses what it cannot map.

`tests/fixtures/mcmae_official_tiny.safetensors` holds a tiny pretraining model (`models_convmae.py`, under
`pretrain.`) and a tiny fine-tuning model (`models_convvit.py`, `global_pool=True`, under `finetune.`), both built
with the official code at the official 224x224 geometry, one uint8 image (the batch is it and its mirror image), the
masking noise, and the official outputs (`tests/fixtures/README.md` says how it was made).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModelForImageClassification, AutoModelForPreTraining

from hfvision.models.mcmae import McMaeForImageClassification, McMaeForPreTraining
from hfvision.models.mcmae.convert_mcmae_original_to_hf import (
    checkpoint_kind,
    config_from_checkpoint,
    convert_state_dict,
    load_original_checkpoint,
    main,
)

FIXTURE = Path(__file__).parents[2] / "fixtures" / "mcmae_official_tiny.safetensors"
HEADS = {"num_attention_heads": 2, "decoder_num_attention_heads": 2}  # not stored; the fixture's models used 2


@pytest.fixture(scope="module")
def fixture() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE)


@pytest.fixture(scope="module")
def pixel_values(fixture) -> torch.Tensor:
    image = fixture["inputs.image"]
    return torch.stack([image, image.flip(-1)]).float() / 127.5 - 1.0  # exactly the official driver's batch


def official(fixture: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key.removeprefix(prefix): value for key, value in fixture.items() if key.startswith(prefix)}


def convert(tmp_path: Path, state_dict: dict[str, torch.Tensor], name: str) -> Path:
    """Save as the official `save_model` does (`{"model": ..., "args": Namespace}`) and run the converter's CLI."""
    config_file = tmp_path / f"{name}.json"
    config_file.write_text(json.dumps(config_from_checkpoint(state_dict, **HEADS).to_dict()))
    checkpoint = tmp_path / f"{name}.pth"
    torch.save({"model": state_dict, "epoch": 1599, "args": argparse.Namespace(mask_ratio=0.75)}, checkpoint)
    output_dir = tmp_path / name
    main(["--checkpoint_path", str(checkpoint), "--output_dir", str(output_dir), "--config_file", str(config_file)])
    return output_dir


def test_converted_pretraining_checkpoint_reproduces_official_reconstructions(tmp_path, fixture, pixel_values):
    output_dir = convert(tmp_path, official(fixture, "pretrain."), "convmae-pretrain")
    model = AutoModelForPreTraining.from_pretrained(output_dir)
    assert isinstance(model, McMaeForPreTraining)
    with torch.no_grad():
        outputs = model(pixel_values, noise=fixture["inputs.noise"])
    torch.testing.assert_close(outputs.mask, fixture["outputs.pretrain.mask"], rtol=0, atol=0)
    torch.testing.assert_close(outputs.last_hidden_state, fixture["outputs.pretrain.latent"], rtol=0, atol=1e-5)
    torch.testing.assert_close(
        outputs.logits[:, :, ::32], fixture["outputs.pretrain.pred_every_32nd"], rtol=0, atol=1e-5
    )
    torch.testing.assert_close(outputs.logits.mean(-1), fixture["outputs.pretrain.pred_patch_mean"], rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs.loss, fixture["outputs.pretrain.loss"], rtol=0, atol=1e-5)
    assert "converted from the official checkpoint `convmae-pretrain.pth`" in (output_dir / "README.md").read_text()


def test_converted_finetuned_checkpoint_reproduces_official_logits(tmp_path, fixture, pixel_values):
    output_dir = convert(tmp_path, official(fixture, "finetune."), "convmae-finetuned")
    model = AutoModelForImageClassification.from_pretrained(output_dir)
    assert isinstance(model, McMaeForImageClassification) and model.config.num_labels == 5
    with torch.no_grad():
        logits = model(pixel_values).logits
        pooled = model.mcmae(pixel_values).pooler_output
    torch.testing.assert_close(pooled, fixture["outputs.finetune.pooled"], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, fixture["outputs.finetune.logits"], rtol=0, atol=1e-5)
    processor = AutoImageProcessor.from_pretrained(output_dir)
    assert processor.crop_size == {"height": 224, "width": 224} and processor.size == {"shortest_edge": 256}


def test_mapping_is_needed_not_identity(fixture, pixel_values):
    """Negative control: with q and k swapped in one block the converted model no longer matches the official."""
    state_dict = official(fixture, "finetune.")
    qkv = state_dict["blocks3.1.attn.qkv.weight"]
    query, key, value = qkv.chunk(3)
    swapped = {**state_dict, "blocks3.1.attn.qkv.weight": torch.cat([key, query, value])}
    config = config_from_checkpoint(swapped, **HEADS)
    model = McMaeForImageClassification(config).eval()
    model.load_state_dict(convert_state_dict(swapped, config, checkpoint_kind(swapped)))
    with torch.no_grad():
        pooled = model.mcmae(pixel_values).pooler_output
    assert (pooled - fixture["outputs.finetune.pooled"]).abs().max() > 1e-2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("drop", "missing \\['blocks2.1.attn.bias'\\]"),
        ("add", "unexpected \\['decoder_blocks.0.attn.relative_position_bias_table'\\]"),
        ("reshape", "decoder.decoder_pred.weight: checkpoint \\(700, 16\\) vs model \\(768, 16\\)"),
    ],
)
def test_refuses_before_writing(tmp_path, fixture, change, message):
    state_dict = official(fixture, "pretrain.")
    config = config_from_checkpoint(state_dict, **HEADS)
    if change == "drop":
        del state_dict["blocks2.1.attn.bias"]
    elif change == "add":
        state_dict["decoder_blocks.0.attn.relative_position_bias_table"] = torch.zeros(4, 2)
    else:
        state_dict["decoder_pred.weight"] = state_dict["decoder_pred.weight"][:700]
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    torch.save({"model": state_dict}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=message):
        main(["--checkpoint_path", str(tmp_path / "bad.pth"), "--output_dir", str(tmp_path / "out"),
              "--config_file", str(config_file)])  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_reads_architecture_and_refuses_cls_token_heads(tmp_path, fixture):
    state_dict = official(fixture, "finetune.")
    torch.save({"model": {f"module.{key}": value for key, value in state_dict.items()}}, tmp_path / "ddp.pth")
    assert load_original_checkpoint(tmp_path / "ddp.pth")[0].keys() == state_dict.keys()
    config = config_from_checkpoint(state_dict)
    assert (config.hidden_sizes, config.depths, config.patch_sizes) == ([8, 16, 32], [2, 2, 2], [4, 2, 2])
    assert (config.mlp_ratios, config.conv_kernel_size, config.image_size, config.num_labels) == ([2, 2, 2], 5, 224, 5)
    assert config.num_attention_heads == 1  # width / 64 as in the official configs, at least one
    no_global_pool = {key: value for key, value in state_dict.items() if not key.startswith("fc_norm.")}
    no_global_pool |= {"norm.weight": torch.ones(32), "norm.bias": torch.zeros(32)}
    with pytest.raises(ValueError, match="global_pool=False"):
        checkpoint_kind(no_global_pool)
