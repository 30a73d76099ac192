"""`make demo DEMO=lps` at a tiny budget: train LPS + stride through the Trainer script -> shift consistency and plot ->
card -> publish to the local Hub -> load by repo id."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from PIL import Image

from hfvision.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR

DEMO = Path(__file__).resolve().parents[2] / "training" / "demo_lps.py"


@pytest.mark.skipif(not DEFAULT_FASHION_MNIST_DIR.is_dir(), reason="run `apt-get install -y dataset-fashion-mnist`")
def test_demo_trains_measures_publishes_and_loads_by_repo_id(tmp_path):
    flags = ["--max_steps", "4", "--train_samples", "256", "--eval_samples", "32", "--width", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(DEMO), "--output_dir", str(tmp_path), "--num_examples", "2", *flags],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "LpsResNetForImageClassification loaded from http://127.0.0.1:" in out and "image 1: predicted" in out
    assert "Do you wish to run the custom code" not in out + result.stderr  # the pipeline asked nothing

    card = ModelCard.load(tmp_path / "run" / "lps" / "README.md")
    assert card.data.pipeline_tag == "image-classification"
    measured = {result.metric_type: result.metric_value for result in card.data.eval_results}
    # LPS with circular padding on 32x32 inputs (total stride 8) is exactly invariant to circular shifts, trained
    # briefly or not; the card carries the measured number, the same one the run printed
    assert measured["circular_shift_consistency"] == 1.0
    summary = re.search(r"LPS on 32 test images: accuracy ([\d.]+), circular-shift consistency ([\d.]+)", out)
    assert summary and float(summary[1]) == pytest.approx(measured["accuracy"], abs=1e-3)  # printed with 3 decimals
    assert float(summary[2]) == 1.0
    assert "| stride |" in out  # the baseline's row of the table

    with Image.open(tmp_path / "run" / "lps" / "lps_shift.png") as plot:  # published with the checkpoint
        assert plot.format == "PNG" and plot.width > 400
    assert "lps_shift.png" in out  # listed among the uploaded files
    # the published folder carries the image processor in transformers 5's nested layout (no prompt, see
    # tests/models/lps/test_remote_code_lps.py) and the annealing schedule reached the LPS run
    assert "processor_config.json" in out and "preprocessor_config.json" not in out
    assert "LPS Gumbel temperature at the end of training: 0.6141" in out  # 0.85 ** 3 (decay every step, 4 steps)
