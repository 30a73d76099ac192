"""`make demo DEMO=scaffold` at a tiny budget: teacher -> SMaT + baseline students -> saliency picture -> cards ->
publish the ViT and the explainer to the local Hub -> load both by repo id."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from PIL import Image

DEMO = Path(__file__).resolve().parents[2] / "training" / "demo_scaffold.py"


@pytest.mark.slow
def test_demo_trains_publishes_and_loads_explainer_by_repo_id(tmp_path):
    flags = ["--teacher_epochs", "1", "--student_epochs", "1", "--num_examples", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(DEMO), "--output_dir", str(tmp_path), *flags],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "AttentionExplainer and ScaffoldVitForImageClassification loaded from http://127.0.0.1:" in out
    assert "digit 1: predicted" in out and "Do you wish to run the custom code" not in out + result.stderr
    for name in ("none", "static", "smat"):
        assert f"{name}: simulability" in out
    card = ModelCard.load(tmp_path / "run" / "final" / "teacher_explainer" / "README.md")
    metrics = {result.metric_name: result.metric_value for result in card.data.eval_results}
    assert {"simulability (smat)", "simulability (static)", "simulability (none)"} <= set(metrics)
    assert "org/scaffold-vit-digits-smat-explainer" in card.text
    with Image.open(tmp_path / "scaffold_saliency.png") as picture:
        assert picture.size == (2 * (128 + 4), 2 * 128 + 4)
