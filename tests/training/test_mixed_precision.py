"""`--mixed_precision bf16` reaches Accelerate, and a real training script runs with it and reports its throughput."""

from __future__ import annotations

import math

import pytest
import torch
from accelerate.state import AcceleratorState
from torch import nn

from hfvision.training import StreamTrainingArguments, finish, make_accelerator, parse_args
from tests.training.conftest import load_training_script, one_thread


class Probe(nn.Module):
    """A linear layer that records the dtype its matrix product ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.computed: list[torch.dtype] = []

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        output = self.linear(hidden_states)
        self.computed.append(output.dtype)
        return output


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """An in-process Trainer run earlier in the session leaves accelerate's state (fp32) behind, and accelerate refuses
    to change the precision of an initialised state: start these tests from none, as a new process does."""
    AcceleratorState._reset_state(reset_partial_state=True)


def test_mixed_precision_flag_makes_the_prepared_model_run_in_bf16(tmp_path):
    (args,) = parse_args([StreamTrainingArguments], ["--output_dir", str(tmp_path), "--mixed_precision", "bf16"])
    accelerator = make_accelerator(args)
    try:
        layer = accelerator.prepare(Probe())
        assert accelerator.mixed_precision == "bf16"
        layer(torch.randn(2, 4))
        assert layer.computed == [torch.bfloat16]  # accelerate's autocast wraps the forward (and casts outputs back)
        assert layer.linear.weight.dtype == torch.float32  # master weights stay float32
    finally:
        finish(accelerator)


def test_training_script_runs_in_bf16_and_logs_loader_throughput(tmp_path):
    script = load_training_script("train_score_sde")
    args = [
        "--output_dir", str(tmp_path), "--model_preset", "score-sde-tiny", "--manifold_ambient_dim", "10",
        "--manifold_num_train", "64", "--per_device_train_batch_size", "16", "--shuffle_buffer", "1",
        "--max_steps", "4", "--warmup_steps", "1", "--logging_steps", "2", "--eval_steps", "4", "--seed", "0",
        "--eval_num_samples", "16", "--eval_num_inference_steps", "4", "--eval_energy_points", "8",
        "--manifold_num_eval", "16", "--mixed_precision", "bf16",
    ]  # fmt: skip
    with one_thread():
        metrics = script.main(args)
    assert metrics["global_step"] == 4 and math.isfinite(metrics["train/loss_last_window"])
    assert metrics["train/compute_samples_per_second"] > 0
    assert 0 <= metrics["train/data_wait_fraction"] <= 1 and metrics["train/run_seconds"] > 0
