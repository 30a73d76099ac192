"""Cross-check with adversarial-robustness-toolbox (the `backdoor` extra): our BadNets stamping and ASR agree with
ART's backdoor poisoning on the same images. Skipped when ART is absent."""

from __future__ import annotations

import numpy as np
import pytest

from hfvision.data import BackdoorAttack, stamp_trigger
from hfvision.metrics import load_metric
from tests.data.test_backdoor import toy_dataset

art_poisoning = pytest.importorskip("art.attacks.poisoning")
perturbations = pytest.importorskip("art.attacks.poisoning.perturbations")


def art_grid(images: np.ndarray) -> np.ndarray:
    """The official 3x3 BadNets grid through ART: its `add_pattern_bd` checkerboard (distance 1, value 255) sets the
    four white cells; the official trigger also blacks out the other five, which ART leaves as they were."""
    blanked = images.copy()
    blanked[:, -3:, -3:] = 0
    backdoor = art_poisoning.PoisoningAttackBackdoor(
        lambda x: perturbations.add_pattern_bd(x, distance=1, pixel_value=255)
    )
    poisoned, _ = backdoor.poison(blanked, y=np.eye(10)[0], broadcast=True)
    return poisoned.astype(np.uint8)


def test_badnet_grid_stamping_equals_art():
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32), dtype=np.uint8)
    assert np.array_equal(stamp_trigger(images, "badnet_grid"), art_grid(images))


def test_asr_of_our_triggered_set_equals_art_style_asr():
    """Same predictor on our triggered test set and on ART-poisoned non-target test images: same ASR."""
    dataset = toy_dataset(120, seed=3)
    target = 4
    triggered = BackdoorAttack(trigger="badnet_grid", target_label=target).triggered_test_set(dataset)
    images = np.stack([np.asarray(image) for image in dataset["image"]])
    labels = np.asarray(dataset["label"])

    def predict(batch: np.ndarray) -> np.ndarray:  # a fixed rule that a backdoored model might learn
        fires = batch[:, -1, -1] > 200
        return np.where(fires & (batch.mean(axis=(1, 2)) > 127), target, batch[:, 0, 0] % 10)

    source = labels != target
    art_predictions = predict(art_grid(images[source]))
    art_asr = float(np.mean(art_predictions == target))  # ART examples' ASR: non-target poisoned test images
    ours = load_metric("attack_success_rate").compute(
        predictions=predict(np.stack([np.asarray(image) for image in triggered["image"]])),
        references=triggered["label"],
        target_label=target,
    )
    assert ours["num_triggered"] == int(source.sum())
    assert ours["attack_success_rate"] == pytest.approx(art_asr)
    assert 0 < art_asr < 1  # the rule fires on some triggered images, not all: the comparison can fail
