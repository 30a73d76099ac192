"""Memorisation of a finite training set by a generative model, as an `evaluate` module.

Score-Based Generative Models Detect Manifolds (J. Pidstrigach, NeurIPS 2022, arXiv 2206.01018): the exact
minimiser of the denoising score-matching loss on N points is the score of the empirical measure, and a model within
finite error energy of it outputs only training points; generalisation needs an error of infinite energy with
respect to the empirical score. This module measures how close samples come to copying: each sample's distance to
its nearest training point, the fraction within `delta` (a copy), and the same fraction for fresh draws of the data
law (the chance level a perfectly generalising model scores), plus the nearest / second-nearest ratio rule (a
sample much closer to one training point than to any other, ratio < 1/3, counts as a copy; Yoon et al. 2023 style).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Memorisation: nearest-training-point distance of each sample (median, mean), the fraction of samples within `delta`
of a training point against the same fraction for `fresh_points` of the data law (chance), their excess
(`memorization_excess` = fraction - chance) and the fraction whose nearest / second-nearest distance ratio is < 1/3.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (n, d) generated samples.
    training_points: (N, d) the training set, N >= 2.
    delta: distance under which a sample counts as a copy of a training point (default 0.02).
    fresh_points: (m, d) new draws of the data law, for the chance level (optional).

Returns:
    `nearest_distance_median`, `nearest_distance_mean`, `fraction_within_delta`, `fraction_ratio_below_third`, and
    with `fresh_points` also `chance_fraction_within_delta`, `memorization_excess` (fraction - chance),
    `chance_fraction_ratio_below_third` and `chance_nearest_distance_median` (the same measures for fresh points; the
    last two do not depend on `delta`, so they compare training sets of any size).

Examples:
    >>> metric = evaluate.load("hfvision/metrics/memorization")
    >>> metric.compute(predictions=[[0.0, 0.0], [0.5, 0.5]], training_points=[[0.0, 0.0], [1.0, 1.0]], delta=0.1)
    {'nearest_distance_median': 0.35..., 'fraction_within_delta': 0.5, 'fraction_ratio_below_third': 0.5, ...}
"""

_CITATION = """\
@inproceedings{pidstrigach2022score,
  title={Score-Based Generative Models Detect Manifolds},
  author={Pidstrigach, Jakiw},
  booktitle={Advances in Neural Information Processing Systems},
  year={2022}
}
"""


def pairwise_distances(queries: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Euclidean distances `(n, N)` in float64 through the Gram matrix (one matmul, no loop over samples)."""
    squared = (queries**2).sum(-1)[:, None] - 2 * queries @ points.T + (points**2).sum(-1)[None, :]
    return np.sqrt(np.clip(squared, 0, None))


def _as_points(value, name: str, dim: int | None = None) -> np.ndarray:
    points = np.asarray(value, dtype=np.float64)
    if points.ndim != 2 or len(points) == 0 or (dim is not None and points.shape[1] != dim):
        expected = "(n, d)" if dim is None else f"(n, {dim})"
        raise ValueError(f"`{name}` must be a non-empty {expected} array of points, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"`{name}` must be finite")
    return points


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Memorization(evaluate.Metric):
    """Nearest-training-point statistics of (n, d) samples against a chance level."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(self, predictions, training_points=None, delta: float = 0.02, fresh_points=None) -> dict[str, float]:
        samples = _as_points(predictions, "predictions")
        if training_points is None:
            raise ValueError("`training_points` is required: the (N, d) training set")
        train = _as_points(training_points, "training_points", samples.shape[1])
        if len(train) < 2:
            raise ValueError(f"`training_points` needs at least 2 points, got {len(train)}")
        if not delta > 0:
            raise ValueError(f"`delta` must be > 0, got {delta}")
        two_nearest = np.partition(pairwise_distances(samples, train), 1, axis=-1)[:, :2]  # (n, 2), sorted
        nearest = two_nearest[:, 0]
        ratio = nearest / np.maximum(two_nearest[:, 1], 1e-300)
        results = {
            "nearest_distance_median": float(np.median(nearest)),
            "nearest_distance_mean": float(nearest.mean()),
            "fraction_within_delta": float((nearest <= delta).mean()),
            "fraction_ratio_below_third": float((ratio < 1 / 3).mean()),
        }
        if fresh_points is not None:
            fresh = _as_points(fresh_points, "fresh_points", samples.shape[1])
            fresh_two = np.partition(pairwise_distances(fresh, train), 1, axis=-1)[:, :2]
            chance = float((fresh_two[:, 0] <= delta).mean())
            results["chance_fraction_within_delta"] = chance
            results["memorization_excess"] = results["fraction_within_delta"] - chance
            # scale-free chance levels (they do not depend on delta or on the spacing of the training points)
            fresh_ratio = fresh_two[:, 0] / np.maximum(fresh_two[:, 1], 1e-300)
            results["chance_fraction_ratio_below_third"] = float((fresh_ratio < 1 / 3).mean())
            results["chance_nearest_distance_median"] = float(np.median(fresh_two[:, 0]))
        return results
