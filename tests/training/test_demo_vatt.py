"""`make demo DEMO=vatt` at a few steps: pretrain -> recall -> card -> publish to the local Hub -> load by repo id ->
the video-text-retrieval pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from huggingface_hub import ModelCard

DEMO = Path(__file__).resolve().parents[2] / "training" / "demo_vatt.py"


def test_demo_publishes_a_card_with_the_measured_recall_and_retrieves_by_repo_id(tmp_path):
    flags = ["--max_steps", "4", "--synthetic_num_train", "128", "--synthetic_num_eval", "32"]
    flags += ["--per_device_train_batch_size", "16", "--eval_steps", "4", "--checkpointing_steps", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(DEMO), "--output_dir", str(tmp_path), "--num_examples", "2", *flags],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "VattModel loaded from http://127.0.0.1:" in out and "clip 1: top caption" in out
    card = ModelCard.load(tmp_path / "run" / "final" / "README.md")
    recall = next(
        r for r in card.data.eval_results if r.task_type == "video-to-text-retrieval" and r.metric_config == "R@1"
    ).metric_value
    assert f"video->text recall@1 on 32 held-out clips: {recall:.3f}" in out  # the card holds the run's number
    assert card.data.pipeline_tag is None and "vatt" in card.data.tags
    assert "model.safetensors" in out and "README.md" in out and "retrieval_examples.png" in out  # uploaded
