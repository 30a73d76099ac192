"""training/train_score_sde.py: the real `main([...])` in process (finite set and fresh points) and a killed + resumed
run that ends with exactly the weights of an uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModel

from hfvision.data import write_shards
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


def blob_images(count: int, seed: int, size: int = 12) -> list[dict]:
    """Gaussian blobs at random places (different size from the model's 8 x 8: the collator resizes); every fourth a
    16-bit PNG whose range is above 8 bits (PIL's plain conversion would clip it to white)."""
    generator = np.random.default_rng(seed)
    grid = np.arange(size)
    samples = []
    for index in range(count):
        cy, cx = generator.uniform(2, size - 2, 2)
        blob = np.exp(-((grid[:, None] - cy) ** 2 + (grid[None, :] - cx) ** 2) / 6.0)
        if index % 4 == 3:
            image = Image.fromarray((blob * 65535).astype(np.uint16))
        else:
            image = Image.fromarray((blob * 255).astype(np.uint8), mode="L")
        samples.append({"image": image, "__key__": f"blob-{seed}-{index:04d}"})
    return samples


def test_image_stream_run_trains_a_unet_and_saves_a_sample_grid(tmp_path):
    """`--data_type images`: the real main() on synthetic image shards (train + eval splits, a 16-bit image among
    them) trains the tiny U-Net preset, evaluates held-out DSM and sample statistics, and saves a grid of samples
    with the model, its pipeline and the card; a point model with images, or images without data, are refused."""
    data = tmp_path / "blobs"
    write_shards(blob_images(48, seed=0), data / "train", 2, image_format="png")
    write_shards(blob_images(16, seed=1), data / "eval", 1, image_format="png")
    script = load_training_script("train_score_sde")
    run = tmp_path / "run"
    args = [
        "--output_dir", str(run), "--data_type", "images", "--train_data", str(data), "--model_preset",
        "score-sde-unet-tiny", "--per_device_train_batch_size", "8", "--shuffle_buffer", "1", "--learning_rate",
        "3e-3", "--warmup_steps", "1", "--logging_steps", "2", "--seed", "0", "--max_steps", "6", "--eval_steps",
        "6", "--eval_num_samples", "9", "--eval_num_inference_steps", "5",
    ]  # fmt: skip
    with one_thread():
        metrics = script.main(args)
    assert metrics["global_step"] == 6 and metrics["train/num_skipped_samples"] == 0
    for name in ("dsm_loss", "sample_pixel_mean", "sample_pixel_std", "data_pixel_mean", "sample_fraction_in_range"):
        assert f"eval/{name}" in metrics, name
    assert 0.0 < metrics["eval/data_pixel_mean"] < 0.5  # blobs on black, the 16-bit ones not clipped to white
    final = run / "final"
    assert not [path for path in final.rglob("*") if path.suffix in PICKLE_SUFFIXES]
    model = AutoModel.from_pretrained(final)
    assert isinstance(model, ScoreSdeModel) and model.config.data_shape == (1, 8, 8)
    grid = Image.open(final / "samples.png")
    assert grid.size == (3 * 10 + 2, 3 * 10 + 2)  # 9 samples of 8 x 8, 3 per row, 2-pixel gutters
    card = ModelCard.load(final / "README.md").content
    assert "dsm_loss" in card and "A grid of samples" in card and "projected on the manifold" not in card
    with pytest.raises(ValueError, match="U-Net"):
        script.main([*args[:6], "--model_preset", "score-sde-tiny", "--output_dir", str(tmp_path / "mlp")])
    with pytest.raises(ValueError, match="--train_data"):
        script.main(["--output_dir", str(tmp_path / "none"), "--data_type", "images"])
