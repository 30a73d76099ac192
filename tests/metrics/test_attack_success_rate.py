"""The attack-success-rate metric: hand-worked cases, the target-class exclusion, and bad inputs."""

import numpy as np
import pytest

from hfvision.metrics import available_metrics, load_metric


@pytest.fixture(scope="module")
def asr():
    return load_metric("attack_success_rate")


def test_hand_worked_case_and_scores(asr):
    assert "attack_success_rate" in available_metrics()
    result = asr.compute(predictions=[0, 0, 3, 0, 5], references=[1, 2, 3, 4, 5], target_label=0)
    assert result == {"attack_success_rate": 0.6, "num_triggered": 5}
    scores = np.eye(6)[[0, 0, 3, 0, 5]] + 0.01  # (N, C) scores give the same answer through argmax
    assert asr.compute(predictions=scores.tolist(), references=[1, 2, 3, 4, 5], target_label=0) == result


def test_target_class_images_are_not_in_the_denominator(asr):
    """Adding triggered target-class images, predicted as the target or not, leaves the ASR unchanged; counting
    them (the wrong denominator) would give 4/6 here instead of 2/4."""
    base = asr.compute(predictions=[2, 2, 1, 0], references=[0, 1, 3, 3], target_label=2)
    assert base == {"attack_success_rate": 0.5, "num_triggered": 4}
    with_targets = asr.compute(predictions=[2, 2, 1, 0, 2, 0], references=[0, 1, 3, 3, 2, 2], target_label=2)
    assert with_targets == base


def test_bad_inputs(asr):
    with pytest.raises(ValueError, match="target_label"):
        asr.compute(predictions=[0, 1], references=[1, 1])
    with pytest.raises(ValueError, match="target class"):
        asr.compute(predictions=[0, 1], references=[0, 0], target_label=0)
