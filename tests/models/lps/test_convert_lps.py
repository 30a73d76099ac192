"""The LPS converter against the official code: converted weights reproduce the official ResNets' outputs.

`tests/fixtures/lps_official_tiny.safetensors` holds what the official `ResNet18Custom` / `ResNet50Custom`
(raymondyeh07/learnable_polyphase_sampling, unmodified) computed in eval mode on fixed 64x64 inputs, with their key
lists and seeds (`tests/fixtures/seeded_state_dict.py` rebuilds the weights) and their non-learned buffers; see
`tests/fixtures/README.md` for how it was made. The tests write those weights as the official checkpoints are written
(a Lightning checkpoint whose hyper-parameters hold pickled partials, or a DataParallel `{"model": ...}` file), run
the converter's command line, load the result with `from_pretrained` and compare.
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
from transformers import AutoImageProcessor

from hfvision.models.lps import LpsResNetForImageClassification
from hfvision.models.lps.convert_lps_original_to_hf import (
    config_from_checkpoint,
    convert_state_dict,
    load_original_checkpoint,
    main,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
_spec = importlib.util.spec_from_file_location("seeded_state_dict", FIXTURES / "seeded_state_dict.py")
seeded_state_dict = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seeded_state_dict)


class PolyphaseInvariantDown2D:
    """Pickled by reference in the test checkpoints' hyper-parameters, as the official partials are."""


class LowPassFilter:
    """As above, for the anti-aliasing partial."""


@functools.cache
def _fixture() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(FIXTURES / "lps_official_tiny.safetensors", "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()  # noqa: SIM118


def official_state_dict(variant: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The official model's state dict (seeded weights + stored buffers) and the run's options."""
    state_dict, options = _official_state_dict(variant)
    return dict(state_dict), json.loads(json.dumps(options))


@functools.cache
def _official_state_dict(variant: str) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, metadata = _fixture()
    state_dict = seeded_state_dict.seeded_state_dict(
        metadata[f"{variant}.seeded_keys"], int(metadata[f"{variant}.seed"])
    )
    prefix = f"{variant}.state_dict."
    state_dict.update({key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)})
    return state_dict, json.loads(metadata[f"{variant}.hyper_parameters"])


def write_lightning_checkpoint(variant: str, path: Path) -> Path:
    """A Lightning-1.4-style checkpoint: `state_dict` + hyper-parameters with the pooling layer as a partial."""
    state_dict, options = official_state_dict(variant)
    flags = options["flags"]
    antialias = None
    if flags["antialias_mode"] == "LowPassFilter":
        antialias = functools.partial(
            LowPassFilter,
            filter_size=flags["antialias_size"],
            filter_scale=1,
            padding=flags["antialias_padding"],
            padding_mode=flags["antialias_padding_mode"],
        )
    pooling_layer = functools.partial(
        PolyphaseInvariantDown2D,
        logits_pad=flags["LPS_pad"],
        comp_fix_train=False,
        comp_train_convex=False,
        comp_convex=False,
        antialias_layer=antialias,
        selection_noantialias=False,
    )
    hyper_parameters = {
        "input_shape": (3, 224, 224),
        "num_classes": 10,
        "padding_mode": options["padding_mode"],
        "pooling_layer": pooling_layer,
        "extras_model": options["extras_model"],
        "optimizer": torch.optim.SGD,
    }
    checkpoint = {
        "epoch": 89,
        "pytorch-lightning_version": "1.4.0",
        "state_dict": state_dict,
        "callbacks": {PolyphaseInvariantDown2D: {"best_model_score": torch.tensor(0.7)}},
        "hyper_parameters": hyper_parameters,
    }
    torch.save(checkpoint, path)
    return path


def write_data_parallel_checkpoint(variant: str, path: Path) -> Path:
    """A `{"model": state_dict}` file with DataParallel's `module.` prefixes and no hyper-parameters."""
    state_dict, _ = official_state_dict(variant)
    torch.save({"model": {f"module.{key}": value for key, value in state_dict.items()}}, path)
    return path


def assert_matches_official(model: LpsResNetForImageClassification, variant: str) -> None:
    tensors, _ = _fixture()
    with torch.no_grad():
        outputs = model.lps_resnet(tensors["pixel_values"], return_dict=True)
        logits = model.classifier(outputs.pooler_output)
    torch.testing.assert_close(outputs.pooler_output, tensors[f"{variant}.pooled"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, tensors[f"{variant}.logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits.log_softmax(-1), tensors[f"{variant}.log_probs"], atol=1e-5, rtol=1e-5)
    official_scores = [tensors[f"{variant}.phase_logits.{index}"] for index in range(len(outputs.phase_logits))]
    for ours, official in zip(outputs.phase_logits, official_scores, strict=True):
        # the dropped scorer bias shifts all 4 scores by one constant: compare the centred scores and the choice
        torch.testing.assert_close(ours - ours.mean(-1, keepdim=True), official - official.mean(-1, keepdim=True))
        assert torch.equal(ours.argmax(-1), official.argmax(-1))
    chosen = torch.stack([score.argmax(-1) for score in official_scores])
    assert len(chosen.unique()) > 1, "every layer kept the same phase: the fixture would not test the phase mapping"


@pytest.mark.parametrize(
    ("variant", "writer", "extra_args"),
    [
        (
            "resnet18_circular",
            write_lightning_checkpoint,
            ["--preset", "lps-resnet18", "--push_to_hub", "org/lps-resnet18-converted"],
        ),
        ("resnet18_lpf2_circular", write_data_parallel_checkpoint, ["--padding_mode", "circular"]),
        ("resnet50_lpf3_circular", write_lightning_checkpoint, []),
    ],
)
def test_converted_model_reproduces_the_official_outputs(tmp_path, variant, writer, extra_args, request):
    if "--push_to_hub" in extra_args:
        request.getfixturevalue("local_hub")
    suffix = ".ckpt" if writer is write_lightning_checkpoint else ".pth.tar"
    checkpoint = writer(variant, tmp_path / f"{variant}{suffix}")
    output_dir = tmp_path / "converted"
    main(["--checkpoint_path", str(checkpoint), "--output_dir", str(output_dir), *extra_args])

    # published: the repo holds the same folder; the model is read back from the Hub by repo id
    source = extra_args[extra_args.index("--push_to_hub") + 1] if "--push_to_hub" in extra_args else output_dir
    model = LpsResNetForImageClassification.from_pretrained(source).eval()
    assert_matches_official(model, variant)
    processor = AutoImageProcessor.from_pretrained(output_dir)  # the official evaluation's resize 256, crop 224
    pixel_values = processor(Image.new("RGB", (300, 400), "gray"), return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 3, 224, 224) and 224 % model.config.total_stride == 0
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.pipeline_tag == "image-classification" and card.data.library_name == "transformers"
    assert card.data.license == "mit"  # the authors' release, not hfvision's Apache-2.0
    assert f"`{checkpoint.name}`, converted to hfvision" in card.text


def test_lightning_checkpoint_is_read_without_running_its_pickles(tmp_path):
    checkpoint = write_lightning_checkpoint("resnet18_circular", tmp_path / "run.ckpt")
    state_dict, hyper_parameters = load_original_checkpoint(checkpoint)
    assert "core.maxpool.0.component_selection.get_logits.conv1.weight" in state_dict
    assert hyper_parameters["padding_mode"] == "circular"
    stand_in = hyper_parameters["pooling_layer"]
    assert type(stand_in).global_name == "functools.partial"
    assert not isinstance(stand_in, functools.partial)  # an inert record, not the pickled object
    assert stand_in.state[2]["logits_pad"] == "circular"


def _refused(tmp_path, checkpoint: Path, *args: str) -> None:
    output_dir = tmp_path / "converted"
    with pytest.raises(SystemExit) as raised:
        main(["--checkpoint_path", str(checkpoint), "--output_dir", str(output_dir), *args])
    assert raised.value.code == 1
    assert not output_dir.exists(), "the converter wrote before every tensor was checked"


def test_unmapped_or_missing_tensors_are_refused_before_writing(tmp_path, capsys):
    state_dict, _ = official_state_dict("resnet18_circular")
    state_dict["core.layer2.0.extra_gate.weight"] = torch.ones(3)
    del state_dict["core.layer3.1.bn1.running_var"]
    checkpoint = tmp_path / "bad.pth"
    torch.save({"state_dict": state_dict}, checkpoint)
    _refused(tmp_path, checkpoint, "--padding_mode", "circular")
    error = capsys.readouterr().err
    assert "unexpected (no counterpart): core.layer2.0.extra_gate.weight" in error
    assert (
        "missing (not in the checkpoint): lps_resnet.encoder.stages.2.layers.1.conv1.normalization.running_var" in error
    )


def test_shape_mismatch_is_refused_before_writing(tmp_path, capsys):
    state_dict, _ = official_state_dict("resnet18_circular")
    state_dict["core.layer1.0.bn1.weight"] = torch.ones(65)
    checkpoint = tmp_path / "bad.pth"
    torch.save(state_dict, checkpoint)
    _refused(tmp_path, checkpoint, "--padding_mode", "circular")
    assert (
        "core.layer1.0.bn1.weight (65,) -> lps_resnet.encoder.stages.0.layers.0.conv1.normalization.weight (64,)"
        in (capsys.readouterr().err)
    )


def test_ddac_release_is_refused_with_the_reason(tmp_path, capsys):
    state_dict, _ = official_state_dict("resnet18_circular")
    state_dict["core.layer2.0.conv2.0._antialias_layer.conv.weight"] = torch.ones(72, 128, 3, 3)
    checkpoint = tmp_path / "ResNet18_LPS_DDAC3_circular.pth"
    torch.save({"state_dict": state_dict}, checkpoint)
    _refused(tmp_path, checkpoint, "--padding_mode", "circular")
    assert "DDAC anti-aliasing (core.layer2.0.conv2.0._antialias_layer.conv.weight, ...)" in capsys.readouterr().err


def test_zero_padded_release_is_refused_with_the_reason(tmp_path, capsys):
    checkpoint = write_lightning_checkpoint("resnet50_lpf3_zero", tmp_path / "ResNet50_LPS_LPF3_zero.ckpt")
    _refused(tmp_path, checkpoint)
    assert "pads the LPS scorer, the low-pass filter and the stem's max-pool circularly" in capsys.readouterr().err

    # why: the same weights in LpsResNet with padding_mode="zeros" everywhere miss the official logits by far
    state_dict, _ = official_state_dict("resnet50_lpf3_zero")
    config = config_from_checkpoint(state_dict, {}, "circular")  # the mapping is the same; the padding is not
    config.padding_mode = "zeros"
    model = LpsResNetForImageClassification(config).eval()
    model.load_state_dict(convert_state_dict(state_dict, config))
    tensors, _ = _fixture()
    with torch.no_grad():
        error = (model(tensors["pixel_values"]).logits - tensors["resnet50_lpf3_zero.logits"]).abs().max()
    assert error > 0.1  # 0.56


def test_preset_must_match_the_checkpoint(tmp_path, capsys):
    checkpoint = write_lightning_checkpoint("resnet18_circular", tmp_path / "run.ckpt")
    _refused(tmp_path, checkpoint, "--preset", "lps-resnet50")
    assert "the checkpoint is not a lps-resnet50: hidden_sizes [64, 128, 256, 512]" in capsys.readouterr().err


def test_padding_must_be_given_when_the_checkpoint_does_not_record_it(tmp_path, capsys):
    checkpoint = write_data_parallel_checkpoint("resnet18_circular", tmp_path / "model.pth")
    _refused(tmp_path, checkpoint)
    assert "pass padding_mode" in capsys.readouterr().err
