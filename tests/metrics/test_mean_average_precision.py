"""hfvision/metrics/mean_average_precision: hand-checked values, scikit-learn agreement with ties, input checks."""

from __future__ import annotations

import numpy as np
import pytest

from hfvision.metrics import load_metric


@pytest.fixture(scope="module")
def mean_average_precision():
    return load_metric("mean_average_precision")


def test_hand_checked_macro_map(mean_average_precision):
    # class 0 ranks its positives 1st and 3rd: AP = (1/1 + 2/3) / 2; class 1 ranks its only positive 1st: AP = 1.
    result = mean_average_precision.compute(
        predictions=[[0.9, 0.2], [0.4, 0.8], [0.1, 0.3]], references=[[1, 0], [0, 1], [1, 0]]
    )
    assert result["mAP"] == pytest.approx((5 / 6 + 1.0) / 2)
    assert result["num_classes_evaluated"] == 2


def test_a_tie_counts_as_one_threshold(mean_average_precision):
    # positive and negative tied at the top: precision 1/2 at recall 1, whatever their order
    for references in ([[1], [0]], [[0], [1]]):
        result = mean_average_precision.compute(predictions=[[0.5], [0.5]], references=references)
        assert result["mAP"] == pytest.approx(0.5)


def test_matches_scikit_learn_with_ties_and_a_class_without_positives(mean_average_precision):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(60, 7)).astype(float)  # few distinct values: many ties
    labels = (rng.random((60, 7)) < 0.3).astype(int)
    labels[:, 3] = 0  # no positive: left out of the mean
    expected = np.mean(
        [sklearn_metrics.average_precision_score(labels[:, c], scores[:, c]) for c in range(7) if c != 3]
    )
    result = mean_average_precision.compute(predictions=scores, references=labels)
    assert result["mAP"] == pytest.approx(expected)
    assert result["num_classes_evaluated"] == 6
    micro = mean_average_precision.compute(predictions=scores, references=labels, average="micro")["mAP"]
    assert micro == pytest.approx(sklearn_metrics.average_precision_score(labels.ravel(), scores.ravel()))


def test_perfect_and_reversed_rankings(mean_average_precision):
    labels = np.eye(4, dtype=int)
    assert mean_average_precision.compute(predictions=labels * 2.0, references=labels)["mAP"] == 1.0
    reversed_map = mean_average_precision.compute(predictions=-labels * 2.0, references=labels)["mAP"]
    assert reversed_map == pytest.approx(0.25)  # each positive ranked last of 4


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        ([[0.1, 0.2]], [[1, 0, 0]], "references"),
        ([[0.1, 0.2]], [[2, 0]], "only 0 and 1"),
        ([[0.1, 0.2]], [[0, 0]], "no positive"),
        ([[float("nan"), 0.2]], [[1, 0]], "finite"),
    ],
)
def test_rejects_bad_input(mean_average_precision, predictions, references, message):
    with pytest.raises(ValueError, match=message):
        mean_average_precision.compute(predictions=predictions, references=references)
