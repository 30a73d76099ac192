"""`make demo DEMO=autolink` at a few steps: train -> evaluate -> card -> publish -> load by repo id -> draw."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from huggingface_hub import ModelCard
from PIL import Image

DEMO = Path(__file__).resolve().parents[2] / "training" / "demo_autolink.py"


def test_demo_publishes_the_measured_keypoint_numbers_and_loads_the_pipeline_by_repo_id(tmp_path):
    flags = ["--max_steps", "4", "--stick_figures_num_train", "256", "--stick_figures_num_eval", "32"]
    flags += ["--per_device_train_batch_size", "16", "--eval_steps", "4", "--checkpointing_steps", "4"]
    result = subprocess.run(
        [sys.executable, str(DEMO), "--output_dir", str(tmp_path), "--num_examples", "3", *flags],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "AutoLinkModel loaded from http://127.0.0.1:" in out and "strongest edges [(" in out
    assert "run the custom code" not in out + result.stderr  # no remote-code prompt with hfvision installed
    final = tmp_path / "run" / "final"
    metrics = json.loads((final / "eval_results.json").read_text())["metrics"]
    card = ModelCard.load(final / "README.md")
    values = {result.metric_name: result.metric_value for result in card.data.eval_results}
    assert values["Regressed keypoint error (NME, box diagonal)"] == metrics["eval/keypoint_nme"]
    assert values["Strongest-edge precision vs true bones (Hungarian)"] == metrics["eval/edge_precision"]
    bones = values["True bones among the strongest edges (nearest joint)"]
    assert bones == metrics["eval/nearest_joint_bone_recall"]
    assert card.data.pipeline_tag == "keypoint-detection" and "](keypoints.png)" in card.text
    uploaded = out.split("4. publish")[1].splitlines()[1].split()
    assert {"keypoints.png", "model.safetensors", "README.md", "modeling_autolink.py"} <= set(uploaded)
    with Image.open(tmp_path / "keypoints_from_hub.png") as strip:  # 3 figures of 32 pixels, drawn 4x larger
        assert strip.size == (3 * 130 + 2, 132)
