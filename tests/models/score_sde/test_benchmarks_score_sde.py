"""The Score-SDE benchmarks run: the speed comparison against diffusers' loop (tiny sizes), and a reduced version of
the manifold run that checks the direction of the paper's four statements (slow)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_speed_benchmark_times_both_samplers_and_prints_the_ratio(capsys):
    pytest.importorskip("diffusers")
    benchmark = load_benchmark("score_sde_speed")
    result = benchmark.main(["--preset", "score-sde-tiny", "--batch-size", "8", "--steps", "10", "--repeats", "1"])
    assert result["ours_ms"] > 0 and result["diffusers_ms"] > 0
    assert result["ratio"] == pytest.approx(result["ours_ms"] / result["diffusers_ms"])
    assert "time ratio ours / diffusers:" in capsys.readouterr().out


@pytest.mark.slow
def test_reduced_manifold_run_shows_the_four_statements(tmp_path):
    """`benchmarks/score_sde_manifolds.py --quick` (a few minutes on 2 cores): the trained model is nearer the circle
    than its bounded-drift copies; the 16-point model copies more with training and more than the 4096-point one; the
    energy against the empirical score grows as sigma_min -> 0 for the generalising model, not for the memorising
    one; every horizon keeps the support while the weights approach the data's."""
    results = load_benchmark("score_sde_manifolds").main(["--quick", "--output_dir", str(tmp_path)])
    support = results["support"]
    trained = support["trained (EDM, exploding drift)"]
    assert all(
        trained["distance_median"] < row["distance_median"] for name, row in support.items() if "|drift|" in name
    )
    memorization = results["memorization"]
    steps = results["budget"]["memorization_steps"]
    few_late, few_early = memorization[f"N=16, {steps[-1]} steps"], memorization[f"N=16, {steps[0]} steps"]
    many_late = memorization[f"N=4096, {steps[-1]} steps"]
    assert few_late["fraction_ratio_below_third"] > few_early["fraction_ratio_below_third"]
    assert few_late["nearest_distance_relative_to_chance"] < many_late["nearest_distance_relative_to_chance"]
    energy = results["energy"]
    memorising = energy["empirical score + bounded error (memorising)"]
    generalising = energy["trained on fresh points (generalising)"]
    assert generalising["energy_to_sigma_min_0.0001"] > 2 * generalising["energy_to_sigma_min_0.01"]
    assert memorising["energy_to_sigma_min_0.0001"] < 1.1 * memorising["energy_to_sigma_min_0.01"]
    horizon = results["horizon"]
    assert all(row["within_0.03"] > 0.9 for row in horizon.values())
    assert horizon["T=3"]["angle_tv_to_data"] < horizon["T=0.1"]["angle_tv_to_data"]
    assert (tmp_path / "support.png").is_file() and (tmp_path / "energy.png").is_file()
