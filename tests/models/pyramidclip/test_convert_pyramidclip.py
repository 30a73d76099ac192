"""The official-checkpoint converter reproduces the official PyramidCLIP code and refuses what it cannot map.

`tests/fixtures/pyramidclip_official_tiny.safetensors` holds a tiny model built with the official `models/models.py`
(state dict under `state_dict.`), fixed inputs and the official outputs on them (`tests/fixtures/README.md` says how
it was made). The official code pools text features over all positions and has no padding mask, so texts are given
at full context length without `attention_mask`, as the official code takes them.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

from hfvision.models.pyramidclip import PyramidClipModel
from hfvision.models.pyramidclip.convert_pyramidclip_original_to_hf import (
    config_from_checkpoint,
    convert_state_dict,
    load_original_checkpoint,
    main,
)

FIXTURE = Path(__file__).parents[2] / "fixtures" / "pyramidclip_official_tiny.safetensors"
REPO_ID = "org/pyramidclip-tiny-converted"
HEADS = {"vision_heads": 2, "text_heads": 2}  # not stored in a checkpoint; the fixture's official model used 2


@pytest.fixture(scope="module")
def fixture() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE)


@pytest.fixture(scope="module")
def official_state_dict(fixture) -> dict[str, torch.Tensor]:
    return {key.removeprefix("state_dict."): value for key, value in fixture.items() if key.startswith("state_dict.")}


@pytest.fixture(scope="module")
def no_merges_bpe(tmp_path_factory) -> Path:
    """CLIP's BPE format with no merges: 514 tokens, the fixture's vocabulary size."""
    path = tmp_path_factory.mktemp("bpe") / "no_merges.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("#version: 0.2")
    return path


def save_official(state_dict: dict[str, torch.Tensor], path: Path, nesting: str | None = "state_dict") -> Path:
    """Save tensors as the official release does: `{"state_dict": ...}` in a `.pth.tar`, here with DDP's prefix."""
    tensors = {f"module.{key}": value for key, value in state_dict.items()}
    torch.save({nesting: tensors, "epoch": 32} if nesting else tensors, path)
    return path


def run_converter(tmp_path: Path, state_dict: dict[str, torch.Tensor], bpe: Path) -> Path:
    config = config_from_checkpoint(state_dict, **HEADS)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    checkpoint = save_official(state_dict, tmp_path / "PyramidCLIP-tiny.pth.tar")
    output_dir = tmp_path / "converted"
    main(["--checkpoint_path", str(checkpoint), "--output_dir", str(output_dir), "--config_file", str(config_file),
          "--bpe_path", str(bpe)])  # fmt: skip
    return output_dir


def test_converted_checkpoint_reproduces_official_features(tmp_path, fixture, official_state_dict, no_merges_bpe):
    output_dir = run_converter(tmp_path, official_state_dict, no_merges_bpe)
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "README.md"} <= {
        path.name for path in output_dir.iterdir()
    }
    model = AutoModel.from_pretrained(output_dir)
    assert isinstance(model, PyramidClipModel) and not model.training
    pixel_values, input_ids = fixture["inputs.pixel_values"], fixture["inputs.input_ids"]
    with torch.no_grad():
        image = model.get_image_features(pixel_values).pooler_output
        text = model.get_text_features(input_ids).pooler_output
        region = model.get_region_features(fixture["inputs.roi_features"].float())
        logits = model(input_ids=input_ids, pixel_values=pixel_values).logits_per_image
    torch.testing.assert_close(image, fixture["outputs.image_features"], rtol=0, atol=1e-5)
    torch.testing.assert_close(text, fixture["outputs.text_features"], rtol=0, atol=1e-5)
    torch.testing.assert_close(region, fixture["outputs.region_features"], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, fixture["outputs.logits_per_image"], rtol=0, atol=1e-5)
    # The processor carries the official tokenizer's vocabulary size and the model's resolution.
    processor = AutoProcessor.from_pretrained(output_dir)
    assert len(processor.tokenizer) == model.config.text_config.vocab_size
    assert processor(images=[torch.zeros(3, 50, 40)], return_tensors="pt")["pixel_values"].shape[-1] == 32
    assert "converted from the official checkpoint `PyramidCLIP-tiny.pth.tar`" in (output_dir / "README.md").read_text()


def test_mapping_is_needed_not_identity(official_state_dict):
    """Negative control: the q/k/v split and the transposes matter (a wrong mapping changes the features)."""
    config = config_from_checkpoint(official_state_dict, **HEADS)
    converted = convert_state_dict(official_state_dict, config)
    layer = "vision_model.encoder.layers.9.self_attn."
    swapped = {**converted, f"{layer}q_proj.weight": converted[f"{layer}k_proj.weight"],
               f"{layer}k_proj.weight": converted[f"{layer}q_proj.weight"]}  # fmt: skip
    right, wrong = PyramidClipModel(config).eval(), PyramidClipModel(config).eval()
    right.load_state_dict(converted)
    wrong.load_state_dict(swapped)
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        difference = (
            right.get_image_features(pixel_values).pooler_output - wrong.get_image_features(pixel_values).pooler_output
        )
    assert difference.abs().max() > 1e-3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("drop", "missing \\['visual.transformer.resblocks1.3.mlp.ac1.bn.running_var'\\]"),
        ("add", "unexpected \\['visual.extra_head'\\]"),
        ("reshape", "vision_model.roi_projection.weight: checkpoint \\(16, 2000\\) vs model \\(16, 2052\\)"),
    ],
)
def test_refuses_before_writing(tmp_path, official_state_dict, no_merges_bpe, change, message):
    state_dict = dict(official_state_dict)
    if change == "drop":
        del state_dict["visual.transformer.resblocks1.3.mlp.ac1.bn.running_var"]
    elif change == "add":
        state_dict["visual.extra_head"] = torch.zeros(3)
    config = config_from_checkpoint(state_dict, **HEADS)
    if change == "reshape":
        state_dict["visual.proj_pre"] = state_dict["visual.proj_pre"][:2000]
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    checkpoint = save_official(state_dict, tmp_path / "bad.pth.tar")
    with pytest.raises(ValueError, match=message):
        main(["--checkpoint_path", str(checkpoint), "--output_dir", str(tmp_path / "out"), "--config_file",
              str(config_file), "--bpe_path", str(no_merges_bpe)])  # fmt: skip
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("nesting", ["state_dict", "model", None])
def test_loads_every_official_nesting(tmp_path, official_state_dict, nesting):
    path = save_official(official_state_dict, tmp_path / "checkpoint.pth", nesting)
    loaded, _ = load_original_checkpoint(path)
    assert loaded.keys() == official_state_dict.keys()
    assert all(torch.equal(loaded[key], value) for key, value in official_state_dict.items())


def test_pickled_code_does_not_run_and_resnet_checkpoints_are_refused(tmp_path, official_state_dict, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("this must not run",))

    path = tmp_path / "code.pth"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(ValueError, match="holds no state dict of tensors"):
        load_original_checkpoint(path)
    assert "this must not run" not in capsys.readouterr().out  # the pickled call met an inert stand-in
    with pytest.raises(ValueError, match="ResNet-50 checkpoint"):
        config_from_checkpoint({**official_state_dict, "visual.layer1.0.conv1.weight": torch.zeros(1)})


def test_push_to_hub_publishes_the_converted_folder(tmp_path, local_hub, fixture, official_state_dict, no_merges_bpe):
    config = config_from_checkpoint(official_state_dict, **HEADS)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    checkpoint = save_official(official_state_dict, tmp_path / "PyramidCLIP-tiny.pth.tar")
    main(["--checkpoint_path", str(checkpoint), "--output_dir", str(tmp_path / "out"), "--config_file",
          str(config_file), "--bpe_path", str(no_merges_bpe), "--push_to_hub", REPO_ID])  # fmt: skip
    files = set(HfApi().list_repo_files(REPO_ID))
    assert {"config.json", "model.safetensors", "modeling_pyramidclip.py", "tokenizer.json", "README.md"} <= files
    assert not any(name.endswith((".pth", ".tar", ".bin")) for name in files)
    card = ModelCard.load(REPO_ID)
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert card.data.license == "unknown"  # the official repository states no license
    model = AutoModel.from_pretrained(REPO_ID)
    with torch.no_grad():
        image = model.get_image_features(fixture["inputs.pixel_values"]).pooler_output
    torch.testing.assert_close(image, fixture["outputs.image_features"], rtol=0, atol=1e-5)
