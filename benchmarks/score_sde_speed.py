"""Sampling time of our VE ancestral sampler against diffusers' `ScoreSdeVeScheduler` loop, on the same network.

Both run side by side in one process, from the same prior draw, with the same `ScoreSdeModel` in eval mode under
`torch.inference_mode`, and the same number of steps:

- `ours`: `sample_score_sde(model, ScoreSdeVeAncestralScheduler, ...)` (optionally with `LangevinCorrector`, i.e.
  predictor-corrector sampling);
- `diffusers`: the loop of diffusers' (deprecated) `ScoreSdeVePipeline` without its image clamp:
  `ScoreSdeVeScheduler.set_timesteps/set_sigmas`, then `step_correct` and `step_pred` per step.

The two compute the same trajectory (checked in `tests/models/score_sde/test_scheduling_score_sde.py`), so the ratio
is the overhead of the sampler objects and loop around the network.

    OMP_NUM_THREADS=1 python benchmarks/score_sde_speed.py                     # circle preset, 1000 steps, CPU
    python benchmarks/score_sde_speed.py --preset score-sde-unet-tiny --batch-size 16 --steps 200 --corrector-steps 1
    python benchmarks/score_sde_speed.py --device cuda --batch-size 4096

Prints milliseconds per sampling run (median of `--repeats` rounds in which the two take turns, after a warm-up) and
the ratio ours / diffusers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/timing.py, also when loaded by path
from timing import timed

from hfvision.models.score_sde import (
    LangevinCorrector,
    ScoreSdeConfig,
    ScoreSdeModel,
    ScoreSdeVeAncestralScheduler,
    sample_score_sde,
)


def diffusers_loop(model: ScoreSdeModel, prior: torch.Tensor, steps: int, corrector_steps: int, snr: float, seed: int):
    """diffusers' VE predictor(-corrector) loop on `model`, from `prior` (a draw of N(0, 1), scaled here)."""
    from diffusers import ScoreSdeVeScheduler

    config = model.config
    scheduler = ScoreSdeVeScheduler(
        sigma_min=config.sigma_min,
        sigma_max=config.sigma_max,
        snr=snr,
        sampling_eps=1e-5,
        correct_steps=corrector_steps,
    )
    scheduler.set_timesteps(steps, device=prior.device)
    scheduler.set_sigmas(steps)
    generator = torch.Generator(device=prior.device).manual_seed(seed)
    sample = prior * scheduler.init_noise_sigma
    ones = torch.ones(prior.shape[0], device=prior.device)
    for index, timestep in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[index].to(prior.device) * ones
        for _ in range(corrector_steps):
            sample = scheduler.step_correct(model(sample, sigma=sigma).score, sample, generator=generator).prev_sample
        output = scheduler.step_pred(model(sample, sigma=sigma).score, timestep, sample, generator=generator)
        sample = output.prev_sample
    return output.prev_sample_mean


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Time both samplers; print a markdown table and the ratio.

    Returns:
        `ours_ms`, `diffusers_ms` and `ratio` (ours / diffusers).
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="score-sde-circle", help="ScoreSdeConfig preset of the shared network.")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--corrector-steps", type=int, default=0, help="Langevin corrector steps per step (PC).")
    parser.add_argument("--snr", type=float, default=0.16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        import diffusers
    except ImportError:
        print("diffusers is not installed (pip install 'hfvision[sgm]'); nothing to compare against")
        return {}

    torch.manual_seed(0)
    model = ScoreSdeModel(ScoreSdeConfig.from_preset(args.preset)).eval().to(args.device)
    shape = (args.batch_size, *model.config.data_shape)
    prior = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(args.device)
    scheduler = ScoreSdeVeAncestralScheduler.from_config(model.config, args.steps)
    corrector = LangevinCorrector(args.snr) if args.corrector_steps else None

    def ours() -> torch.Tensor:
        with torch.inference_mode():
            generator = torch.Generator(device=args.device).manual_seed(1)
            return sample_score_sde(
                model,
                scheduler,
                sample=prior * scheduler.schedule.prior_std,
                corrector=corrector,
                corrector_steps=args.corrector_steps,
                generator=generator,
                device=args.device,
            ).samples

    def theirs() -> torch.Tensor:
        with torch.inference_mode():
            return diffusers_loop(model, prior, args.steps, args.corrector_steps, args.snr, seed=1)

    milliseconds = timed({"ours": ours, "diffusers": theirs}, args.repeats, args.device)
    ratio = milliseconds["ours"] / milliseconds["diffusers"]
    threads = torch.get_num_threads() if args.device == "cpu" else "-"
    parameters = sum(parameter.numel() for parameter in model.parameters()) / 1e6
    print(
        f"{args.preset} ({parameters:.2f}M parameters), batch {args.batch_size}, {args.steps} steps, "
        f"{args.corrector_steps} corrector steps, {args.device}, {threads} threads, diffusers {diffusers.__version__}"
    )
    print("| sampler | ms / sampling run | ms / step |\n|---|---|---|")
    for name in ("ours", "diffusers"):
        print(f"| {name} | {milliseconds[name]:.1f} | {milliseconds[name] / args.steps:.3f} |")
    print(f"time ratio ours / diffusers: {ratio:.3f}")
    return {"ours_ms": milliseconds["ours"], "diffusers_ms": milliseconds["diffusers"], "ratio": ratio}


if __name__ == "__main__":
    main(sys.argv[1:])
