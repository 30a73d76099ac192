"""`make demo DEMO=score_sde` at a tiny budget: train on fresh circle points -> samples and plot -> card -> publish to
the local Hub -> load by repo id -> sample with the shipped pipeline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from PIL import Image

DEMO = Path(__file__).resolve().parents[2] / "training" / "demo_score_sde.py"


def test_demo_trains_measures_publishes_and_loads_by_repo_id(tmp_path):
    flags = [
        "--max_steps", "6", "--model_preset", "score-sde-tiny", "--per_device_train_batch_size", "32",
        "--checkpointing_steps", "6", "--eval_steps", "6", "--logging_steps", "2", "--eval_num_samples", "64",
        "--eval_num_inference_steps", "20", "--fresh_block_size", "64", "--fresh_blocks_per_process", "8",
        "--manifold_num_eval", "64",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(DEMO), "--output_dir", str(tmp_path), "--num_examples", "1", *flags],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "ScoreSdeModel loaded from http://127.0.0.1:" in out and "ScoreSdeSampleGenerationPipeline" in out
    assert "preprocessor_config.json" in out and "pipeline_score_sde.py" in out and "samples.png" in out

    card = ModelCard.load(tmp_path / "run" / "final" / "README.md")
    # the sample-generation pipeline is custom (remote code): no Hub task tag fits points, so the card claims none
    assert card.data.pipeline_tag is None and "unconditional-sample-generation" in card.text
    measured = {result.metric_type: result.metric_value for result in card.data.eval_results}
    summary = re.search(r"at training end ([\d.]+) and ([\d.]+)%", out)
    assert summary and float(summary[1]) == pytest.approx(measured["distance_median"], abs=1e-4)
    assert "org/score-sde-circle" in card.text and "Support found" in card.text
    with Image.open(tmp_path / "samples_from_hub.png") as plot:
        assert plot.format == "PNG" and plot.width > 700
