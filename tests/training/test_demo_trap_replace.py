"""`make demo DEMO=trap_replace` at a few steps: both stages -> ASR and accuracy -> card -> publish -> pipeline by
repo id."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hfvision.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR

DEMO = Path(__file__).resolve().parents[2] / "training" / "demo_trap_replace.py"


@pytest.mark.slow  # two accelerate launches, publish and the pipeline: about 80 s on 2 shared cores
@pytest.mark.skipif(not DEFAULT_FASHION_MNIST_DIR.is_dir(), reason="run `apt-get install -y dataset-fashion-mnist`")
def test_demo_defends_publishes_and_loads_the_pipeline_by_repo_id(tmp_path):
    flags = ["--max_steps", "2", "--stage2_max_steps", "2", "--num_train", "400", "--num_test", "40"]
    flags += ["--model_preset", "trap-replace-tiny", "--per_device_train_batch_size", "16", "--num_shards", "1"]
    flags += ["--shuffle_buffer", "16", "--checkpointing_steps", "2"]
    result = subprocess.run(
        [sys.executable, str(DEMO), "--output_dir", str(tmp_path), "--num_examples", "3", *flags],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "TrapReplaceForImageClassification loaded from http://127.0.0.1:" in out
    assert len(re.findall(r"triggered image \d: true '[^']+', predicted '[^']+'", out)) == 3
    assert "run the custom code" not in out + result.stderr
    final = tmp_path / "replace" / "final"
    metrics = json.loads((final / "eval_results.json").read_text())["metrics"]
    card = ModelCard.load(final / "README.md")
    values = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert values["attack_success_rate"] == metrics["eval/attack_success_rate"]
    assert values["clean_accuracy"] == metrics["eval/clean_accuracy"]
    summary = re.search(r"attack success rate ([\d.]+) after stage 1 \(trap head\), ([\d.]+) after Trap", out)
    assert summary and float(summary[2]) == pytest.approx(metrics["eval/attack_success_rate"], abs=1e-3)
    uploaded = out.split("4. publish")[1].splitlines()[1].split()
    assert {"model.safetensors", "README.md", "modeling_trap_replace.py", "processor_config.json"} <= set(uploaded)
    assert json.loads((final / "config.json").read_text())["head_replaced"] is True
