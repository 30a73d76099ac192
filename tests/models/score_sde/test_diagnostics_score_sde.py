"""Manifolds and diagnostics: closed-form distances, intrinsic dimension from scores (SVD and FLIPD), memorisation,
and the score-error energy of digest B2.2 / B2.4."""

from __future__ import annotations

import math

import pytest
import torch

from hfvision.models.score_sde import (
    Circle,
    EmpiricalScoreModel,
    FlatTorus,
    Sphere,
    Torus3D,
    angle_histogram,
    distance_to_manifold_stats,
    estimate_intrinsic_dimension,
    flipd,
    memorization_stats,
    random_isometry,
    score_error_energy,
    score_singular_values,
)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


MANIFOLDS = {
    "circle": (lambda: Circle(10), 1),
    "2-sphere": (lambda: Sphere(2, 10), 2),
    "flat-torus": (lambda: FlatTorus(10), 2),
    "torus-3d": (lambda: Torus3D(10), 2),
}


@pytest.mark.parametrize("name", sorted(MANIFOLDS))
def test_manifold_samples_lie_on_it_and_distances_are_exact(name):
    factory, dimension = MANIFOLDS[name]
    manifold = factory()
    assert manifold.intrinsic_dim == dimension and manifold.ambient_dim == 10
    points = manifold.sample(500, seeded(0), dtype=torch.float64)
    assert manifold.distance(points).max() < 1e-12
    # moving off M along a direction normal to the embedding space changes the distance by exactly that much
    normal = torch.linalg.qr(
        torch.cat([manifold.isometry, torch.randn(10, 1, generator=seeded(1), dtype=torch.float64)], 1)
    )[0][:, -1]
    torch.testing.assert_close(manifold.distance(points + 0.3 * normal), torch.full((500,), 0.3, dtype=torch.float64))


def test_in_space_distances():
    circle = Circle(2, radius=2.0)
    points = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, -1.0]], dtype=torch.float64) @ circle.isometry.T
    torch.testing.assert_close(circle.distance(points), torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64))
    torus = Torus3D(3, major_radius=1.0, minor_radius=0.25)
    centre_line = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64) @ torus.isometry.T
    torch.testing.assert_close(torus.distance(centre_line), torch.tensor([0.25, 0.75], dtype=torch.float64))
    q = random_isometry(6, 3, seed=4)
    torch.testing.assert_close(q.T @ q, torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="ambient_dim"):
        random_isometry(2, 3)


def test_uniform_sampling():
    """Angles of circle samples are uniform (chi-square ~ bins - 1); the 3-D torus is area-uniform: its tube angle has
    density (R + r cos theta) / (2 pi R), so the mean of cos theta is r / (2 R)."""
    circle = Circle(10)
    counts, chi_square = angle_histogram(circle.angles(circle.sample(8000, seeded(0))), 16)
    assert counts.sum() == 8000 and chi_square < 40
    torus = Torus3D(3, major_radius=1.0, minor_radius=0.5, seed=0)
    coordinates = torus.sample(40000, seeded(1), dtype=torch.float64) @ torus.isometry
    cos_tube = (coordinates[:, :2].norm(dim=-1) - 1.0) / 0.5
    assert abs(float(cos_tube.mean()) - 0.25) < 0.01


@pytest.fixture(scope="module")
def dense_scores() -> dict[str, tuple[EmpiricalScoreModel, object, int]]:
    """The exact score of a dense sample of each manifold (4000 circle points, 20000 for the 2-manifolds): a stand-in
    for the true data score at sigma >> the sample spacing."""
    models = {}
    for name, (factory, dimension) in MANIFOLDS.items():
        manifold = factory()
        points = manifold.sample(4000 if dimension == 1 else 20000, seeded(0))
        models[name] = (EmpiricalScoreModel.from_training_points(points), manifold, dimension)
    return models


@pytest.mark.parametrize(("name", "sigma"), [("circle", 0.01), ("circle", 0.1), ("2-sphere", 0.1), ("flat-torus", 0.1)])
def test_score_svd_finds_the_intrinsic_dimension(dense_scores, name, sigma):
    """Digest B2.3 / Stanczuk et al.: near M the score spans the normal space; the largest singular-value gap of the
    stacked scores gives k = 1 for a circle and 2 for a 2-sphere and a flat torus, all in R^10, at every test point."""
    model, manifold, dimension = dense_scores[name]
    points = manifold.sample(8, seeded(1))
    estimates = estimate_intrinsic_dimension(model, points, sigma, generator=seeded(2))
    assert estimates.tolist() == [dimension] * 8, estimates
    singular_values = score_singular_values(model, points, sigma, generator=seeded(2))
    assert singular_values.shape == (8, 10)
    assert (singular_values[:, 10 - dimension - 1] > 3 * singular_values[:, 10 - dimension]).all()


def test_score_svd_of_the_torus_3d(dense_scores):
    model, manifold, _ = dense_scores["torus-3d"]
    points = manifold.sample(8, seeded(1))
    assert estimate_intrinsic_dimension(model, points, 0.1, generator=seeded(2)).tolist() == [2] * 8


@pytest.mark.parametrize("name", ["circle", "2-sphere"])
def test_flipd_estimates_the_intrinsic_dimension(dense_scores, name):
    """FLIPD d + sigma^2 (tr grad s + ||s||^2): median over 16 points within 0.25 of k (exact trace and Hutchinson)."""
    model, manifold, dimension = dense_scores[name]
    points = manifold.sample(16, seeded(3))
    estimates = flipd(model, points, 0.05)
    assert abs(float(estimates.median()) - dimension) < 0.25, estimates
    hutchinson = flipd(model, points, 0.05, hutchinson_samples=64, generator=seeded(4))
    assert abs(float(hutchinson.median()) - dimension) < 0.5, hutchinson


def test_memorization_stats_against_the_chance_level():
    circle = Circle(10)
    training = circle.sample(16, seeded(0))
    copies = training.repeat(10, 1) + 1e-4 * torch.randn(160, 10, generator=seeded(1))
    fresh = circle.sample(2000, seeded(2))
    copied = memorization_stats(copies, training, delta=0.02, fresh_points=fresh)
    novel = memorization_stats(circle.sample(2000, seeded(3)), training, delta=0.02, fresh_points=fresh)
    assert copied.fraction_within_delta == 1.0 and copied.fraction_ratio_below_third == 1.0
    # chance level of a fresh point within 0.02 of one of 16 points on a unit circle: about 16 * 0.04 / (2 pi) = 0.10
    assert abs(novel.chance_fraction_within_delta - 16 * 0.04 / (2 * math.pi)) < 0.03
    assert abs(novel.fraction_within_delta - novel.chance_fraction_within_delta) < 0.03
    assert novel.nearest_distance.shape == (2000,)
    stats = distance_to_manifold_stats(copies, circle)
    assert stats["max"] < 1e-3 and stats["within_0.01"] == 1.0


class WithBoundedError:
    """A score with a bounded error: the reference plus a constant vector."""

    def __init__(self, model, offset: torch.Tensor) -> None:
        self.model, self.offset = model, offset

    def __call__(self, sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.model(sample, sigma=sigma).score + self.offset


def test_score_error_energy_separates_memorising_from_generalising():
    """Digest B2.4: against the empirical score of 16 training points, a model at finite energy (bounded error)
    keeps a bounded path energy as sigma_min -> 0, while the score of the full circle (a generalising model) has an
    energy that keeps growing, about like ln(1 / sigma_min) per decade."""
    circle = Circle(10)
    training = circle.sample(16, seeded(0))
    empirical = EmpiricalScoreModel.from_training_points(training)
    generalising = EmpiricalScoreModel.from_training_points(circle.sample(4000, seeded(1)))
    memorising = WithBoundedError(empirical, 0.1 * torch.ones(10))
    sigmas = torch.logspace(math.log10(3.0), -4, 29)  # 4 points per decade
    data = training.repeat(16, 1)
    zero = score_error_energy(empirical, empirical, data, sigmas, generator=seeded(2))
    assert torch.equal(zero.energy, torch.zeros(29, dtype=torch.float64))
    bounded = score_error_energy(memorising, empirical, data, sigmas, generator=seeded(2))
    growing = score_error_energy(generalising, empirical, data, sigmas, generator=seeded(2))
    at = {sigma: int((sigmas - sigma).abs().argmin()) for sigma in (1e-2, 1e-3, 1e-4)}
    # bounded: the energy below sigma = 1e-2 adds < 1 % (0.5 * ||0.1||^2 * sigma^2 -> 0)
    assert bounded.energy[at[1e-4]] - bounded.energy[at[1e-2]] < 0.01 * bounded.energy[at[1e-2]]
    # growing: each decade from 1e-2 to 1e-4 adds a comparable amount (logarithmic growth)
    first, second = (
        growing.energy[at[1e-3]] - growing.energy[at[1e-2]],
        growing.energy[at[1e-4]] - growing.energy[at[1e-3]],
    )
    assert first > 0.1 and second > 0.5 * first, (first, second)
    assert growing.mean_squared_error[-1] > 1e4 * growing.mean_squared_error[0]
