"""Distance of generated samples to a known manifold, and angle coverage on a circle, as an `evaluate` module.

Score-Based Generative Models Detect Manifolds (J. Pidstrigach, NeurIPS 2022, arXiv 2206.01018): a score model whose
error has finite energy along the reverse path puts its samples on the data's support M (Theorem on equivalence of
the output law and the data law); a bounded-drift model cannot (its output has full support). A sampler stopped at
sigma_min lands within O(sigma_min sqrt(d - k)) of M, so "on M" is measured as the fraction of samples within a
small distance. The weights (how often each part of M is visited) are a separate question: for a circle the angle
histogram against uniform tells them apart (the horizon T changes the weights, not the support).

The manifold is given in closed form as in `hfvision.models.score_sde.manifolds`: an isometry Q `(d, m)` (orthonormal
columns) embeds a model manifold of R^m into R^d, and the distance is computed here with numpy in float64.
"""

import datasets
import evaluate
import numpy as np

MANIFOLDS = ("sphere", "flat_torus", "torus3d")

_DESCRIPTION = """\
Distance of samples to a manifold embedded by an isometry (a k-sphere, a flat torus S^1 x S^1 or a standard torus in
R^3): median, mean, 95th percentile and maximum, the fraction within each threshold, and for a circle (a 1-sphere) the
angle histogram's chi-square against uniform and the fraction of angle bins that hold a sample (coverage).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (n, d) samples.
    isometry: (d, m) matrix with orthonormal columns (`manifold.isometry`): x = Q u embeds u in R^m.
    manifold: "sphere" (m = k + 1; `radius`), "flat_torus" (m = 4; `radii`) or "torus3d" (m = 3; `radii` = (R, r)).
    radius: radius of the sphere (default 1.0).
    radii: the two radii of a torus (default (1.0, 1.0) for the flat torus, required for "torus3d").
    thresholds: distances whose "fraction within" is reported (default (0.01, 0.03)).
    num_angle_bins: bins of the circle's angle histogram (default 16).

Returns:
    `distance_median`, `distance_mean`, `distance_p95`, `distance_max`, `within_<t>` for each threshold; for a circle
    also `angle_chi2` (about num_angle_bins - 1 for uniform angles), `angle_chi2_dof` and `angle_coverage`.

Examples:
    >>> metric = evaluate.load("hfvision/metrics/manifold_distance")
    >>> metric.compute(predictions=[[1.0, 0.0], [0.0, 1.1]], isometry=[[1.0, 0.0], [0.0, 1.0]], num_angle_bins=4)
    {'distance_median': 0.05, ..., 'within_0.01': 0.5, 'within_0.03': 0.5, 'angle_chi2': 2.0, ...}
"""

_CITATION = """\
@inproceedings{pidstrigach2022score,
  title={Score-Based Generative Models Detect Manifolds},
  author={Pidstrigach, Jakiw},
  booktitle={Advances in Neural Information Processing Systems},
  year={2022}
}
"""


def squared_distance(points: np.ndarray, isometry: np.ndarray, manifold: str, radius: float, radii) -> np.ndarray:
    """Squared distance `(n,)` of `points` `(n, d)` to the embedded manifold (digest B3's closed forms)."""
    coordinates = points @ isometry  # (n, m)
    off_space = ((points - coordinates @ isometry.T) ** 2).sum(-1)
    if manifold == "sphere":
        return off_space + (np.linalg.norm(coordinates, axis=-1) - radius) ** 2
    if manifold == "flat_torus":
        first = (np.linalg.norm(coordinates[:, :2], axis=-1) - radii[0]) ** 2
        return off_space + first + (np.linalg.norm(coordinates[:, 2:], axis=-1) - radii[1]) ** 2
    rho = np.linalg.norm(coordinates[:, :2], axis=-1)
    return off_space + (np.sqrt((rho - radii[0]) ** 2 + coordinates[:, 2] ** 2) - radii[1]) ** 2


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ManifoldDistance(evaluate.Metric):
    """Distance-to-manifold statistics and circle angle coverage of (n, d) samples."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(
        self,
        predictions,
        isometry=None,
        manifold: str = "sphere",
        radius: float = 1.0,
        radii=None,
        thresholds: tuple[float, ...] = (0.01, 0.03),
        num_angle_bins: int = 16,
    ) -> dict[str, float]:
        points = np.asarray(predictions, dtype=np.float64)
        if points.ndim != 2 or len(points) == 0:
            raise ValueError(f"`predictions` must be a non-empty (n, d) array of samples, got shape {points.shape}")
        if isometry is None:
            raise ValueError("`isometry` is required: the (d, m) embedding matrix of the manifold (manifold.isometry)")
        isometry = np.asarray(isometry, dtype=np.float64)
        if isometry.ndim != 2 or isometry.shape[0] != points.shape[1]:
            raise ValueError(f"`isometry` must have shape ({points.shape[1]}, m), got {isometry.shape}")
        if not np.allclose(isometry.T @ isometry, np.eye(isometry.shape[1]), atol=1e-6):
            raise ValueError("`isometry` must have orthonormal columns (Q^T Q = I)")
        if manifold not in MANIFOLDS:
            raise ValueError(f"`manifold` must be one of {MANIFOLDS}, got {manifold!r}")
        expected_dim = {"flat_torus": 4, "torus3d": 3}.get(manifold)
        if expected_dim is not None and isometry.shape[1] != expected_dim:
            raise ValueError(f"`isometry` of a {manifold} must have {expected_dim} columns, got {isometry.shape[1]}")
        if manifold == "torus3d" and radii is None:
            raise ValueError("`radii` (major R, minor r) is required for manifold='torus3d'")
        radii = tuple(float(value) for value in (radii if radii is not None else (1.0, 1.0)))
        if len(radii) != 2 or min(radii) <= 0 or radius <= 0:
            raise ValueError(f"`radius` and `radii` must be positive (two radii), got {radius} and {radii}")
        if num_angle_bins < 2:
            raise ValueError(f"`num_angle_bins` must be >= 2, got {num_angle_bins}")

        distances = np.sqrt(np.clip(squared_distance(points, isometry, manifold, radius, radii), 0, None))
        results = {
            "distance_median": float(np.median(distances)),
            "distance_mean": float(distances.mean()),
            "distance_p95": float(np.quantile(distances, 0.95)),
            "distance_max": float(distances.max()),
        }
        results.update({f"within_{float(t):g}": float((distances <= t).mean()) for t in thresholds})
        if manifold == "sphere" and isometry.shape[1] == 2:  # a circle: are the angles uniform (the weights)?
            coordinates = points @ isometry
            angles = np.arctan2(coordinates[:, 1], coordinates[:, 0])  # [-pi, pi]
            bins = np.clip(np.floor((angles + np.pi) / (2 * np.pi) * num_angle_bins).astype(np.int64), 0, None)
            counts = np.bincount(np.minimum(bins, num_angle_bins - 1), minlength=num_angle_bins)
            expected = len(points) / num_angle_bins
            results["angle_chi2"] = float(((counts - expected) ** 2 / expected).sum())
            results["angle_chi2_dof"] = float(num_angle_bins - 1)
            results["angle_coverage"] = float((counts > 0).mean())
        return results
