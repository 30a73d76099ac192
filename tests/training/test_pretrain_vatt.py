"""training/pretrain_vatt.py on synthetic video + audio + text clips: the real `main([...])` in process, and a
killed + resumed run against an uninterrupted one.

The clips are `hfvision.data.build_av_clips` tars (8 frames of 32 px, 1280 samples at 8 kHz, 80% captioned) and the
model is the tiny preset (4 frames of 16 px, 40 audio tokens).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

from hfvision.data import AvClips, build_av_clips
from hfvision.models.vatt import VattForPreTraining, VattModel
from tests.training.conftest import load_training_script, one_thread

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "training" / "pretrain_vatt.py"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
CLIP_ARGS = {"num_frames": 8, "image_size": 32, "sampling_rate": 8000, "num_samples": 1280}


@pytest.fixture(scope="module")
def clip_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    build_av_clips(root, num_train=128, num_eval=32, num_shards=2, num_eval_shards=1, seed=0, **CLIP_ARGS)
    return root


def tiny_args(data: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--train_data", str(data), "--output_dir", str(output_dir), "--model_preset", "vatt-tiny",
        "--audio_num_samples", "1280", "--tokenizer_vocab_size", "100",
        "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32", "--shuffle_buffer", "32",
        "--learning_rate", "2e-3", "--warmup_steps", "2", "--logging_steps", "4", "--seed", "0", *extra,
    ]  # fmt: skip


def test_pretraining_lowers_the_loss_and_saves_a_checkpoint_with_retrieval_metrics_and_a_card(clip_shards, tmp_path):
    script = load_training_script("pretrain_vatt")
    with one_thread():
        metrics = script.main(
            tiny_args(clip_shards, tmp_path, "--max_steps", "16", "--eval_steps", "8", "--checkpointing_steps", "8")
        )
    assert metrics["global_step"] == 16
    assert metrics["train/loss_last_window"] < metrics["train/loss_first_window"]
    log = [json.loads(line) for line in (tmp_path / "log_history.jsonl").read_text().splitlines()]
    losses = [entry for entry in log if "train/loss" in entry]
    assert [entry["step"] for entry in losses] == [4, 8, 12, 16]
    assert {"train/loss_video_audio", "train/loss_video_text"} <= set(losses[0])
    assert losses[-1]["train/num_skipped_samples"] == 0
    # checkpoint: one epoch = 128 clips / 16 = 8 batches
    position = json.loads((tmp_path / "checkpoint-8" / "stream_position_rank0.json").read_text())
    assert (position["step"], position["epoch"], position["batches_in_epoch"]) == (8, 0, 8)

    for direction in ("video_to_text", "text_to_video", "video_to_audio", "audio_to_video"):
        for k in (1, 5, 10):
            assert 0.0 <= metrics[f"eval/{direction}_recall@{k}"] <= 1.0
        assert metrics[f"eval/{direction}_recall@1"] <= metrics[f"eval/{direction}_recall@10"]
    assert metrics["eval/num_samples"] == 32

    final = tmp_path / "final"
    assert (final / "model.safetensors").is_file()
    assert not [path for path in final.rglob("*") if path.suffix in PICKLE_SUFFIXES]
    model = AutoModel.from_pretrained(final).eval()  # the VattModel encoder of the VattForPreTraining checkpoint
    assert isinstance(model, VattModel)
    pretraining = VattForPreTraining.from_pretrained(final)
    weights = load_file(final / "model.safetensors")
    assert all(torch.equal(weights[name], value) for name, value in pretraining.state_dict().items() if name in weights)
    processor = AutoProcessor.from_pretrained(final)
    clip = AvClips(1, seed=5, split="eval", **CLIP_ARGS)[0]
    inputs = processor(videos=[list(clip["frames"])], audio=[clip["audio"]], sampling_rate=8000, text=[clip["caption"]])
    with torch.no_grad():
        outputs = model(**inputs)
    assert outputs.logits_video_text.shape == (1, 1) and outputs.logits_video_audio.shape == (1, 1)

    results = json.loads((final / "eval_results.json").read_text())
    assert results["metrics"]["eval/video_to_text_recall@1"] == metrics["eval/video_to_text_recall@1"]
    card = (final / "README.md").read_text()
    assert "model-index" in card and "Video-to-text retrieval" in card and "retrieval_examples.png" in card
    assert f"{metrics['eval/video_to_audio_recall@5']:.4f}" in card  # the measured number, not a placeholder
    with Image.open(final / "retrieval_examples.png") as picture:
        assert picture.width > 64 * 8 and picture.height > 4 * 64
        assert np.asarray(picture).std() > 0


def test_load_clip_stream_rejects_a_folder_without_shards(tmp_path):
    script = load_training_script("pretrain_vatt")
    with pytest.raises(FileNotFoundError, match="no clip shards"):
        script.load_clip_stream(str(tmp_path), "train")
    with pytest.raises(ValueError, match="--synthetic"):
        script.parse_args(["--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="crop_min_area"):
        script.parse_args(["--output_dir", str(tmp_path), "--synthetic", "--crop_min_area", "0"])


def test_retrieval_ground_truth_groups_clips_by_the_attributes_a_modality_carries():
    script = load_training_script("pretrain_vatt")
    clips = [
        {"colour": "red", "size": "small", "shape": "circle", "motion": "left"},
        {"colour": "blue", "size": "small", "shape": "circle", "motion": "left"},  # sounds like clip 0
        {"colour": "red", "size": "small", "shape": "circle", "motion": "left"},  # described like clip 0
    ]
    assert script.matching_indices(clips, script.DESCRIBED) == [[0, 2], [1], [0, 2]]
    assert script.matching_indices(clips, script.AUDIBLE) == [[0, 1, 2]] * 3


def _run(args: list[str], expect_success: bool = True) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)
    assert (result.returncode == 0) == expect_success, result.stderr[-3000:]


@pytest.mark.slow
def test_a_killed_run_resumes_to_exactly_the_weights_of_an_uninterrupted_one(clip_shards, tmp_path):
    # 128 clips in batches of 16: 8 batches an epoch, so 12 steps cross an epoch boundary after the kill at 5.
    # DropToken draws from the global RNG, which the checkpoint restores.
    schedule = ["--max_steps", "12", "--checkpointing_steps", "4", "--eval_steps", "12"]
    _run(tiny_args(clip_shards, tmp_path / "full", *schedule))
    _run(tiny_args(clip_shards, tmp_path / "killed", *schedule, "--stop_after_step", "5"), expect_success=False)
    assert (tmp_path / "killed" / "checkpoint-4").is_dir() and not (tmp_path / "killed" / "final").exists()
    _run(tiny_args(clip_shards, tmp_path / "killed", *schedule, "--resume_from_checkpoint", "latest"))
    full = load_file(tmp_path / "full" / "final" / "model.safetensors")
    resumed = load_file(tmp_path / "killed" / "final" / "model.safetensors")
    assert full.keys() == resumed.keys()
    unequal = [name for name in full if not torch.equal(full[name], resumed[name])]
    assert not unequal, f"{len(unequal)} tensors differ after resume, e.g. {unequal[:3]}"
