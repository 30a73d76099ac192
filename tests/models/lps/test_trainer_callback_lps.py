"""Gumbel temperature annealing (`GumbelTemperatureCallback`): the official step decay, driven by the global step."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from hfvision.models.lps import (
    GumbelTemperatureCallback,
    LpsResNetConfig,
    LpsResNetForImageClassification,
    gumbel_tau_at_step,
    gumbel_tau_buffers,
)
from tests.training.conftest import one_thread


@pytest.fixture
def single_thread() -> Iterator[None]:
    with one_thread():  # tiny ops: two OpenMP threads on two shared cores spin-wait (see tests/training/conftest.py)
        yield


def official_step_decay(num_epochs: int, initial: float, gamma: float, step_size: int, floor: float) -> list[float]:
    """The official scheduler's recurrence, epoch by epoch: after every `step_size`-th finished epoch,
    tau <- max(tau * gamma, floor). Entry e is the temperature used during epoch e."""
    taus, tau = [], initial
    for epoch in range(num_epochs):
        taus.append(tau)
        if (epoch + 1) % step_size == 0:
            tau = max(tau * gamma, floor)
    return taus


def test_closed_form_equals_the_official_per_epoch_recurrence():
    steps_per_epoch = 7
    for gamma in (0.85, 0.825):  # CIFAR-10 and ImageNet configs; 250 epochs reach the 0.025 floor
        expected = official_step_decay(250, 1.0, gamma, 10, 0.025)
        for epoch, tau in enumerate(expected):
            for step in (epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch - 1):
                assert gumbel_tau_at_step(step, 1.0, gamma, 10 * steps_per_epoch, 0.025) == pytest.approx(tau)
        assert expected[-1] == 0.025 and expected[9] == 1.0 and expected[10] == pytest.approx(gamma)


def test_schedule_values_and_argument_checks():
    taus = [gumbel_tau_at_step(step, 2.0, 0.5, 3, 0.3) for step in range(10)]
    assert taus == [2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.3]
    with pytest.raises(ValueError, match="step"):
        gumbel_tau_at_step(-1, 1.0, 0.5, 3, 0.1)
    for kwargs, name in (({"decay": 0}, "decay"), ({"decay_steps": 0}, "decay_steps"), ({"min_tau": 0}, "min_tau")):
        with pytest.raises(ValueError, match=name):
            GumbelTemperatureCallback(**kwargs)


class PixelsAndLabels(torch.utils.data.Dataset):
    """Seeded random 16x16 images with random labels (the test is about the temperature, not learning)."""

    def __init__(self, size: int = 24):
        generator = torch.Generator().manual_seed(0)
        self.pixels = torch.randn(size, 3, 16, 16, generator=generator)
        self.labels = torch.randint(0, 3, (size,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


class TemperatureRecorder(TrainerCallback):
    """Records, per optimizer step, the temperature the LPS layers hold when the step's forward runs."""

    def __init__(self):
        self.taus: dict[int, list[float]] = {}

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.taus[state.global_step] = [float(buffer) for buffer in gumbel_tau_buffers(model)]


def train(output_dir, max_steps: int, resume: str | None = None, **callback_kwargs) -> dict[int, list[float]]:
    torch.manual_seed(0)
    config = LpsResNetConfig.from_preset("lps-resnet18-tiny", num_labels=3, gumbel_tau=2.0)
    recorder = TemperatureRecorder()
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=4,  # 24 images: 6 steps per epoch
        save_strategy="steps",
        save_steps=3,
        logging_steps=100,
        use_cpu=True,
        report_to="none",
        seed=0,
    )
    callbacks = [GumbelTemperatureCallback(**callback_kwargs), recorder]  # the recorder runs after the annealing
    trainer = Trainer(
        LpsResNetForImageClassification(config), args=args, train_dataset=PixelsAndLabels(), callbacks=callbacks
    )
    trainer.train(resume_from_checkpoint=resume)
    return recorder.taus


def test_trainer_anneals_every_lps_layer_by_the_global_step(tmp_path, single_thread):
    taus = train(tmp_path, max_steps=8, decay=0.5, decay_epochs=0.5, min_tau=0.3)  # 0.5 epoch = 3 steps
    assert sorted(taus) == list(range(8))
    assert all(len(values) == 2 and len(set(values)) == 1 for values in taus.values())  # 2 LPDs, one tau
    assert [values[0] for values in taus.values()] == [2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 0.5, 0.5]
    saved = json.loads((tmp_path / "checkpoint-3" / "trainer_state.json").read_text())
    schedule = saved["stateful_callbacks"]["GumbelTemperatureCallback"]["args"]
    assert schedule["decay_steps"] == 3 and schedule["initial_tau"] == 2.0  # resolved from the epochs and the config


def test_resumed_run_gets_the_same_temperatures(tmp_path, single_thread):
    schedule = {"decay": 0.5, "decay_steps": 2, "min_tau": 0.3}
    uninterrupted = train(tmp_path / "full", max_steps=7, **schedule)
    train(tmp_path / "resumed", max_steps=3, **schedule)  # stops at step 3, checkpoint-3
    resumed = train(tmp_path / "resumed", max_steps=7, resume=str(tmp_path / "resumed" / "checkpoint-3"), **schedule)
    assert sorted(resumed) == [3, 4, 5, 6]
    assert {step: uninterrupted[step] for step in resumed} == resumed
    assert [uninterrupted[step][0] for step in range(7)] == pytest.approx([2.0, 2.0, 1.0, 1.0, 0.5, 0.5, 0.3])


def test_callback_refuses_a_model_without_lps_layers(tmp_path, single_thread):
    config = LpsResNetConfig.from_preset("lps-resnet18-tiny", num_labels=3, downsample="stride")
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, use_cpu=True, report_to="none")
    trainer = Trainer(
        LpsResNetForImageClassification(config),
        args=args,
        train_dataset=PixelsAndLabels(4),
        callbacks=[GumbelTemperatureCallback()],
    )
    with pytest.raises(ValueError, match="LPS layers"):
        trainer.train()
