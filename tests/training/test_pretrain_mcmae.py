"""training/pretrain_mcmae.py on an image stream: the real `main([...])` in process and killed + resumed runs.

The stream is seeded synthetic scenes written as WebDataset tars (read without their captions) at 32 pixels, with
the tiny preset (token stride 8, 16 tokens, 12 masked).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import (
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    ViTForImageClassification,
    ViTMAEForPreTraining,
)

from hfvision.data import build_synthetic_scenes
from hfvision.models.mcmae import McMaeForPreTraining
from tests.training.conftest import load_training_script, one_thread, run_finetune

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "training" / "pretrain_mcmae.py"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@pytest.fixture(scope="module")
def image_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    build_synthetic_scenes(root, num_train=256, num_eval=32, num_shards=2, image_size=32, seed=0)
    return root


def tiny_args(data: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--train_data", str(data), "--output_dir", str(output_dir), "--model_preset", "mcmae-tiny",
        "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "32", "--shuffle_buffer", "64",
        "--learning_rate", "2e-3", "--warmup_steps", "2", "--logging_steps", "2", "--seed", "0", *extra,
    ]  # fmt: skip


def test_pretraining_lowers_the_masked_loss_and_saves_a_loadable_checkpoint_with_a_grid(image_shards, tmp_path):
    script = load_training_script("pretrain_mcmae")
    with one_thread():
        metrics = script.main(tiny_args(image_shards, tmp_path, "--max_steps", "24", "--eval_steps", "24"))
    assert metrics["train/loss_last_window"] < metrics["train/loss_first_window"]
    assert metrics["eval/num_samples"] == 32 and metrics["eval/reconstruction_loss"] > 0
    final = tmp_path / "final"
    assert not [path for path in final.rglob("*") if path.suffix in PICKLE_SUFFIXES]
    model = AutoModelForPreTraining.from_pretrained(final)
    assert isinstance(model, McMaeForPreTraining)
    weights = load_file(final / "model.safetensors")
    assert all(torch.equal(weights[name], value) for name, value in model.state_dict().items() if name in weights)
    with Image.open(final / "reconstructions.png") as grid:  # 8 rows of 4 titled columns (matplotlib)
        assert grid.format == "PNG" and grid.size[1] > 1.5 * grid.size[0]
    results = json.loads((final / "eval_results.json").read_text())
    assert results["metrics"]["eval/reconstruction_loss"] == metrics["eval/reconstruction_loss"]
    log = [json.loads(line) for line in (tmp_path / "log_history.jsonl").read_text().splitlines()]
    assert log[0]["train/num_skipped_samples"] == 0 and "train/samples_per_second" in log[0]


def _run(args: list[str], expect_success: bool = True) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)
    assert (result.returncode == 0) == expect_success, result.stderr[-3000:]


def test_a_killed_run_resumes_to_exactly_the_weights_of_an_uninterrupted_one(image_shards, tmp_path):
    # 256 scenes in batches of 32: 8 batches an epoch, so 12 steps cross an epoch boundary after the kill at 6.
    schedule = ["--max_steps", "12", "--checkpointing_steps", "3", "--eval_steps", "12"]
    _run(tiny_args(image_shards, tmp_path / "full", *schedule))
    _run(tiny_args(image_shards, tmp_path / "killed", *schedule, "--stop_after_step", "7"), expect_success=False)
    assert (tmp_path / "killed" / "checkpoint-6").is_dir() and not (tmp_path / "killed" / "final").exists()
    _run(tiny_args(image_shards, tmp_path / "killed", *schedule, "--resume_from_checkpoint", "latest"))
    full = load_file(tmp_path / "full" / "final" / "model.safetensors")
    resumed = load_file(tmp_path / "killed" / "final" / "model.safetensors")
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[name], resumed[name]) for name in full)


def test_vitmae_baseline_pretrains_and_fine_tunes_as_vit_with_its_encoder(image_shards, tmp_path, finetune):
    script = load_training_script("pretrain_mcmae")
    with one_thread():
        script.main(tiny_args(image_shards, tmp_path / "mae", "--architecture", "vitmae", "--max_steps", "4"))
    metrics = run_finetune(
        finetune,
        tmp_path / "mae" / "final",
        tmp_path / "ft",
        ["--dataset", "synthetic", "--max_steps", "2", "--use_cpu", "--report_to", "none", "--save_strategy", "no"],
    )
    assert "eval_top1_accuracy" in metrics
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "ft")
    assert isinstance(model, ViTForImageClassification)
    # The fine-tuned model started from the MAE encoder: ViT loaded from the MAE checkpoint computes what the MAE
    # encoder computes with masking off (mask ratio 0, identity token order).
    start = ViTForImageClassification.from_pretrained(tmp_path / "mae" / "final", config=model.config).eval()
    mae = ViTMAEForPreTraining.from_pretrained(tmp_path / "mae" / "final").eval()
    mae.config.mask_ratio = 0.0
    pixel_values = torch.randn(2, 3, 32, 32)
    noise = torch.arange(16, dtype=torch.float32).expand(2, 16)
    with torch.no_grad():
        expected = mae.vit(pixel_values, noise=noise).last_hidden_state
        torch.testing.assert_close(start.vit(pixel_values).last_hidden_state, expected)
