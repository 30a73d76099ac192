"""The real `main([...])` of training/train_trap_replace.py, briefly, on synthetic data: data build with the
poisoned split recorded, stage 1 with every loss term logged, stage 2 with a frozen stem, metrics and the card."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from tests.training.conftest import load_training_script


def common_flags(tmp_path) -> list[str]:
    return [
        "--dataset", "synthetic", "--num_train", "200", "--num_test", "60", "--num_shards", "2",
        "--backdoor_data", str(tmp_path / "data"), "--model_preset", "trap-replace-tiny", "--num_channels", "1",
        "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "64", "--shuffle_buffer", "32",
        "--checkpointing_steps", "2", "--eval_steps", "3", "--logging_steps", "1", "--report_to", "none",
    ]  # fmt: skip


def test_both_stages_run_and_stage_two_keeps_the_stem(tmp_path, single_thread):
    script = load_training_script("train_trap_replace")
    trap_dir, replace_dir = tmp_path / "trap", tmp_path / "replace"
    metrics = script.main([*common_flags(tmp_path), "--output_dir", str(trap_dir), "--max_steps", "3"])
    assert metrics["global_step"] == 3 and 0 <= metrics["eval/attack_success_rate"] <= 1
    assert 0 <= metrics["eval/clean_accuracy"] <= 1

    record = json.loads((tmp_path / "data" / "attack.json").read_text())
    assert record["num_poisoned"] == 20 and len(record["poisoned_indices"]) == 20  # round(0.1 * 200)
    assert record["holdout_indices"] == list(range(190, 200))
    assert record["split_sizes"]["holdout"] == 10 and record["split_sizes"]["eval"] == 60
    logged = [json.loads(line) for line in (trap_dir / "log_history.jsonl").read_text().splitlines()]
    terms = {key for entry in logged for key in entry}
    assert {"train/classification_loss", "train/reconstruction_loss", "train/tv_loss"} <= terms

    stage1 = load_file(trap_dir / "final" / "model.safetensors")
    metrics = script.main(
        [
            *common_flags(tmp_path), "--output_dir", str(replace_dir), "--max_steps", "3", "--stage", "replace",
            "--model_name_or_path", str(trap_dir / "final"), "--learning_rate", "0.03",
            "--per_device_train_batch_size", "4",  # the holdout has 10 images
        ]
    )  # fmt: skip
    assert metrics["global_step"] == 3
    stage2 = load_file(replace_dir / "final" / "model.safetensors")
    stem = [name for name in stage1 if name.startswith("trap_replace.")]
    assert stem and any("running_mean" in name for name in stem)
    for name in stem:  # every stem weight and BatchNorm statistic bit-identical after stage-2 steps
        assert torch.equal(stage1[name], stage2[name]), name
    assert not any(name.startswith(("trap_head.", "decoder.")) for name in stage2)
    config = json.loads((replace_dir / "final" / "config.json").read_text())
    assert config["head_replaced"] is True
    card = ModelCard.load(replace_dir / "final" / "README.md")
    measured = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert measured["attack_success_rate"] == pytest.approx(metrics["eval/attack_success_rate"])
    assert "stage **`replace`**" in card.text


def test_stage_two_needs_a_checkpoint(tmp_path):
    script = load_training_script("train_trap_replace")
    with pytest.raises(ValueError, match="model_name_or_path"):
        script.parse_args(["--output_dir", str(tmp_path), "--stage", "replace"])
    with pytest.raises(ValueError, match="stage"):
        script.parse_args(["--output_dir", str(tmp_path), "--stage", "bait"])
