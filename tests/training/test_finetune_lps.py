"""LPS through the generic Trainer script: the Gumbel temperature is annealed automatically, and the model learns.

The checkpoint is a tiny `LpsResNetForImageClassification` (2 LPS layers) saved with a 32x32 `LpsImageProcessor`. The
synthetic class is an image's dominant colour, so a working pipeline learns it in a few dozen steps while a broken one
stays near chance (1/6).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageClassification

from hfvision.models.lps import LpsImageProcessor, LpsResNetConfig, LpsResNetForImageClassification, gumbel_tau_buffers
from tests.training.conftest import run_finetune

SEED = 0
# Measured with seeds 0-2 on 2 CPU cores (one thread): top-1 0.16-0.33 before (random head), 0.86-1.0 after these 40
# steps (about 4 s of training); seed 0: 0.156 -> 0.859.
TRAIN_ARGS = [
    "--dataset", "synthetic",
    "--max_steps", "40",
    "--per_device_train_batch_size", "32",
    "--per_device_eval_batch_size", "64",
    "--learning_rate", "3e-3",
    "--save_strategy", "no",
    "--logging_steps", "20",
    "--seed", str(SEED),
    "--use_cpu",
    "--report_to", "none",
    "--gumbel_tau_decay", "0.5",
    "--gumbel_tau_decay_steps", "15",
    "--gumbel_tau_min", "0.2",
]  # fmt: skip


@pytest.fixture(scope="module")
def lps_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(SEED)
    path = tmp_path_factory.mktemp("lps-tiny")
    config = LpsResNetConfig.from_preset("lps-resnet18-tiny", gumbel_tau=1.0)
    LpsResNetForImageClassification(config).save_pretrained(path)
    LpsImageProcessor(size={"height": 32, "width": 32}, size_divisor=config.total_stride).save_pretrained(path)
    return path


def final_taus(output_dir: Path) -> list[float]:
    return [float(tau) for tau in gumbel_tau_buffers(AutoModelForImageClassification.from_pretrained(output_dir))]


def test_script_anneals_the_temperature_and_learns(finetune, lps_checkpoint, tmp_path):
    metrics = run_finetune(finetune, lps_checkpoint, tmp_path, TRAIN_ARGS)
    # the last step (39) ran at max(1.0 * 0.5 ** (39 // 15), 0.2) = 0.25, in both LPS layers
    assert final_taus(tmp_path) == pytest.approx([0.25, 0.25])
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["GumbelTemperatureCallback"]["args"]["decay_steps"] == 15
    assert metrics["eval_top1_accuracy"] >= 0.5 > 1 / 6 + 0.3
    assert metrics["eval_loss"] < metrics["eval_init_loss"]


def test_annealing_can_be_switched_off(finetune, lps_checkpoint, tmp_path):
    args = [*TRAIN_ARGS, "--anneal_gumbel_tau", "false", "--max_steps", "2"]
    run_finetune(finetune, lps_checkpoint, tmp_path, args)
    assert final_taus(tmp_path) == [1.0, 1.0]
