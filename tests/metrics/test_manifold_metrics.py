"""The `manifold_distance` and `memorization` metric modules: against the torch diagnostics of
`hfvision.models.score_sde` (an independent implementation), hand-worked cases, and bad inputs."""

import math

import pytest
import torch

from hfvision.metrics import available_metrics, load_metric
from hfvision.models.score_sde import Circle, FlatTorus, Sphere, Torus3D, distance_to_manifold_stats, memorization_stats


@pytest.fixture(scope="module")
def manifold_distance():
    return load_metric("manifold_distance")


@pytest.fixture(scope="module")
def memorization():
    return load_metric("memorization")


def test_both_are_shipped():
    assert {"manifold_distance", "memorization"} <= set(available_metrics())


@pytest.mark.parametrize(
    ("manifold", "name", "kwargs"),
    [
        (Sphere(2, 10, radius=1.5, seed=1), "sphere", {"radius": 1.5}),
        (FlatTorus(10, radii=(1.0, 0.5), seed=2), "flat_torus", {"radii": (1.0, 0.5)}),
        (Torus3D(10, seed=3), "torus3d", None),
    ],
)
def test_distances_match_the_diagnostics(manifold_distance, manifold, name, kwargs):
    generator = torch.Generator().manual_seed(0)
    samples = manifold.sample(301, generator) + 0.02 * torch.randn(301, 10, generator=generator)  # odd: one median
    if kwargs is None:
        kwargs = {"radii": (manifold.major_radius, manifold.minor_radius)}
    result = manifold_distance.compute(
        predictions=samples.numpy(), isometry=manifold.isometry.numpy(), manifold=name, thresholds=(0.03, 0.1), **kwargs
    )
    expected = distance_to_manifold_stats(samples, manifold, thresholds=(0.03, 0.1))
    for key in ("median", "mean", "p95", "max"):
        assert result[f"distance_{key}"] == pytest.approx(expected[key], rel=1e-5)
    assert result["within_0.03"] == pytest.approx(expected["within_0.03"])
    assert 0 < result["within_0.03"] < result["within_0.1"] <= 1  # the noise puts some, not all, within 0.03
    assert "angle_chi2" not in result  # angles only for a circle


def test_circle_angles_uniform_versus_concentrated(manifold_distance):
    circle = Circle(10, seed=4)
    generator = torch.Generator().manual_seed(1)
    uniform = circle.sample(4000, generator)
    result = manifold_distance.compute(predictions=uniform.numpy(), isometry=circle.isometry.numpy())
    assert result["distance_max"] < 1e-5 and result["within_0.01"] == 1.0
    assert result["angle_coverage"] == 1.0 and result["angle_chi2"] < 40  # chi2 with 15 dof: 99.9% quantile 37.7
    # on the circle, but only on a quarter of it: the support test passes, the weights test fails
    angles = torch.rand(4000, generator=generator, dtype=torch.float64) * math.pi / 2
    quarter = circle.embed(torch.stack([angles.cos(), angles.sin()], -1))
    result = manifold_distance.compute(predictions=quarter.numpy(), isometry=circle.isometry.numpy())
    assert result["within_0.01"] == 1.0
    assert result["angle_coverage"] == 0.25 and result["angle_chi2"] > 1000


def test_memorization_matches_the_diagnostics_and_chance(memorization):
    circle = Circle(10, seed=5)
    generator = torch.Generator().manual_seed(2)
    training = circle.sample(16, generator)
    copies = training[torch.randint(0, 16, (200,), generator=generator)] + 1e-3 * torch.randn(
        200, 10, generator=generator
    )
    fresh = circle.sample(2000, generator)
    result = memorization.compute(
        predictions=copies.numpy(), training_points=training.numpy(), delta=0.02, fresh_points=fresh.numpy()
    )
    expected = memorization_stats(copies, training, 0.02, fresh)
    assert result["fraction_within_delta"] == 1.0 == expected.fraction_within_delta
    assert result["fraction_ratio_below_third"] == pytest.approx(expected.fraction_ratio_below_third)
    assert result["fraction_ratio_below_third"] > 0.8  # a few training points lie close together
    assert result["chance_fraction_within_delta"] == pytest.approx(expected.chance_fraction_within_delta)
    # 16 arcs of length 0.04 on a circle of length 2 pi: chance about 0.1
    assert 0.05 < result["chance_fraction_within_delta"] < 0.16
    assert result["memorization_excess"] > 0.8
    novel = memorization.compute(
        predictions=circle.sample(2000, generator).numpy(), training_points=training.numpy(), fresh_points=fresh.numpy()
    )
    assert abs(novel["memorization_excess"]) < 0.04  # fresh points of the law score chance
    # a fresh point's nearest / second-nearest ratio is < 1/3 about a third of the time here (scale-free: for uniform
    # points on a circle it does not depend on N)
    assert abs(novel["fraction_ratio_below_third"] - novel["chance_fraction_ratio_below_third"]) < 0.05
    assert 0.25 < novel["chance_fraction_ratio_below_third"] < 0.42
    assert result["nearest_distance_median"] < 0.1 * result["chance_nearest_distance_median"]


def test_bad_inputs_name_the_argument(manifold_distance, memorization):
    circle = Circle(3)
    with pytest.raises(ValueError, match="isometry"):
        manifold_distance.compute(predictions=[[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="isometry"):
        manifold_distance.compute(predictions=[[1.0, 0.0, 0.0]], isometry=[[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="manifold"):
        manifold_distance.compute(predictions=[[1.0, 0.0, 0.0]], isometry=circle.isometry.numpy(), manifold="cube")
    with pytest.raises(ValueError, match="training_points"):
        memorization.compute(predictions=[[0.0, 1.0]])
    with pytest.raises(ValueError, match="training_points"):
        memorization.compute(predictions=[[0.0, 1.0]], training_points=[[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="delta"):
        memorization.compute(predictions=[[0.0, 1.0]], training_points=[[0.0, 1.0], [1.0, 1.0]], delta=0.0)
