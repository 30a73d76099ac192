"""Measurements of the statements of "Score-Based Generative Models Detect Manifolds" (Pidstrigach, arXiv 2206.01018).

The paper is theoretical; each function here turns one of its statements (digest B2) into a number:

- `distance_to_manifold_stats`: B2.2 / B2.5, finite-energy score error -> samples on M (within O(sigma_min));
- `memorization_stats`: B2.4, a score close to the empirical score reproduces training points;
- `score_error_energy`: B2.2 / B2.4, the Girsanov energy (1/2) int E||s_theta - s_ref||^2 dsigma^2 along the path;
- `score_singular_values`, `estimate_intrinsic_dimension`: B2.3, near M the score points along the normal space
  (rank d - k), Stanczuk et al. (arXiv 2212.12611);
- `flipd`: the same dimension from the score's divergence, Kamkari et al. (arXiv 2406.03537), VE form;
- `angle_histogram`: novelty / coverage on a circle (uniform angles = weights right, B2.1).

Models are called in the VE form `model(x, sigma=)` (a Score-SDE model or any callable returning a score), batched:
one call per diagnostic, no loop over points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .manifolds import EmbeddedManifold

ScoreFunction = Callable[..., object]


def _score(model: ScoreFunction, sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    output = model(sample, sigma=sigma)
    return output.score if hasattr(output, "score") else output


def pairwise_distances(queries: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Euclidean distances `(B, N)` between `queries` `(B, d)` and `points` `(N, d)`, in float64 (exact to ~1e-7 for
    unit-scale data, unlike float32 `cdist`, which matters for "within 1e-3" counts)."""
    queries, points = queries.flatten(1).to(torch.float64), points.flatten(1).to(torch.float64)
    squared = queries.pow(2).sum(-1, keepdim=True) - 2 * queries @ points.T + points.pow(2).sum(-1)
    return squared.clamp_min(0).sqrt()


def distance_to_manifold_stats(
    samples: torch.Tensor, manifold: EmbeddedManifold, thresholds: tuple[float, ...] = (1e-2, 3e-2)
) -> dict[str, float]:
    """Distance of samples to M (digest B2.2 with B2.5: an SGM whose score error has finite energy outputs points of M;
    a sampler stopped at sigma_min lands within O(sigma_min sqrt(d - k)) of it).

    Args:
        samples (`torch.Tensor` of shape `(n, d)`): generated points.
        manifold: the data manifold.
        thresholds: distances whose "fraction within" is reported.

    Returns:
        `median`, `mean`, `p95`, `max` of the distances and `within_<t>` fractions.
    """
    distances = manifold.distance(samples.to(torch.float64))
    stats = {
        "median": float(distances.median()),
        "mean": float(distances.mean()),
        "p95": float(torch.quantile(distances, 0.95)),
        "max": float(distances.max()),
    }
    stats.update({f"within_{threshold:g}": float((distances <= threshold).double().mean()) for threshold in thresholds})
    return stats


@dataclass
class MemorizationStats:
    """What `memorization_stats` measures.

    Args:
        nearest_distance (`(n,)`): distance of each sample to its nearest training point.
        distance_ratio (`(n,)`): nearest / second-nearest training distance.
        fraction_within_delta: fraction of samples within `delta` of a training point.
        fraction_ratio_below_third: fraction with `distance_ratio` < 1/3 (the Yoon et al. 2023 style rule).
        chance_fraction_within_delta: the same fraction for fresh points of the data law (None without them): what
            an SGM that generalises perfectly scores by chance.
    """

    nearest_distance: torch.Tensor
    distance_ratio: torch.Tensor
    fraction_within_delta: float
    fraction_ratio_below_third: float
    chance_fraction_within_delta: float | None


def memorization_stats(
    samples: torch.Tensor, training_points: torch.Tensor, delta: float, fresh_points: torch.Tensor | None = None
) -> MemorizationStats:
    """Memorisation of a finite training set (digest B2.4: a score within finite energy of the empirical score
    reproduces only training points; exact DSM minimisation on N points gives that score).

    Args:
        samples (`torch.Tensor` of shape `(n, d)`): generated points.
        training_points (`torch.Tensor` of shape `(N, d)`, N >= 2): the training set.
        delta: distance under which a sample counts as a copy.
        fresh_points (`torch.Tensor` of shape `(m, d)`, *optional*): new draws of the data law (e.g.
            `manifold.sample(m)`), for the chance level.
    """
    if training_points.shape[0] < 2:
        raise ValueError("`training_points` needs at least 2 points (nearest and second-nearest distances).")
    two_nearest = pairwise_distances(samples, training_points).topk(2, dim=-1, largest=False).values  # (n, 2)
    nearest, ratio = two_nearest[:, 0], two_nearest[:, 0] / two_nearest[:, 1].clamp_min(1e-300)
    chance = None
    if fresh_points is not None:
        chance = float((pairwise_distances(fresh_points, training_points).min(-1).values <= delta).double().mean())
    return MemorizationStats(
        nearest_distance=nearest,
        distance_ratio=ratio,
        fraction_within_delta=float((nearest <= delta).double().mean()),
        fraction_ratio_below_third=float((ratio < 1 / 3).double().mean()),
        chance_fraction_within_delta=chance,
    )


@dataclass
class ScoreErrorEnergy:
    """What `score_error_energy` measures (noise levels in decreasing order).

    Args:
        sigmas (`(L,)`): the noise levels sigma_0 > ... > sigma_{L-1}.
        mean_squared_error (`(L,)`): E_{x ~ p_sigma} ||s_model(x, sigma) - s_ref(x, sigma)||^2 at each level.
        energy (`(L,)`): the path energy (1/2) sum_{i < j} mse_i (sigma_i^2 - sigma_{i+1}^2) from sigma_0 down to each
            sigma_j (a left Riemann sum of (1/2) int E||e||^2 dsigma^2; energy[0] = 0).
    """

    sigmas: torch.Tensor
    mean_squared_error: torch.Tensor
    energy: torch.Tensor


@torch.no_grad()
def score_error_energy(
    model: ScoreFunction,
    reference: ScoreFunction,
    data: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator | None = None,
) -> ScoreErrorEnergy:
    """The Girsanov energy of the score error along the VE reverse path (digest B2.2: finite energy -> same path law
    and output law; B2.4: against the empirical score, a memorising model stays bounded as sigma_min -> 0 and a
    generalising one grows, about like k ln(1 / sigma_min)). For the VE SDE g^2 dt = dsigma^2, so the KL of the path
    laws is (1/2) int E||s_model - s_ref||^2 dsigma^2.

    Args:
        model: the score under test, called as `model(x, sigma=)`.
        reference: the reference score (e.g. an `EmpiricalScoreModel` of the training set, or of a dense sample for
            the true score).
        data (`torch.Tensor` of shape `(n, *shape)`): draws x_0 of the data law; x = x_0 + sigma z at every level.
        sigmas (`torch.Tensor` of shape `(L,)`): noise levels (sorted here in decreasing order).
        generator: source of z.
    """
    sigmas = sigmas.to(device=data.device, dtype=torch.float64).sort(descending=True).values
    num_levels, num_points = sigmas.shape[0], data.shape[0]
    clean = data.unsqueeze(0).expand(num_levels, *data.shape).reshape(num_levels * num_points, *data.shape[1:])
    level = sigmas.repeat_interleave(num_points).to(data.dtype)  # (L n,)
    noise = torch.randn(clean.shape, generator=generator, dtype=data.dtype).to(data.device)
    noisy = clean + level.view(-1, *([1] * (data.ndim - 1))) * noise
    error = _score(model, noisy, level) - _score(reference, noisy, level)  # (L n, *shape)
    mse = error.to(torch.float64).pow(2).flatten(1).sum(-1).view(num_levels, num_points).mean(-1)  # (L,)
    increments = 0.5 * mse[:-1] * (sigmas[:-1] ** 2 - sigmas[1:] ** 2)
    energy = torch.cat([torch.zeros(1, dtype=torch.float64, device=data.device), increments.cumsum(0)])
    return ScoreErrorEnergy(sigmas=sigmas, mean_squared_error=mse, energy=energy)


@torch.no_grad()
def score_singular_values(
    model: ScoreFunction,
    points: torch.Tensor,
    sigma: float,
    num_perturbations: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Normalised singular values of the stacked scores at x_0 + sigma z_j, j = 1..K (Stanczuk et al.): near M the score
    is about -(x - proj_M x) / sigma^2 (digest B2.3), so the stack has d - k large singular values (the normal space)
    and k small ones.

    Args:
        model: called as `model(x, sigma=)`.
        points (`torch.Tensor` of shape `(P, d)`): points x_0 on (or near) M.
        sigma: a small noise level (0.01-0.1 for unit-scale manifolds).
        num_perturbations: K >= d (default 10 d: the d - k normal singular values of a K x (d - k) Gaussian stack
            spread less as K grows).
        generator: source of z.

    Returns:
        `(P, d)` singular values in decreasing order, each row divided by its largest.
    """
    num_points, dim = points.shape
    num_perturbations = num_perturbations or 10 * dim
    if num_perturbations < dim:
        raise ValueError(f"`num_perturbations` must be >= the dimension {dim}, got {num_perturbations}.")
    noise = torch.randn(num_points, num_perturbations, dim, generator=generator, dtype=points.dtype).to(points.device)
    noisy = (points[:, None] + sigma * noise).reshape(-1, dim)  # (P K, d)
    scores = _score(model, noisy, torch.full((noisy.shape[0],), sigma, dtype=points.dtype, device=points.device))
    singular_values = torch.linalg.svdvals(scores.reshape(num_points, num_perturbations, dim).to(torch.float64))
    return singular_values / singular_values[:, :1]


def estimate_intrinsic_dimension(
    model: ScoreFunction,
    points: torch.Tensor,
    sigma: float,
    num_perturbations: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Intrinsic dimension k at each point from the largest gap of `score_singular_values` (Stanczuk et al.,
    `ID-diff`): with s_1 >= ... >= s_d, the d - k normal directions are those before the largest gap s_i - s_{i+1}.

    Returns:
        `(P,)` integer estimates of k.
    """
    singular_values = score_singular_values(model, points, sigma, num_perturbations, generator)
    gaps = singular_values[:, :-1] - singular_values[:, 1:]  # (P, d - 1)
    normal_dimension = gaps.argmax(dim=-1) + 1
    return points.shape[1] - normal_dimension


def flipd(
    model: ScoreFunction,
    points: torch.Tensor,
    sigma: float,
    hutchinson_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """FLIPD local intrinsic dimension (Kamkari et al., VE form): LID(x) ~ d + sigma^2 (tr grad_x s(x, sigma) +
    ||s(x, sigma)||^2). On a flat k-manifold, s = 0 and grad s = -P_normal / sigma^2 at x on M, giving k (digest B2.3:
    the score's normal part is what detects M).

    Args:
        model: called as `model(x, sigma=)`; differentiable in x.
        points (`torch.Tensor` of shape `(P, d)`): where to estimate.
        sigma: a small noise level.
        hutchinson_samples: estimate the trace with this many Rademacher probes (large d); `None`: exact, d
            backward passes.
        generator: source of the probes.

    Returns:
        `(P,)` estimates (real numbers).
    """
    dim = points.shape[1]
    with torch.enable_grad():
        sample = points.detach().clone().requires_grad_(True)
        level = torch.full((points.shape[0],), sigma, dtype=points.dtype, device=points.device)
        score = _score(model, sample, level)  # (P, d)
        if hutchinson_samples is None:
            probes = torch.eye(dim, dtype=points.dtype, device=points.device)[:, None].expand(dim, *points.shape)
        else:
            signs = torch.randint(0, 2, (hutchinson_samples, *points.shape), generator=generator).to(points.device)
            probes = (2 * signs - 1).to(points.dtype)
        trace = torch.zeros(points.shape[0], dtype=torch.float64, device=points.device)
        for probe in probes:  # one vector-Jacobian product per coordinate (or probe), batched over points
            (gradient,) = torch.autograd.grad(score, sample, grad_outputs=probe, retain_graph=True)
            trace = trace + (gradient * probe).sum(-1).to(torch.float64)
        if hutchinson_samples is not None:
            trace = trace / hutchinson_samples
    squared_norm = score.detach().to(torch.float64).pow(2).sum(-1)
    return dim + sigma**2 * (trace + squared_norm)


def angle_histogram(angles: torch.Tensor, num_bins: int = 16) -> tuple[torch.Tensor, float]:
    """Coverage of a circle (digest B2.1: the horizon and the score error change the output's weights, not its
    support): counts of `angles` `(n,)` in `num_bins` equal arcs, and the chi-square statistic against uniform
    (about `num_bins - 1` for uniform angles)."""
    bins = ((angles + math.pi) / (2 * math.pi) * num_bins).floor().long().clamp(0, num_bins - 1)
    counts = torch.bincount(bins, minlength=num_bins)
    expected = angles.numel() / num_bins
    return counts, float(((counts - expected) ** 2 / expected).sum())


__all__ = [
    "MemorizationStats",
    "ScoreErrorEnergy",
    "angle_histogram",
    "distance_to_manifold_stats",
    "estimate_intrinsic_dimension",
    "flipd",
    "memorization_stats",
    "pairwise_distances",
    "score_error_energy",
    "score_singular_values",
]
