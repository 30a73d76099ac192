"""`make demo`'s orchestration at a few steps: train -> card -> publish to the local Hub -> load by repo id."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from huggingface_hub import ModelCard

DEMO = Path(__file__).resolve().parents[2] / "training" / "demo_pyramidclip.py"


def test_demo_publishes_a_card_with_the_measured_results_and_loads_by_repo_id(tmp_path):
    flags = ["--max_steps", "6", "--synthetic_num_train", "256", "--synthetic_num_eval", "48"]
    flags += ["--per_device_train_batch_size", "16", "--eval_steps", "6", "--checkpointing_steps", "6"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(DEMO), "--output_dir", str(tmp_path), "--num_examples", "2", *flags],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "PyramidClipModel loaded from http://127.0.0.1:" in out and "image 1: predicted" in out
    card = ModelCard.load(tmp_path / "run" / "final" / "README.md")
    top1 = next(r for r in card.data.eval_results if r.metric_config == "top1").metric_value
    assert f"zero-shot top-1 on 48 held-out scenes: {top1:.3f}" in out  # the card holds the run's measured number
    assert card.data.pipeline_tag == "zero-shot-image-classification"
