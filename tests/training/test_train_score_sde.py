"""training/train_score_sde.py: the real `main([...])` in process (finite set and fresh points) and a killed + resumed
run that ends with exactly the weights of an uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModel

from hfvision.models.score_sde import ScoreSdeModel
from tests.training.conftest import load_training_script, one_thread

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "training" / "train_score_sde.py"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def tiny_args(output_dir: Path, *extra: str) -> list[str]:
    return [
        "--output_dir", str(output_dir), "--model_preset", "score-sde-tiny", "--manifold_ambient_dim", "10",
        "--per_device_train_batch_size", "16", "--shuffle_buffer", "1", "--learning_rate", "3e-3",
        "--warmup_steps", "2", "--logging_steps", "2", "--seed", "0", "--eval_num_samples", "64",
        "--eval_num_inference_steps", "20", "--eval_energy_points", "16", "--manifold_num_eval", "64", *extra,
    ]  # fmt: skip


def test_finite_set_run_evaluates_and_saves_model_pipeline_plot_and_card(tmp_path):
    script = load_training_script("train_score_sde")
    args = tiny_args(tmp_path, "--manifold_num_train", "64", "--max_steps", "30", "--eval_steps", "30")
    with one_thread():
        metrics = script.main(args)
    assert metrics["global_step"] == 30 and metrics["train/num_skipped_samples"] == 0
    assert metrics["train/loss_last_window"] < metrics["train/loss_first_window"]
    for name in ("distance_median", "within_0.03", "angle_chi2", "fraction_within_delta", "dsm_loss"):
        assert f"eval/{name}" in metrics
    assert 0 <= metrics["eval/chance_fraction_within_delta"] <= 1 and metrics["eval/error_energy_vs_empirical"] > 0
    final = tmp_path / "final"
    assert not [path for path in final.rglob("*") if path.suffix in PICKLE_SUFFIXES]
    config = json.loads((final / "config.json").read_text())
    assert "unconditional-sample-generation" in config["custom_pipelines"]
    assert (final / "pipeline_score_sde.py").is_file()
    model = AutoModel.from_pretrained(final)
    assert isinstance(model, ScoreSdeModel)
    weights = load_file(final / "model.safetensors")
    assert all(torch.equal(weights[name], value) for name, value in model.state_dict().items())
    with Image.open(final / "samples.png") as plot:
        assert plot.format == "PNG" and plot.width > 700
    card = ModelCard.load(final / "README.md")
    measured = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert measured["distance_median"] == pytest.approx(metrics["eval/distance_median"])
    assert "Support found" in card.text and "![Samples" in card.text
    # the training set was written once as parquet shards with the manifold
    spec = json.loads((tmp_path / "manifold_data" / "manifold.json").read_text())
    assert spec["kind"] == "circle" and spec["num_train"] == 64 and len(spec["isometry"]) == 10


def test_fresh_points_run(tmp_path):
    script = load_training_script("train_score_sde")
    with one_thread():
        metrics = script.main(
            tiny_args(
                tmp_path,
                "--max_steps",
                "4",
                "--eval_steps",
                "4",
                "--fresh_block_size",
                "32",
                "--fresh_blocks_per_process",
                "8",
            )
        )
    assert metrics["global_step"] == 4 and "eval/distance_median" in metrics
    assert "eval/fraction_within_delta" not in metrics  # no finite training set: nothing to memorise


def test_too_small_training_set_and_bad_arguments_are_refused(tmp_path):
    script = load_training_script("train_score_sde")
    with pytest.raises(ValueError, match="per_device_train_batch_size"):
        script.main(tiny_args(tmp_path / "a", "--manifold_num_train", "8", "--max_steps", "2"))
    with pytest.raises(ValueError, match="--manifold"):
        script.main(tiny_args(tmp_path / "b", "--manifold", "cube"))


def _run(args: list[str], expect_success: bool = True) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)
    assert (result.returncode == 0) == expect_success, result.stderr[-3000:]


def test_a_killed_run_resumes_to_exactly_the_weights_of_an_uninterrupted_one(tmp_path):
    # 64 points in batches of 16: 4 batches an epoch, so 10 steps cross two epoch boundaries after the kill at 5
    schedule = ["--manifold_num_train", "64", "--max_steps", "10", "--checkpointing_steps", "3", "--eval_steps", "10"]
    _run(tiny_args(tmp_path / "full", *schedule))
    _run(tiny_args(tmp_path / "killed", *schedule, "--stop_after_step", "5"), expect_success=False)
    assert (tmp_path / "killed" / "checkpoint-3").is_dir() and not (tmp_path / "killed" / "final").exists()
    _run(tiny_args(tmp_path / "killed", *schedule, "--resume_from_checkpoint", "latest"))
    full = load_file(tmp_path / "full" / "final" / "model.safetensors")
    resumed = load_file(tmp_path / "killed" / "final" / "model.safetensors")
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[name], resumed[name]) for name in full)
    # and the two runs measured the same samples
    full_metrics = json.loads((tmp_path / "full" / "final" / "eval_results.json").read_text())["metrics"]
    resumed_metrics = json.loads((tmp_path / "killed" / "final" / "eval_results.json").read_text())["metrics"]
    assert full_metrics["eval/distance_median"] == resumed_metrics["eval/distance_median"]
