"""The VATT converter against the official code: converted checkpoints reproduce the official TensorFlow outputs.

`tests/fixtures/vatt_official_tiny.safetensors` holds tiny models built with the official VATT code (TF2/Keras): the
modality-specific and modality-agnostic pretraining models and four fine-tuned classifiers, their variables under
the names of an official `tf.train.Checkpoint` (`model/.../.ATTRIBUTES/VARIABLE_VALUE`), the names of the
checkpoint's other entries (optimizer slots and state, `save_counter`, object graph), fixed inputs and the official
eval-mode outputs (`tests/fixtures/README.md` says how it was made). The tests need no TensorFlow: the converter's
only TensorFlow step, `load_tf_checkpoint`, is replaced by one returning the checkpoint's entries as numpy arrays.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors import safe_open
from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoModel, AutoProcessor

from hfvision.models.vatt import VattForAudioClassification, VattForVideoClassification, VattModel
from hfvision.models.vatt import convert_vatt_original_to_hf as converter

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "vatt_official_tiny.safetensors"
VARIANTS = ("tx_fac", "ut_fac", "vit_cls", "wat_cls", "vit_ma_cls", "wat_ma_cls")
TOLERANCE = 1e-5


@functools.cache
def _fixture() -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with safe_open(FIXTURE, "np") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()  # noqa: SIM118


def official_checkpoint(variant: str) -> dict[str, np.ndarray]:
    """What `tf.train.load_checkpoint` gives for the variant's official checkpoint (training-state entries zeroed)."""
    tensors, metadata = _fixture()
    entries = {key.split(":", 1)[1]: value for key, value in tensors.items() if key.startswith(f"{variant}:")}
    for key in json.loads(metadata["non_model_checkpoint_keys"])[variant]:
        entries[key] = np.zeros(2, dtype=np.float32)
    return entries


def official_output(variant: str, name: str) -> torch.Tensor:
    return torch.from_numpy(_fixture()[0][f"{variant}.{name}"])


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fixture's inputs in hfvision's layouts: video (B, T, C, H, W), audio (B, S), word ids (B, L)."""
    tensors = _fixture()[0]
    video = torch.from_numpy(tensors["inputs.video"]).permute(0, 1, 4, 2, 3).contiguous()
    return video, torch.from_numpy(tensors["inputs.audio"][..., 0]), torch.from_numpy(tensors["inputs.text"]).long()


def tiny_config(variant: str) -> converter.VattConfig:
    """The fixture's config: read from the shapes, with the official model's 2 heads per tower (not stored)."""
    variables = converter.model_variables(official_checkpoint(variant))
    config = converter.config_from_variables(variables, head_dim=1)
    for sub_config in (config.video_config, config.audio_config, config.text_config):
        sub_config.num_attention_heads = 2
    return config


def write_inputs(tmp_path: Path, variant: str) -> list[str]:
    """The converter's arguments: a config file (heads), a 99-word vocabulary for a text tower, class names."""
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(tiny_config(variant).to_dict()))
    args = ["--config_file", str(config_file)]
    if variant.endswith("_fac"):
        vocab_file = tmp_path / "vocab.txt"
        words = ["<pad>", "<bos>", "<eos>", "<unk>", *[f"word{index}" for index in range(4, 99)]]
        vocab_file.write_text("\n".join(words) + "\n")
        args += ["--vocab_file", str(vocab_file)]
    if variant == "vit_cls":
        labels_file = tmp_path / "labels.txt"
        labels_file.write_text("\n".join(f"action {index}" for index in range(5)))
        args += ["--labels_file", str(labels_file)]
    return args


@pytest.fixture
def fake_tensorflow(monkeypatch):
    """Replace the converter's TensorFlow reader by the fixture: `--checkpoint_path <variant>/ckpt-1`."""
    monkeypatch.setattr(converter, "load_tf_checkpoint", lambda path: official_checkpoint(Path(path).parent.name))


def max_errors(model: torch.nn.Module, variant: str) -> dict[str, float]:
    """Max abs errors of every official output the fixture holds for `variant`."""
    video, audio, word_ids = inputs()
    errors = {}
    with torch.no_grad():
        if variant.endswith("_cls"):
            logits = model(video if variant.startswith("vit") else audio).logits
            return {"logits": (logits - official_output(variant, "logits")).abs().max().item()}
        outputs = model(video, audio, word_ids, droptoken=False)  # L2-normalised embeddings
        for modality, tokens in (("video", video), ("audio", audio), ("text", word_ids)):
            tower = model._run_tower(modality, tokens)
            official = official_output(variant, f"{modality}_features")
            errors[f"{modality}_pooled"] = (tower.pooler_output - official_output(variant, f"{modality}_pooled")).abs()
            features = tower.last_hidden_state[:, 1:].reshape(official.shape)  # also at padded words
            errors[f"{modality}_features"] = (features - official).abs()
        video_va = model.get_video_features(video).pooler_output
        errors["video_toaud"] = (video_va - official_output(variant, "video_toaud")).abs()
        errors["video_totxt"] = (
            model.get_video_features(video, space="vt").pooler_output - official_output(variant, "video_totxt")
        ).abs()
        errors["audio_tovid"] = (
            model.get_audio_features(audio).pooler_output - official_output(variant, "audio_tovid")
        ).abs()
        errors["text_tovid"] = (
            model.get_text_features(word_ids).pooler_output - official_output(variant, "text_tovid")
        ).abs()
        normalised = torch.nn.functional.normalize(official_output(variant, "text_tovid"), dim=-1)
        errors["text_embeds"] = (outputs.text_embeds - normalised).abs()
    return {name: error.max().item() for name, error in errors.items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_converted_checkpoint_reproduces_the_official_outputs(tmp_path, variant, fake_tensorflow, request):
    extra = []
    if variant == "tx_fac":  # one conversion goes all the way to the (local) Hub
        request.getfixturevalue("local_hub")
        extra = ["--push_to_hub", "org/vatt-tiny-converted"]
    output_dir = tmp_path / "converted"
    converter.main(
        [
            "--checkpoint_path",
            str(tmp_path / variant / "ckpt-1"),
            "--output_dir",
            str(output_dir),
            *write_inputs(tmp_path, variant),
            *extra,
        ]
    )

    source = extra[1] if extra else output_dir
    expected_class = {"vit": VattForVideoClassification, "wat": VattForAudioClassification}.get(variant[:3], VattModel)
    model = (expected_class if variant.endswith("_cls") else AutoModel).from_pretrained(source).eval()
    assert type(model) is expected_class
    assert model.config.modality_agnostic == ("ut_" in variant or "_ma_" in variant)
    errors = max_errors(model, variant)
    assert max(errors.values()) < TOLERANCE, errors

    card = ModelCard.load(output_dir / "README.md")
    assert "converted to hfvision" in card.text and card.data.library_name == "transformers"
    assert f"**Architecture:** `{expected_class.__name__}`" in card.text
    if variant.endswith("_fac"):
        processor = AutoProcessor.from_pretrained(output_dir)
        ids = processor(text=["word7, Word12 zebra's"], return_tensors="pt").input_ids[0]
        assert ids[:4].tolist() == [7, 12, 3, 0]  # DMVR: punctuation removed, lower-cased; <unk> = 3; <pad> = 0
        assert len(ids) == model.config.text_config.max_position_embeddings == 16
    elif variant.startswith("vit"):
        assert AutoImageProcessor.from_pretrained(output_dir).crop_size == {"height": 8, "width": 8}
        assert variant != "vit_cls" or model.config.id2label[4] == "action 4"
    else:
        assert AutoFeatureExtractor.from_pretrained(output_dir).num_samples == 320
        assert model.config.problem_type == "multi_label_classification"


def test_checkpoint_layout_and_shapes_give_the_architecture():
    variables = converter.model_variables(official_checkpoint("tx_fac"))
    assert not any("OPTIMIZER_SLOT" in name or name.startswith(("optimizer", "save_counter")) for name in variables)
    with pytest.raises(ValueError, match="width 32 is not a multiple of head_dim 64; pass --config_file"):
        converter.config_from_variables(variables)  # the official head width
    config = converter.config_from_variables(variables, head_dim=4)  # heads are not stored: width / head_dim
    video, audio, text = config.video_config, config.audio_config, config.text_config
    assert (video.tubelet_size, video.num_frames, video.image_size, video.hidden_size) == ([2, 4, 4], 6, 8, 32)
    assert (video.num_attention_heads, audio.num_attention_heads) == (8, 7)
    assert (audio.patch_size, audio.num_samples, audio.sampling_rate, audio.hidden_size) == (32, 320, 48000, 28)
    assert (text.vocab_size, text.embedding_size, text.hidden_size, text.num_attention_heads) == (99, 12, 24, 2)
    assert (text.relative_attention_num_buckets, text.max_position_embeddings) == (32, 16)  # T5 heads are stored
    assert text.freeze_word_embeddings  # frozen in the official configs
    assert (config.d_va, config.d_vt, config.modality_agnostic) == (24, 16, False)
    agnostic = converter.config_from_variables(converter.model_variables(official_checkpoint("ut_fac")), 16)
    assert agnostic.modality_agnostic and agnostic.post_projection_size == 40
    assert agnostic.text_config.max_position_embeddings == 16  # the official text position table
    with pytest.raises(ValueError, match="is not a vatt-bbs: modality_agnostic True"):
        converter.check_preset(agnostic, "vatt-bbs", "modality_agnostic")


def _refused(tmp_path: Path, variant: str, capsys) -> str:
    output_dir = tmp_path / "converted"
    with pytest.raises(SystemExit) as raised:
        converter.main(
            [
                "--checkpoint_path",
                str(tmp_path / variant / "ckpt-1"),
                "--output_dir",
                str(output_dir),
                *write_inputs(tmp_path, variant),
            ]
        )
    assert raised.value.code == 1
    assert not output_dir.exists(), "the converter wrote before every tensor was checked"
    return capsys.readouterr().err


def test_unmapped_missing_or_misshaped_tensors_are_refused_before_writing(tmp_path, monkeypatch, capsys):
    entries = official_checkpoint("tx_fac")
    prefix, suffix = "model/layer_with_weights-0/_base_layer/", "/.ATTRIBUTES/VARIABLE_VALUE"
    entries[f"{prefix}vid_backbone/_base/mask_embedding{suffix}"] = np.zeros(32, dtype=np.float32)
    del entries[f"{prefix}aud_backbone/_base/tx/layers/1/mha/k/bias{suffix}"]
    entries[f"{prefix}txt_backbone/base_lm/final_layer_norm/weight{suffix}"] = np.ones(25, dtype=np.float32)
    monkeypatch.setattr(converter, "load_tf_checkpoint", lambda path: entries)
    error = _refused(tmp_path, "tx_fac", capsys)
    assert "unexpected (no counterpart): _base_layer/vid_backbone/_base/mask_embedding" in error
    assert "missing (not in the checkpoint): _base_layer/aud_backbone/_base/tx/layers/1/mha/k/bias" in error
    assert "_base_layer/txt_backbone/base_lm/final_layer_norm/weight (25,) -> text_encoder.layernorm.weight (24,)" in (
        error
    )


def test_text_tower_needs_the_official_vocabulary(tmp_path, fake_tensorflow, capsys):
    output_dir = tmp_path / "converted"
    config_file = write_inputs(tmp_path, "tx_fac")[:2]
    with pytest.raises(SystemExit):
        converter.main(
            ["--checkpoint_path", str(tmp_path / "tx_fac" / "ckpt-1"), "--output_dir", str(output_dir), *config_file]
        )
    assert "`vocab_file` is needed" in capsys.readouterr().err and not output_dir.exists()


def test_unsupported_backbones_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="spectrogram-transformer"):
        converter.checkpoint_kind({"_base/spectrum_to_patch/kernel": None})
    with pytest.raises(ValueError, match="MMV/I3D/ResNet"):  # an I3D video backbone (mmv_fac)
        converter.checkpoint_kind({"_base_layer/vid_backbone/_base/conv_1a/conv3d/kernel": None})


def test_reading_a_checkpoint_without_tensorflow_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorflow", None)
    with pytest.raises(ImportError, match="needs TensorFlow"):
        converter.load_tf_checkpoint(tmp_path / "ckpt-1")
