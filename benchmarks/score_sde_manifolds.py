"""The four statements of "Score-Based Generative Models Detect Manifolds" (Pidstrigach, arXiv 2206.01018), measured
on a circle in R^10 (digest B2; the paper has no experiments, so these runs illustrate its theorems).

1. **Support.** A score model trained on fresh samples of the unit circle (EDM preconditioning, so its drift can grow
   like 1 / sigma) puts its samples within 3e-2 of the circle with uniform angles; the same network with its score
   clipped to a bounded norm (a finite-energy drift, the paper's negative case) does not.
2. **Memorisation.** A model trained on 16 points drifts toward copying them as training lengthens (the DSM minimiser
   on a finite set is the empirical score), a model trained on 4096 points does not. Measured along the circle
   (samples projected on it first) and scale-free against fresh points of the circle: the fraction of samples whose
   nearest / second-nearest training distance ratio is < 1/3, and the median nearest-training distance relative to
   that of fresh points (1: like fresh draws; -> 0: copies); plus the raw fraction within 0.02 of a training point.
3. **Error energy.** Against the empirical score of the 16 points, the Girsanov energy (1/2) int E||s - s_N||^2 dsigma^2
   down to sigma_min stays bounded for a memorising model (the empirical score plus a bounded error) and grows as
   sigma_min -> 0 for the generalising one (trained on fresh points), about like k ln(1 / sigma_min).
4. **Horizon.** The paper's OU SDE started from N(0, I) at horizons T = 0.1 ... 3 with the exact score of a
   non-uniform law on the circle (the empirical score of 4096 points with angles concentrated on one side): the
   output stays on the circle for every T (support), while the angle histogram's distance to the data's shrinks
   with T (weights).

    OMP_NUM_THREADS=1 python benchmarks/score_sde_manifolds.py --output_dir runs/score_sde_manifolds
    python benchmarks/score_sde_manifolds.py --quick     # reduced sizes (the slow test), about a minute

Writes `results.json`, `support.png`, `memorization.png`, `horizon.png` and `energy.png` to `--output_dir` and prints
the markdown tables of the README.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from hfvision.metrics import load_metric
from hfvision.models.score_sde import (
    Circle,
    EmpiricalScoreModel,
    ScoreSdeConfig,
    ScoreSdeEulerMaruyamaScheduler,
    ScoreSdeModel,
    ScoreSdeVeAncestralScheduler,
    plot_samples_on_manifold,
    sample_score_sde,
    score_error_energy,
)


@dataclass
class Budget:
    """Sizes of one run (`--quick` shrinks them)."""

    fresh_steps: int = 6000
    memorization_steps: tuple[int, ...] = (500, 2000, 6000)
    num_samples: int = 2000
    sampling_steps: int = 1000
    horizon_samples: int = 1000
    horizon_steps: int = 1000
    energy_points: int = 512
    batch_size: int = 256


QUICK = Budget(
    fresh_steps=1500, memorization_steps=(300, 1500), num_samples=500, sampling_steps=300, horizon_samples=300,
    horizon_steps=300, energy_points=128,
)  # fmt: skip


class BoundedDrift:
    """A model's score with its norm clipped to `bound`: a drift of finite energy (digest B2.3, the negative case)."""

    def __init__(self, model: ScoreSdeModel, bound: float) -> None:
        self.model, self.bound = model, bound

    def __call__(self, sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        score = self.model(sample, sigma=sigma).score
        return score * (self.bound / score.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)


class PerturbedScore:
    """A score plus a bounded, smooth error e(x) = amplitude * sin(W x) (|e| <= amplitude sqrt(d)): finite energy
    relative to the score it perturbs (digest B2.2 / B2.4: a memorising model)."""

    def __init__(self, model: EmpiricalScoreModel, amplitude: float, dim: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.model, self.amplitude = model, amplitude
        self.weights = torch.randn(dim, dim, generator=generator, dtype=torch.float64)

    def __call__(self, sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        error = self.amplitude * torch.sin(sample.to(torch.float64) @ self.weights).to(sample.dtype)
        return self.model(sample, sigma=sigma).score + error


def train(
    points: torch.Tensor | None,
    circle: Circle,
    steps: int,
    snapshots: tuple[int, ...],
    budget: Budget,
    seed: int,
    description: str,
) -> dict[int, dict[str, torch.Tensor]]:
    """AdamW (lr 1e-3, 100 warmup steps, then a cosine decay to 0 at `steps` as in `train_score_sde.py`; clip 1) on
    the DSM loss of the `score-sde-circle` preset, batches of fresh circle points (`points=None`) or drawn with
    replacement from `points`; returns the weights at each step of `snapshots` (snapshots before `steps` are taken
    mid-decay)."""
    torch.manual_seed(seed)
    model = ScoreSdeModel(ScoreSdeConfig.from_preset("score-sde-circle"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 100) * 0.5 * (1.0 + math.cos(math.pi * step / steps))
    )
    generator = torch.Generator().manual_seed(seed + 1)
    states = {}
    for step in tqdm(range(1, steps + 1), desc=description, mininterval=5):
        if points is None:
            batch = circle.sample(budget.batch_size, generator)
        else:
            batch = points[torch.randint(0, len(points), (budget.batch_size,), generator=generator)]
        loss = model(batch, return_loss=True, generator=generator).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step in snapshots:
            states[step] = {name: value.detach().clone() for name, value in model.state_dict().items()}
    return states


def load_state(state: dict[str, torch.Tensor]) -> ScoreSdeModel:
    model = ScoreSdeModel(ScoreSdeConfig.from_preset("score-sde-circle"))
    model.load_state_dict(state)
    return model.eval()


def sample(model, config: ScoreSdeConfig, num_samples: int, steps: int, seed: int = 0) -> torch.Tensor:
    """VE ancestral samples (final Tweedie step) of a model or score callable, float64."""
    scheduler = ScoreSdeVeAncestralScheduler.from_config(config, steps)
    generator = torch.Generator().manual_seed(seed)
    shape = tuple(config.data_shape)
    return sample_score_sde(model, scheduler, num_samples, shape=shape, generator=generator).samples.double()


def project_on_circle(samples: torch.Tensor, circle: Circle) -> torch.Tensor:
    """The nearest point of the circle to each sample `(n, d)`: Q R u / ||u|| with u = Q^T x."""
    coordinates, _ = circle.in_space(samples)
    return circle.embed(circle.radius * coordinates / coordinates.norm(dim=-1, keepdim=True).clamp_min(1e-12))


def distance_stats(samples: torch.Tensor, circle: Circle) -> dict[str, float]:
    return load_metric("manifold_distance").compute(
        predictions=samples.numpy(), isometry=circle.isometry.numpy(), thresholds=(0.01, 0.03)
    )


def statement_support(circle: Circle, budget: Budget, results: dict, output_dir: Path) -> ScoreSdeModel:
    config = ScoreSdeConfig.from_preset("score-sde-circle")
    state = train(None, circle, budget.fresh_steps, (budget.fresh_steps,), budget, 0, "1. fresh circle samples")
    model = load_state(state[budget.fresh_steps])
    rows, series, distances = {}, {}, {}
    candidates = {"trained (EDM, exploding drift)": model}
    for bound in (10.0, 100.0):
        candidates[f"same network, |drift| <= {bound:g}"] = BoundedDrift(model, bound)
    with torch.no_grad():
        for name, candidate in candidates.items():
            samples = sample(candidate, config, budget.num_samples, budget.sampling_steps)
            rows[name] = distance_stats(samples, circle)
            series[name], distances[name] = samples, circle.distance(samples)
    results["support"] = rows
    plot_samples_on_manifold(
        series, circle.isometry, distances, title="1. support: trained score vs bounded drift (circle in R^10)"
    ).save(output_dir / "support.png")
    return model


def statement_memorization(circle: Circle, budget: Budget, results: dict, output_dir: Path) -> dict[str, object]:
    config = ScoreSdeConfig.from_preset("score-sde-circle")
    metric = load_metric("memorization")
    fresh = circle.sample(4000, torch.Generator().manual_seed(99), dtype=torch.float64)
    rows, models = {}, {}
    steps = budget.memorization_steps
    for num_points in (16, 4096):
        points = circle.sample(num_points, torch.Generator().manual_seed(num_points))
        states = train(points, circle, steps[-1], steps, budget, 1, f"2. N = {num_points}")
        for step in steps:
            model = load_state(states[step])
            with torch.no_grad():
                samples = sample(model, config, budget.num_samples, budget.sampling_steps)
            raw = metric.compute(
                predictions=samples.numpy(), training_points=points.double().numpy(), delta=0.02,
                fresh_points=fresh.numpy(),
            )  # fmt: skip
            # along the circle: samples projected on it first, so that their distance off the circle (which a
            # generalising model has too) does not hide or fake copies; scale-free for any N
            along = metric.compute(
                predictions=project_on_circle(samples, circle).numpy(), training_points=points.double().numpy(),
                delta=0.02, fresh_points=fresh.numpy(),
            )  # fmt: skip
            rows[f"N={num_points}, {step} steps"] = {
                "fraction_within_delta": raw["fraction_within_delta"],
                "chance_fraction_within_delta": raw["chance_fraction_within_delta"],
                "fraction_ratio_below_third": along["fraction_ratio_below_third"],
                "chance_fraction_ratio_below_third": along["chance_fraction_ratio_below_third"],
                "nearest_distance_relative_to_chance": along["nearest_distance_median"]
                / along["chance_nearest_distance_median"],
                "distance_median": distance_stats(samples, circle)["distance_median"],
            }
        models[num_points] = (points, model, samples)
    results["memorization"] = rows
    points, _, samples = models[16]
    plot_samples_on_manifold(
        {f"samples, N = 16, {steps[-1]} steps": samples, "the 16 training points": points.double()},
        circle.isometry,
        {"samples": circle.distance(samples)},
        title="2. memorisation: samples of the 16-point model and its training points",
    ).save(output_dir / "memorization.png")
    return models


def statement_energy(
    circle: Circle, budget: Budget, results: dict, output_dir: Path, fresh_model: ScoreSdeModel, models: dict
) -> None:
    points, trained_16, _ = models[16]
    empirical = EmpiricalScoreModel.from_training_points(points, ScoreSdeConfig.from_preset("score-sde-circle"))
    sigmas = torch.logspace(math.log10(3.0), -4, 29, dtype=torch.float64)  # 3 ... 1e-4, 7 levels per decade
    draws = points[torch.randint(0, 16, (budget.energy_points,), generator=torch.Generator().manual_seed(5))]
    candidates = {
        "empirical score + bounded error (memorising)": PerturbedScore(empirical, 0.5, circle.ambient_dim),
        "trained on 16 points": trained_16,
        "trained on fresh points (generalising)": fresh_model,
    }
    report_at = (1e-1, 1e-2, 1e-3, 1e-4)
    rows, curves = {}, {}
    with torch.no_grad():
        for name, candidate in candidates.items():
            energy = score_error_energy(
                candidate, empirical, draws.float(), sigmas, generator=torch.Generator().manual_seed(6)
            )
            curves[name] = energy.energy.numpy()
            rows[name] = {
                f"energy_to_sigma_min_{level:g}": float(energy.energy[(energy.sigmas - level).abs().argmin()])
                for level in report_at
            }
    results["energy"] = rows
    results["energy_sigmas"] = sigmas.tolist()
    draw_curves(curves, sigmas.numpy(), output_dir / "energy.png")


def draw_curves(curves: dict[str, np.ndarray], sigmas: np.ndarray, path: Path) -> None:
    """Energy against log10 sigma_min (x, decreasing to the right) on a log10 energy axis, PIL only."""
    width, height, margin = 560, 360, 50
    image = Image.new("RGB", (width, height + 20 * len(curves) + 40), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 8), "3. score-error energy vs the empirical score of 16 points, down to sigma_min", fill="black")
    box = (margin, 30, width - 20, height)
    draw.rectangle(box, outline="black")
    x_low, x_high = math.log10(sigmas[0]), math.log10(sigmas[-1])
    values = np.concatenate([curve[1:] for curve in curves.values()])
    y_low, y_high = math.floor(np.log10(max(values.min(), 1e-6))), math.ceil(np.log10(values.max()))
    for tick in range(math.floor(x_high), math.ceil(x_low) + 1):
        x = box[0] + (tick - x_low) / (x_high - x_low) * (box[2] - box[0])
        draw.text((x - 10, box[3] + 4), f"1e{tick}", fill="black")
    for tick in range(y_low, y_high + 1):
        y = box[3] - (tick - y_low) / max(y_high - y_low, 1) * (box[3] - box[1])
        draw.text((4, y - 6), f"1e{tick}", fill="black")
    colors = ((31, 119, 180), (214, 39, 40), (44, 160, 44))
    for index, (name, curve) in enumerate(curves.items()):
        xs = box[0] + (np.log10(sigmas[1:]) - x_low) / (x_high - x_low) * (box[2] - box[0])
        ys = box[3] - (np.log10(np.maximum(curve[1:], 1e-6)) - y_low) / max(y_high - y_low, 1) * (box[3] - box[1])
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=colors[index], width=2)
        draw.rectangle((margin, height + 30 + 20 * index, margin + 10, height + 40 + 20 * index), fill=colors[index])
        draw.text((margin + 16, height + 28 + 20 * index), name, fill="black")
    draw.text((box[2] - 120, box[3] + 18), "sigma_min (log10)", fill="black")
    image.save(path)


def statement_horizon(circle: Circle, budget: Budget, results: dict, output_dir: Path) -> None:
    """OU SDE from N(0, I) at several horizons, with the exact score of a non-uniform law on the circle."""
    generator = torch.Generator().manual_seed(7)
    # angles: a mixture, 80% concentrated around 0 (std 0.5), 20% uniform
    concentrated = 0.5 * torch.randn(4096, generator=generator, dtype=torch.float64)
    uniform = (torch.rand(4096, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi
    angles = torch.where(torch.rand(4096, generator=generator) < 0.8, concentrated, uniform)
    angles = torch.remainder(angles + math.pi, 2 * math.pi) - math.pi
    points = circle.embed(torch.stack([angles.cos(), angles.sin()], -1))
    bins = 16

    def angle_histogram(values: torch.Tensor) -> np.ndarray:
        counts = np.histogram(values.numpy(), bins=bins, range=(-math.pi, math.pi))[0]
        return counts / counts.sum()

    data_histogram = angle_histogram(angles)
    rows, series, distances = {}, {}, {}
    for horizon in (0.1, 0.3, 1.0, 3.0):
        config = ScoreSdeConfig.from_preset("score-sde-circle", sde="ou", horizon=horizon, sampling_eps=1e-5)
        empirical = EmpiricalScoreModel.from_training_points(points.float(), config)
        scheduler = ScoreSdeEulerMaruyamaScheduler.from_config(config, budget.horizon_steps)
        with torch.no_grad():
            samples = sample_score_sde(
                empirical, scheduler, budget.horizon_samples, generator=torch.Generator().manual_seed(8)
            ).samples.double()
        stats = distance_stats(samples, circle)
        histogram = angle_histogram(circle.angles(samples))
        # TV(pi, p_T) bound of the paper, B2.1: here p_T -> N(0, I) as e^-T, so the weights converge, the support not
        rows[f"T={horizon:g}"] = {
            "distance_median": stats["distance_median"],
            "within_0.03": stats["within_0.03"],
            "angle_tv_to_data": float(0.5 * np.abs(histogram - data_histogram).sum()),
        }
        series[f"T = {horizon:g}"], distances[f"T = {horizon:g}"] = samples, circle.distance(samples)
    results["horizon"] = rows
    plot_samples_on_manifold(
        series, circle.isometry, distances, title="4. horizon T (OU, exact score of a non-uniform law on the circle)"
    ).save(output_dir / "horizon.png")


def print_tables(results: dict) -> None:
    print("\n### 1. Support: samples of a score model trained on fresh circle points vs bounded drifts")
    print("| model | median distance | p95 | within 3e-2 | angle chi2 (15 dof) |\n|---|---|---|---|---|")
    for name, row in results["support"].items():
        print(
            f"| {name} | {row['distance_median']:.4f} | {row['distance_p95']:.4f} | {row['within_0.03']:.3f} | "
            f"{row['angle_chi2']:.1f} |"
        )
    print("\n### 2. Memorisation as training lengthens (N training points)")
    print(
        "| model | copies by the ratio rule (chance) | nearest distance / chance | within 0.02 (chance) | "
        "median dist. to circle |"
        "\n|---|---|---|---|---|"
    )
    for name, row in results["memorization"].items():
        print(
            f"| {name} | {row['fraction_ratio_below_third']:.3f} ({row['chance_fraction_ratio_below_third']:.3f}) | "
            f"{row['nearest_distance_relative_to_chance']:.3f} | {row['fraction_within_delta']:.3f} "
            f"({row['chance_fraction_within_delta']:.3f}) | {row['distance_median']:.4f} |"
        )
    print("\n### 3. Error energy against the empirical score of the 16 points, down to sigma_min")
    levels = next(iter(results["energy"].values())).keys()
    header = " | ".join(level.replace("energy_to_sigma_min_", "sigma_min ") for level in levels)
    print(f"| model | {header} |\n|---|" + "---|" * len(levels))
    for name, row in results["energy"].items():
        print(f"| {name} | " + " | ".join(f"{value:.3g}" for value in row.values()) + " |")
    print("\n### 4. Horizon T (OU from N(0, I), exact score of a non-uniform law)")
    print("| horizon | median distance | within 3e-2 | angle TV to the data |\n|---|---|---|---|")
    for name, row in results["horizon"].items():
        print(f"| {name} | {row['distance_median']:.4f} | {row['within_0.03']:.3f} | {row['angle_tv_to_data']:.3f} |")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/score_sde_manifolds")
    parser.add_argument("--quick", action="store_true", help="reduced sizes (the slow test)")
    parser.add_argument("--statements", default="1,2,3,4", help="which statements to run (3 needs 1 and 2)")
    args = parser.parse_args(argv)
    budget = QUICK if args.quick else Budget()
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    circle = Circle(10, seed=0)
    statements = {int(value) for value in args.statements.split(",")}
    results: dict = {"budget": vars(budget), "timings_s": {}}
    start = time.perf_counter()
    fresh_model = models = None
    if 1 in statements or 3 in statements:
        fresh_model = statement_support(circle, budget, results, output_dir)
        results["timings_s"]["support"] = time.perf_counter() - start
    if 2 in statements or 3 in statements:
        models = statement_memorization(circle, budget, results, output_dir)
        results["timings_s"]["memorization"] = time.perf_counter() - start
    if 3 in statements:
        statement_energy(circle, budget, results, output_dir, fresh_model, models)
        results["timings_s"]["energy"] = time.perf_counter() - start
    if 4 in statements:
        statement_horizon(circle, budget, results, output_dir)
        results["timings_s"]["horizon"] = time.perf_counter() - start
    (output_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print_tables(
        {key: value for key, value in results.items() if key in ("support", "memorization", "energy", "horizon")}
    )
    print(f"\n{time.perf_counter() - start:.0f} s; results and plots in {output_dir}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
