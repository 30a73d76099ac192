"""The AutoLink converter against the official code: converted weights reproduce the official model's outputs.

`tests/fixtures/autolink_official_tiny.safetensors` holds what the official `Encoder` and `Decoder`
(xingzhehe/AutoLink-..., unmodified, K = 8 at 128 px as the README's CelebA model) computed in eval mode on a fixed
image and mask: keypoints, heatmaps, the learned graph, the edge map and the reconstruction, with the key list of
the official `Model`'s state dict (VGG loss included) and its seed (`tests/fixtures/seeded_state_dict.py` rebuilds the
weights) and its non-learned tensors; `tests/fixtures/README.md` says how it was made. The tests write those weights as
the official Lightning checkpoint, run the converter's command line, load the result and compare.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors import safe_open
from torch import nn
from transformers import pipeline

from hfvision.models.autolink import AutoLinkForSelfSupervisedKeypoints, KeypointDetectionPipeline
from hfvision.models.autolink.convert_autolink_original_to_hf import main
from hfvision.models.autolink.modeling_autolink import render_edge_map

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
_spec = importlib.util.spec_from_file_location("seeded_state_dict", FIXTURES / "seeded_state_dict.py")
seeded_state_dict = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seeded_state_dict)


class AttributeDict(dict):
    """Pickled by reference, as Lightning's `AttributeDict` of hyper-parameters is in the official checkpoints."""


class ModelCheckpoint:
    """As above: Lightning stores callback states under their class."""


class Identity(nn.Module):
    """A stand-in perceptual backbone: the `vgg` loss needs one to run the forward pass that gives reconstructions."""

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [images]


@functools.cache
def _fixture() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(FIXTURES / "autolink_official_tiny.safetensors", "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()  # noqa: SIM118


def official_state_dict() -> tuple[dict[str, torch.Tensor], dict]:
    """The official `Model`'s state dict (seeded weights, then the stored tensors) and the run's hyper-parameters."""
    state_dict, hyper_parameters = _official_state_dict()
    return dict(state_dict), dict(hyper_parameters)


@functools.cache
def _official_state_dict() -> tuple[dict[str, torch.Tensor], dict]:
    tensors, metadata = _fixture()
    state_dict = seeded_state_dict.seeded_state_dict(metadata["seeded_keys"], int(metadata["seed"]))
    prefix = "state_dict."
    state_dict.update({key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)})
    return state_dict, json.loads(metadata["hyper_parameters"])


def write_lightning_checkpoint(path: Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    official, hyper_parameters = official_state_dict()
    torch.save(
        {
            "epoch": 42,
            "global_step": 20001,
            "pytorch-lightning_version": "1.5.10",
            "state_dict": official if state_dict is None else state_dict,
            "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(-20000.0)}},
            "hyper_parameters": AttributeDict(hyper_parameters),
        },
        path,
    )
    return path


def test_converted_model_reproduces_the_official_outputs(tmp_path):
    checkpoint = write_lightning_checkpoint(tmp_path / "model.ckpt")
    output_dir = tmp_path / "converted"
    main(["--checkpoint_path", str(checkpoint), "--output_dir", str(output_dir), "--preset", "autolink-faces"])

    tensors, _ = _fixture()
    model = AutoLinkForSelfSupervisedKeypoints.from_pretrained(output_dir, perceptual_backbone=Identity()).eval()
    with torch.no_grad():
        outputs = model(tensors["pixel_values"], noise=tensors["mask_noise"])
    official_keypoints = tensors["keypoints"]  # (row, col); hfvision's are (x, y) = (col, row)
    assert official_keypoints.std() > 0.2, "keypoints bunched at the centre would not test the coordinate mapping"
    torch.testing.assert_close(outputs.keypoints.flip(-1), official_keypoints, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs.heatmaps, tensors["heatmaps"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs.edge_weights, tensors["edge_weights"], atol=1e-5, rtol=1e-5)
    # each later stage to 1e-5 from the official inputs to that stage: the rasteriser from the official keypoints and
    # graph, the UNet from the official edge map and mask
    edge_map = render_edge_map(official_keypoints.flip(-1), tensors["edge_weights"], (128, 128), 2.5e-3)
    torch.testing.assert_close(edge_map, tensors["edge_map"], atol=1e-5, rtol=1e-5)
    decoder_inputs = torch.cat([model.masked_image_scale * tensors["pixel_values"] * outputs.mask, edge_map], dim=1)
    with torch.no_grad():
        reconstruction = model.decoder(decoder_inputs)
    torch.testing.assert_close(reconstruction, tensors["reconstruction"], atol=1e-5, rtol=1e-5)
    # end to end, the float32 rounding of the keypoints (~5e-7: the soft-argmax sums in another order) is amplified by
    # the line profile's steepest slope, w * sqrt(2 / thick) * exp(-1/2) = 74 here, to ~3e-5 in the edge map
    torch.testing.assert_close(outputs.edge_map, tensors["edge_map"], atol=1e-4, rtol=0)
    torch.testing.assert_close(outputs.reconstruction, tensors["reconstruction"], atol=1e-4, rtol=0)

    # the folder is a complete checkpoint: the pipeline (its code and entry; it loads the detector alone), the card
    assert json.loads((output_dir / "config.json").read_text())["custom_pipelines"]["keypoint-detection"]
    detector = pipeline("keypoint-detection", model=str(output_dir), pipeline_class=KeypointDetectionPipeline)
    result = detector(Image.new("RGB", (96, 80), "gray"))
    assert len(result["keypoints"]) == 8
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.pipeline_tag == "keypoint-detection" and card.data.library_name == "transformers"
    assert card.data.license == "mit"  # the authors' release, not hfvision's Apache-2.0
    assert "converted to hfvision" in card.text
    assert model.config.perceptual_loss == "vgg" and model.config.edge_thickness == 2.5e-3


def _refused(tmp_path, checkpoint: Path, *args: str) -> None:
    output_dir = tmp_path / "converted"
    with pytest.raises(SystemExit) as raised:
        main(["--checkpoint_path", str(checkpoint), "--output_dir", str(output_dir), *args])
    assert raised.value.code == 1
    assert not output_dir.exists(), "the converter wrote before every tensor was checked"


def test_unmapped_or_missing_tensors_are_refused_before_writing(tmp_path, capsys):
    state_dict, _ = official_state_dict()
    state_dict["decoder.style_head.weight"] = torch.ones(3)
    del state_dict["decoder.up2.net.5.running_var"]
    _refused(tmp_path, write_lightning_checkpoint(tmp_path / "model.ckpt", state_dict))
    error = capsys.readouterr().err
    assert "unexpected (no counterpart): decoder.style_head.weight" in error
    assert "missing (not in the checkpoint): decoder.up_blocks.1.norm2.running_var" in error


def test_shape_mismatch_is_refused_before_writing(tmp_path, capsys):
    state_dict, _ = official_state_dict()
    state_dict["decoder.conv.bias"] = torch.zeros(4)
    _refused(tmp_path, write_lightning_checkpoint(tmp_path / "model.ckpt", state_dict))
    assert "decoder.conv.bias (4,) -> decoder.output_conv.bias (3,)" in capsys.readouterr().err


def test_checkpoint_without_hyper_parameters_is_refused(tmp_path, capsys):
    state_dict, _ = official_state_dict()
    checkpoint = tmp_path / "weights.pth"
    torch.save({"state_dict": {f"module.{key}": value for key, value in state_dict.items()}}, checkpoint)
    _refused(tmp_path, checkpoint)
    assert "hyper-parameters lack ['thick', 'missing', 'block', 'sklr']" in capsys.readouterr().err


def test_preset_must_match_the_checkpoint(tmp_path, capsys):
    _refused(tmp_path, write_lightning_checkpoint(tmp_path / "model.ckpt"), "--preset", "autolink-taichi")
    error = capsys.readouterr().err
    assert "the checkpoint is not autolink-taichi: num_keypoints 8 (preset: 10), edge_thickness 0.0025" in error
