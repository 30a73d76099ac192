"""training/pretrain_pyramidclip.py: the real `main([...])` in process, and `accelerate launch` with 2 CPU processes.

The script is loaded from its path (`training/` is not a package). Everything runs on seeded synthetic scenes with the
tiny preset at 32 pixels. The 2-process runs use gloo (`--multi_gpu` + `Accelerator(cpu=True)`, hf_stack.md
section 5) and check what distributed training promises: ranks read disjoint samples, parameters stay identical on
every rank, and a run killed after a checkpoint and resumed with `--resume_from_checkpoint latest` ends with exactly
the weights of an uninterrupted run. Those runs share one tokenizer saved up front, because
`train_clip_tokenizer` numbers byte tokens in a different order in each process, which would make two independent
runs differ before any resume.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

from hfvision.data import SyntheticScenes
from hfvision.models.pyramidclip import PyramidClipModel, train_clip_tokenizer
from tests.training.conftest import load_training_script

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "training" / "pretrain_pyramidclip.py"
CONFIG = REPO / "training" / "configs" / "pretrain_pyramidclip_tiny.yaml"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

# Shared by every run: tiny model, 32-pixel scenes, few steps. Flags after --config override the YAML.
TINY_ARGS = [
    "--config", str(CONFIG),
    "--image_size", "32",
    "--synthetic_image_size", "32",
    "--synthetic_num_eval", "32",
    "--per_device_train_batch_size", "16",
    "--per_device_eval_batch_size", "32",
    "--shuffle_buffer", "32",
    "--learning_rate", "2e-3",
    "--warmup_steps", "2",
    "--checkpoints_total_limit", "5",
    "--seed", "0",
]  # fmt: skip
# 2 processes x 2 tars of 64 scenes: 8 batches of 16 per rank and epoch, so 12 steps cross an epoch boundary.
NUM_PROCESSES, DIST_TRAIN, DIST_STEPS, CHECKPOINT_EVERY, KILL_AFTER = 2, 256, 12, 4, 6
DIST_ARGS = [
    *TINY_ARGS,
    "--synthetic_num_train", str(DIST_TRAIN),
    "--max_steps", str(DIST_STEPS),
    "--checkpointing_steps", str(CHECKPOINT_EVERY),
    "--eval_steps", str(DIST_STEPS),
    "--logging_steps", "4",
    "--debug_log_keys", "true",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(args: list[str], expect_success: bool = True) -> subprocess.CompletedProcess:
    """`accelerate launch` of the script on 2 CPU processes (gloo), on a port of its own."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", str(NUM_PROCESSES), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(SCRIPT), *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    if expect_success and result.returncode != 0:
        raise AssertionError(f"launch failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def read_log(output_dir: Path) -> list[dict]:
    lines = (output_dir / "log_history.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    scenes = SyntheticScenes(256, seed=0, image_size=32)
    tokenizer = train_clip_tokenizer((scenes[i]["caption"] for i in range(len(scenes))), vocab_size=400)
    path = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, tokenizer_dir) -> Path:
    """A 2-process run of DIST_STEPS steps, checkpointing every CHECKPOINT_EVERY."""
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    launch([*DIST_ARGS, "--tokenizer_name_or_path", str(tokenizer_dir), "--output_dir", str(output_dir)])
    return output_dir


def test_main_in_process_trains_and_saves_a_reloadable_checkpoint(tmp_path, single_thread):
    output_dir = tmp_path / "run"
    script = load_training_script("pretrain_pyramidclip")
    metrics = script.main(
        [
            *TINY_ARGS,
            "--synthetic_num_train", "128",
            "--max_steps", "24",
            "--logging_steps", "4",
            "--checkpointing_steps", "12",
            "--eval_steps", "12",
            "--tokenizer_vocab_size", "400",
            "--output_dir", str(output_dir),
        ]
    )  # fmt: skip

    assert metrics["global_step"] == 24
    assert metrics["train/loss_last_window"] < metrics["train/loss_first_window"]
    log = [entry for entry in read_log(output_dir) if "train/loss" in entry]
    assert [entry["step"] for entry in log] == [4, 8, 12, 16, 20, 24]
    assert {f"train/{name}" for name in script.LOSS_TERMS} <= set(log[0])
    assert log[-1]["train/num_skipped_samples"] == 0

    # Checkpoints: accelerate's state plus this rank's stream position (one epoch = 8 batches of 16).
    position = json.loads((output_dir / "checkpoint-12" / "stream_position_rank0.json").read_text())
    assert (position["step"], position["epoch"], position["batches_in_epoch"]) == (12, 1, 4)

    final_dir = output_dir / "final"
    assert (final_dir / "model.safetensors").is_file()
    assert not [path.name for path in final_dir.iterdir() if path.name.endswith(PICKLE_SUFFIXES)]
    model = AutoModel.from_pretrained(final_dir)
    assert isinstance(model, PyramidClipModel)
    processor = AutoProcessor.from_pretrained(final_dir)
    inputs = processor(text=["a photo of a red circle."], images=SyntheticScenes(1, image_size=32)[0]["image"])
    with torch.no_grad():
        assert model(**inputs).logits_per_image.shape == (1, 1)

    results = json.loads((final_dir / "eval_results.json").read_text())
    assert results["global_step"] == 24
    assert results["config"]["max_steps"] == 24
    for name in ("zero_shot_top1_accuracy", "zero_shot_top5_accuracy", "image_to_text_recall@1"):
        assert 0.0 <= results["metrics"][f"eval/{name}"] <= 1.0
    assert results["metrics"]["eval/num_samples"] == 32


def test_two_processes_read_disjoint_samples_and_stay_in_sync(uninterrupted_run):
    keys = [(uninterrupted_run / f"keys_rank{rank}.txt").read_text().split() for rank in range(NUM_PROCESSES)]
    assert [len(rank_keys) for rank_keys in keys] == [DIST_STEPS * 16] * NUM_PROCESSES
    rank_sets = [set(rank_keys) for rank_keys in keys]
    assert not rank_sets[0] & rank_sets[1]
    assert len(rank_sets[0] | rank_sets[1]) == DIST_TRAIN  # each rank went through all of its tars

    hashes = {(uninterrupted_run / f"params_sha256_rank{rank}.txt").read_text() for rank in range(NUM_PROCESSES)}
    assert len(hashes) == 1

    losses = [entry["train/loss"] for entry in read_log(uninterrupted_run) if "train/loss" in entry]
    assert losses[-1] < losses[0]
    assert (uninterrupted_run / "final" / "model.safetensors").is_file()


def test_killed_and_resumed_run_matches_uninterrupted_run(tmp_path, tokenizer_dir, uninterrupted_run):
    output_dir = tmp_path / "resumed"
    args = [*DIST_ARGS, "--tokenizer_name_or_path", str(tokenizer_dir), "--output_dir", str(output_dir)]
    killed = launch([*args, "--stop_after_step", str(KILL_AFTER)], expect_success=False)
    assert killed.returncode != 0
    assert sorted(path.name for path in output_dir.glob("checkpoint-*")) == ["checkpoint-4"]
    assert not (output_dir / "final").exists()

    resumed = launch([*args, "--resume_from_checkpoint", "latest"])
    assert "resumed from" in resumed.stderr + resumed.stdout

    expected = load_file(uninterrupted_run / "final" / "model.safetensors")
    actual = load_file(output_dir / "final" / "model.safetensors")
    assert expected.keys() == actual.keys()
    unequal = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not unequal, f"{len(unequal)} tensors differ after resume, e.g. {unequal[:3]}"
    # The resumed ranks continued where they were: after the checkpoint they consumed the same keys.
    for rank in range(NUM_PROCESSES):
        consumed_after_resume = (output_dir / f"keys_rank{rank}.txt").read_text().split()
        uninterrupted = (uninterrupted_run / f"keys_rank{rank}.txt").read_text().split()
        assert consumed_after_resume == uninterrupted[CHECKPOINT_EVERY * 16 :]
