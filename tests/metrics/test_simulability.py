"""The simulability metric: student-teacher agreement, as the SMaT trainer's `simulability` helper computes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hfvision.metrics import load_metric
from hfvision.models.scaffold import simulability


def test_agreement_matches_the_trainer_helper():
    generator = np.random.default_rng(0)
    student_logits = torch.from_numpy(generator.normal(size=(50, 10)))
    teacher_logits = student_logits.clone()
    teacher_logits[:20] = torch.from_numpy(generator.normal(size=(20, 10)))  # some disagreements
    metric = load_metric("simulability")
    result = metric.compute(predictions=student_logits.argmax(-1), references=teacher_logits.argmax(-1))
    assert result["simulability"] == pytest.approx(simulability(student_logits, teacher_logits))
    assert 0.5 < result["simulability"] < 1.0


def test_known_values_and_regression():
    metric = load_metric("simulability")
    assert metric.compute(predictions=[1, 2, 0, 0], references=[1, 2, 1, 0]) == {"simulability": 0.75}
    assert metric.compute(predictions=[3, 3], references=[1, 2]) == {"simulability": 0.0}
    regression = load_metric("simulability", config_name="regression")
    scores = [0.1, 0.5, 0.3, 0.9]
    assert regression.compute(predictions=scores, references=scores)["simulability"] == pytest.approx(1.0)
    flipped = regression.compute(predictions=scores, references=[-value for value in scores])["simulability"]
    assert flipped == pytest.approx(-1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="predictions"):
        load_metric("simulability").compute(predictions=[], references=[])
    with pytest.raises(ValueError, match="predictions"):
        load_metric("simulability", config_name="regression").compute(predictions=[1.0, 1.0], references=[0.0, 2.0])
    with pytest.raises(ValueError, match="config_name"):
        load_metric("simulability", config_name="ranking")
