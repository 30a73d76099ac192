"""The stream training loop never lies (issue 12, section 4): skipped samples counted and bounded, non-finite losses
stopped or skipped, resume refused across runs, atomic checkpoints, a log history without repeated steps.

Runs the real `hfvision.training` pieces (the ones every `training/*.py` script calls) on a toy linear model over
16-pixel synthetic-scene shards, in process and on one thread: about a second per run.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from torch import nn

from hfvision import training
from hfvision.data import SyntheticScenes, write_shards

pytestmark = pytest.mark.usefixtures("single_thread")


class ToyCollator:
    """Mean colour of each image; the batch carries the sample keys as every script's collator does."""

    epoch = 0

    def __call__(self, samples):
        pixels = [
            torch.as_tensor(np.asarray(sample["image"]), dtype=torch.float32).mean(dim=(0, 1)) for sample in samples
        ]
        return {"keys": [sample["__key__"] for sample in samples], "pixels": torch.stack(pixels) / 255}


def toy_forward(model, batch):
    return SimpleNamespace(loss=((model(batch["pixels"]) - 1.0) ** 2).mean())


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """2 tars of 16 scenes: 4 batches of 4 per tar, 8 per epoch."""
    root = tmp_path_factory.mktemp("toy_shards")
    write_shards(SyntheticScenes(32, seed=0, image_size=16), root, 2)
    return root


def run(data: Path, output_dir: Path, *flags: str, forward=toy_forward) -> dict:
    data_args, args = training.parse_args(
        [training.StreamDataArguments, training.StreamTrainingArguments],
        [
            "--train_data", str(data), "--output_dir", str(output_dir), "--per_device_train_batch_size", "4",
            "--shuffle_buffer", "1", "--max_steps", "8", "--logging_steps", "2", "--checkpointing_steps", "4",
            "--warmup_steps", "1", "--learning_rate", "1e-2", "--eval_steps", "100", *flags,
        ],
    )  # fmt: skip
    accelerator = training.make_accelerator(args)
    try:
        run_config = training.run_config(data_args, args)
        checkpoint = training.prepare_output_dir(accelerator, args, run_config)
        model = nn.Linear(3, 1)
        optimizer, scheduler = training.build_optimizer(model, args)
        model, optimizer, stream, step = training.prepare_stream(
            accelerator, model, optimizer, scheduler, str(data), ToyCollator(), data_args, args.seed, checkpoint
        )
        metrics = training.train(
            accelerator, model, optimizer, scheduler, stream, args, step, forward=forward, run_arguments=run_config
        )
        metrics["weights"] = {name: value.detach().clone() for name, value in model.state_dict().items()}
        return metrics
    finally:
        training.finish(accelerator)


def read_log(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "log_history.jsonl").read_text().splitlines()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- skipped samples -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corrupt_shards(tmp_path_factory) -> Path:
    """The toy shards with the last two images of the second tar replaced by garbage."""
    root = tmp_path_factory.mktemp("toy_corrupt")
    paths = write_shards(SyntheticScenes(32, seed=0, image_size=16), root, 2)
    with tarfile.open(paths[1]) as archive:
        members = [(member, archive.extractfile(member).read()) for member in archive.getmembers()]
    with tarfile.open(paths[1], "w") as archive:
        for member, payload in members:
            if member.name in ("000000030.jpg", "000000031.jpg"):
                payload = b"garbage"
                member.size = len(payload)
            archive.addfile(member, io.BytesIO(payload))
    return root


def test_a_run_stops_when_the_skipped_fraction_passes_the_threshold(corrupt_shards, tmp_path):
    with pytest.raises(RuntimeError, match=r"max_skipped_fraction.*undecodable_image in .*00001\.tar: 2"):
        run(corrupt_shards, tmp_path / "strict")  # default 1 %: 2 of 32 samples is 6 %


def test_skips_below_the_threshold_are_logged_by_reason_and_shard(corrupt_shards, tmp_path):
    output_dir = tmp_path / "lenient"
    metrics = run(corrupt_shards, output_dir, "--max_skipped_fraction", "0.5")
    shard = str(corrupt_shards / "00001.tar")
    assert metrics["data/skipped"] == [{"reason": "undecodable_image", "shard": shard, "count": 2}]
    log = read_log(output_dir)
    assert log[-1] == {"step": 8, "data/skipped": metrics["data/skipped"]}
    last = [entry for entry in log if "train/loss" in entry][-1]
    assert last["train/num_skipped_samples"] == 2 and last["train/skipped/undecodable_image"] == 2
    assert 2 / 40 <= last["train/skipped_fraction"] <= 2 / 32  # of the samples read (8 steps of 4 cross an epoch)


# --- non-finite losses ---------------------------------------------------------------------------------------------


def nan_forward_at(call: int, seen: list):
    """`toy_forward`, but the `call`-th micro-batch (1-based) gets a NaN loss; `seen` collects the weights per call."""

    def forward(model, batch):
        seen.append({name: value.detach().clone() for name, value in model.state_dict().items()})
        outputs = toy_forward(model, batch)
        if len(seen) == call:
            outputs.loss = outputs.loss * math.nan
        return outputs

    return forward


def test_a_non_finite_loss_stops_the_run_naming_step_and_keys(shards, tmp_path):
    with pytest.raises(FloatingPointError, match=r"global step 3 .*batch keys \['\d{9}', '\d{9}', '\d{9}', '\d{9}'\]"):
        run(shards, tmp_path / "nan", forward=nan_forward_at(3, []))
    assert not (tmp_path / "nan" / "final").exists()


def test_skip_nonfinite_steps_skips_the_whole_accumulated_step_and_counts_it(shards, tmp_path):
    seen: list = []
    # 2 micro-batches per step: call 3 is the first micro-batch of step 2; its step must leave the weights unchanged.
    metrics = run(
        shards,
        tmp_path / "skip",
        "--skip_nonfinite_steps", "true", "--gradient_accumulation_steps", "2",
        forward=nan_forward_at(3, seen),
    )  # fmt: skip
    assert metrics["train/num_nonfinite_steps"] == 1 and metrics["global_step"] == 8
    assert all(torch.equal(seen[2][name], seen[4][name]) for name in seen[2])  # step 2 skipped (calls 3 and 4)
    assert not all(torch.equal(seen[4][name], seen[6][name]) for name in seen[4])  # step 3 trained again
    assert all(torch.isfinite(value).all() for value in metrics["weights"].values())
    log = [entry for entry in read_log(tmp_path / "skip") if "train/num_nonfinite_steps" in entry]
    assert [entry["train/num_nonfinite_steps"] for entry in log] == [1, 1, 1, 1]
    assert all(math.isfinite(entry["train/loss"]) for entry in log)


# --- resume --------------------------------------------------------------------------------------------------------


def test_resume_refuses_a_checkpoint_of_a_run_with_other_arguments(shards, tmp_path):
    output_dir = tmp_path / "run"
    run(shards, output_dir, "--max_steps", "4")
    saved = json.loads((output_dir / "checkpoint-4" / "run_arguments.json").read_text())
    assert saved["learning_rate"] == 1e-2 and saved["train_data"] == str(shards)

    with pytest.raises(ValueError, match=r"learning_rate: checkpoint 0\.01, now 0\.05"):
        run(shards, output_dir, "--resume_from_checkpoint", "latest", "--learning_rate", "5e-2")
    with pytest.raises(ValueError, match="--overwrite_output_dir"):  # a fresh run would mix with the old checkpoints
        run(shards, output_dir, "--learning_rate", "5e-2")

    # The step budget may change.
    assert run(shards, output_dir, "--resume_from_checkpoint", "latest", "--max_steps", "6")["global_step"] == 6
    # --overwrite_output_dir starts fresh with the new arguments.
    run(shards, output_dir, "--learning_rate", "5e-2", "--overwrite_output_dir", "true", "--max_steps", "4")
    assert sorted(path.name for path in output_dir.glob("checkpoint-*")) == ["checkpoint-4"]
    saved = json.loads((output_dir / "checkpoint-4" / "run_arguments.json").read_text())
    assert saved["learning_rate"] == 5e-2
    assert [entry["step"] for entry in read_log(output_dir) if "train/loss" in entry] == [2, 4]


def test_log_history_has_no_repeated_steps_after_a_resume(shards, tmp_path):
    output_dir = tmp_path / "run"
    full = run(shards, output_dir)
    resumed = run(shards, output_dir, "--resume_from_checkpoint", str(output_dir / "checkpoint-4"))
    steps = [entry["step"] for entry in read_log(output_dir) if "train/loss" in entry]
    assert steps == [2, 4, 6, 8]
    assert all(torch.equal(full["weights"][name], resumed["weights"][name]) for name in full["weights"])


def test_a_checkpoint_is_replaced_only_once_complete(shards, tmp_path, monkeypatch):
    output_dir = tmp_path / "run"
    run(shards, output_dir)
    checkpoint = output_dir / "checkpoint-8"
    before = sha256(checkpoint / "model.safetensors")
    original_save_state = Accelerator.save_state

    def save_state_killed_midway(self, output_dir=None, **kwargs):  # writes a part, then "the process dies"
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"half-written")
        raise OSError("killed while saving")

    monkeypatch.setattr(Accelerator, "save_state", save_state_killed_midway)
    with pytest.raises(OSError, match="killed while saving"):
        run(shards, output_dir, "--resume_from_checkpoint", str(output_dir / "checkpoint-4"))
    monkeypatch.setattr(Accelerator, "save_state", original_save_state)

    assert training.find_latest_checkpoint(output_dir, 1) == checkpoint
    assert sha256(checkpoint / "model.safetensors") == before  # the complete checkpoint-8 was never touched
    # The next run clears the half-written folder and resumes from the intact checkpoint.
    assert run(shards, output_dir, "--resume_from_checkpoint", "latest", "--max_steps", "10")["global_step"] == 10
    assert not list(output_dir.glob("checkpoint-*.tmp"))
