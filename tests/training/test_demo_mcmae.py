"""`make demo DEMO=mcmae` at a few steps: pretrain -> reconstructions -> card -> publish -> load by repo id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from PIL import Image

from hfvision.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR

DEMO = Path(__file__).resolve().parents[2] / "training" / "demo_mcmae.py"


@pytest.mark.skipif(not DEFAULT_FASHION_MNIST_DIR.is_dir(), reason="needs dataset-fashion-mnist (`make data`)")
def test_demo_publishes_the_measured_loss_and_reconstructions_and_loads_by_repo_id(tmp_path):
    flags = ["--max_steps", "4", "--fashion_mnist_num_train", "1024", "--fashion_mnist_num_eval", "64"]
    flags += ["--per_device_train_batch_size", "32", "--eval_steps", "4", "--checkpointing_steps", "4"]
    result = subprocess.run(
        [sys.executable, str(DEMO), "--output_dir", str(tmp_path), "--num_examples", "3", *flags],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "McMaeForPreTraining loaded from http://127.0.0.1:" in out
    final = tmp_path / "run" / "final"
    loss = json.loads((final / "eval_results.json").read_text())["metrics"]["eval/reconstruction_loss"]
    card = ModelCard.load(final / "README.md")
    assert card.data.eval_results[0].metric_value == loss and f"held-out images: {loss:.4f}" in out
    assert "![Reconstructions of held-out images](reconstructions.png)" in card.text
    uploaded = out.split("4. publish")[1].splitlines()[1].split()
    assert {"reconstructions.png", "model.safetensors", "README.md", "modeling_mcmae.py"} <= set(uploaded)
    with Image.open(tmp_path / "reconstructions_from_hub.png") as grid:  # 3 rows x 4 columns of 32-pixel cells
        assert grid.size == (4 * 34 + 2, 3 * 34 + 2)
