"""Score-SDE samplers: exact Gaussian scores give back the Gaussian, the empirical score gives back training points,
and the VE ancestral sampler follows diffusers' `ScoreSdeVeScheduler` from the same seed."""

from __future__ import annotations

import pytest
import torch

from hfvision.models.score_sde import (
    Circle,
    EmpiricalScoreModel,
    LangevinCorrector,
    ScoreSdeConfig,
    ScoreSdeEulerMaruyamaScheduler,
    ScoreSdeHeunOdeScheduler,
    ScoreSdeModel,
    ScoreSdeSchedule,
    ScoreSdeVeAncestralScheduler,
    memorization_stats,
    sample_score_sde,
)

MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
COVARIANCE = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=torch.float64)


class GaussianScore:
    """The exact VE-form score of N(mean, C) smoothed at sigma: -(C + sigma^2 I)^-1 (x - mean)."""

    def __init__(self, mean: torch.Tensor, covariance: torch.Tensor) -> None:
        self.mean = mean
        self.eigenvalues, self.eigenvectors = torch.linalg.eigh(covariance)

    def __call__(self, sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        centred = (sample.double() - self.mean) @ self.eigenvectors  # (B, d) in the eigenbasis
        scaled = centred / (self.eigenvalues + sigma.double()[:, None] ** 2)
        return (-scaled @ self.eigenvectors.T).to(sample.dtype)


def gaussian_moments(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    samples = samples.double()
    return samples.mean(0), torch.cov(samples.T)


SAMPLERS = {
    # name: (sde, schedule overrides, scheduler class, steps, corrector)
    "ve-euler-maruyama": ("ve", {}, ScoreSdeEulerMaruyamaScheduler, 500, None),
    "ve-ancestral": ("ve", {}, ScoreSdeVeAncestralScheduler, 500, None),
    "ve-predictor-corrector": ("ve", {}, ScoreSdeVeAncestralScheduler, 200, LangevinCorrector(snr=0.16)),
    "ve-heun-ode": ("ve", {}, ScoreSdeHeunOdeScheduler, 100, None),
    "vp-euler-maruyama": ("vp", {"sampling_eps": 1e-3}, ScoreSdeEulerMaruyamaScheduler, 500, None),
    "vp-predictor-corrector": ("vp", {"sampling_eps": 1e-3}, ScoreSdeEulerMaruyamaScheduler, 300, LangevinCorrector()),
    "vp-heun-ode": ("vp", {"sampling_eps": 1e-3}, ScoreSdeHeunOdeScheduler, 100, None),
    "ou-euler-maruyama": ("ou", {"horizon": 8.0, "sampling_eps": 1e-4}, ScoreSdeEulerMaruyamaScheduler, 800, None),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_exact_gaussian_score_recovers_mean_and_covariance(name):
    """With the exact score of N(m, C), every sampler returns N(m, C): 4000 samples, mean within 0.1, covariance
    within 0.15 (sampling error of the moments: ~0.03 and ~0.05)."""
    sde, overrides, scheduler_class, steps, corrector = SAMPLERS[name]
    schedule = ScoreSdeSchedule(sde, sigma_min=0.01, sigma_max=20.0, **overrides)
    scheduler = scheduler_class(schedule, steps)
    samples = sample_score_sde(
        GaussianScore(MEAN, COVARIANCE),
        scheduler,
        4000,
        shape=(2,),
        corrector=corrector,
        generator=torch.Generator().manual_seed(0),
    ).samples
    mean, covariance = gaussian_moments(samples)
    assert (mean - MEAN).abs().max() < 0.1, (name, mean)
    assert (covariance - COVARIANCE).abs().max() < 0.15, (name, covariance)


def test_samplers_are_reproducible_from_a_generator():
    model = ScoreSdeModel(ScoreSdeConfig.from_preset("score-sde-tiny")).eval()
    scheduler = ScoreSdeEulerMaruyamaScheduler.from_config(model.config, 20)
    runs = [
        sample_score_sde(model, scheduler, 8, generator=torch.Generator().manual_seed(5), return_trajectory=True)
        for _ in range(2)
    ]
    assert torch.equal(runs[0].samples, runs[1].samples)
    assert runs[0].trajectory.shape == (21, 8, 3)
    heun = ScoreSdeHeunOdeScheduler.from_config(model.config, 10)
    assert heun.timesteps.shape == (20,)
    ode = sample_score_sde(model, heun, 8, generator=torch.Generator().manual_seed(5), return_trajectory=True)
    assert ode.trajectory.shape == (11, 8, 3) and torch.isfinite(ode.samples).all()


def test_scheduler_errors():
    schedule = ScoreSdeSchedule("vp")
    with pytest.raises(ValueError, match="sde='ve'"):
        ScoreSdeVeAncestralScheduler(schedule, 10)
    scheduler = ScoreSdeEulerMaruyamaScheduler(schedule, 2)
    sample = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="next time"):
        scheduler.step(torch.zeros(1, 2), 0.3, sample)
    scheduler.step(torch.zeros(1, 2), None, sample)
    scheduler.step(torch.zeros(1, 2), None, sample)
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(torch.zeros(1, 2), None, sample)
    with pytest.raises(ValueError, match="snr"):
        LangevinCorrector(snr=0.0)


@pytest.mark.parametrize("scheduler_name", ["ve-ancestral", "ve-euler-maruyama"])
def test_empirical_score_sampler_returns_training_points(scheduler_name):
    """Digest B2.4 / B5: driven by the exact score of 16 circle points in R^10, the sampler (with its final Tweedie
    step) returns training points: >= 99 % of 2000 samples within 1e-3 of one, against a chance level of ~0 for
    fresh circle points."""
    circle = Circle(ambient_dim=10, seed=0)
    training_points = circle.sample(16, torch.Generator().manual_seed(0))
    model = EmpiricalScoreModel.from_training_points(training_points, sigma_min=1e-3, sigma_max=3.0)
    scheduler_class = (
        ScoreSdeVeAncestralScheduler if scheduler_name == "ve-ancestral" else ScoreSdeEulerMaruyamaScheduler
    )
    scheduler = scheduler_class.from_config(model.config, 1000)
    samples = sample_score_sde(model, scheduler, 2000, generator=torch.Generator().manual_seed(1)).samples
    fresh = circle.sample(2000, torch.Generator().manual_seed(2))
    stats = memorization_stats(samples, training_points, delta=1e-3, fresh_points=fresh)
    assert stats.fraction_within_delta >= 0.99, stats.fraction_within_delta
    assert stats.chance_fraction_within_delta < 0.02
    assert stats.fraction_ratio_below_third >= 0.99
    assert (stats.nearest_distance <= 1e-3).sum() >= 1980
    # every training point is reproduced (the weights of mu_N, not one mode)
    nearest = torch.cdist(samples.double(), training_points.double()).argmin(-1)
    assert torch.bincount(nearest, minlength=16).min() > 50


def diffusers_trajectory(model, sigma_min, sigma_max, steps, shape, seed, correct_steps):
    """The loop of diffusers' (deprecated) `ScoreSdeVePipeline`, without its image clamp, on our model; also returns
    the noise levels it evaluates the model at."""
    from diffusers import ScoreSdeVeScheduler

    scheduler = ScoreSdeVeScheduler(
        sigma_min=sigma_min, sigma_max=sigma_max, snr=0.16, sampling_eps=1e-5, correct_steps=correct_steps
    )
    scheduler.set_timesteps(steps)
    scheduler.set_sigmas(steps)
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(shape, generator=generator) * scheduler.init_noise_sigma
    trajectory = [sample]
    with torch.no_grad():
        for index, timestep in enumerate(scheduler.timesteps):
            sigma = scheduler.sigmas[index] * torch.ones(shape[0])
            for _ in range(correct_steps):
                score = model(sample, sigma=sigma).score
                sample = scheduler.step_correct(score, sample, generator=generator).prev_sample
            output = scheduler.step_pred(model(sample, sigma=sigma).score, timestep, sample, generator=generator)
            sample = output.prev_sample
            trajectory.append(sample)
    return torch.stack(trajectory), output.prev_sample_mean, scheduler.sigmas


class AtDiffusersSigmas:
    """Evaluates `model` at diffusers' noise level of the step whose own level is `sigma` (nearest in log)."""

    def __init__(self, model, ours: torch.Tensor, theirs: torch.Tensor) -> None:
        self.model, self.ours, self.theirs = model, ours.float(), theirs.float()

    def __call__(self, sample: torch.Tensor, sigma: torch.Tensor):
        index = (self.ours.log()[None] - sigma.log()[:, None]).abs().argmin(-1)
        return self.model(sample, sigma=self.theirs[index])


@pytest.mark.parametrize("correct_steps", [0, 1])
def test_ve_ancestral_matches_diffusers_score_sde_ve_scheduler(correct_steps):
    """Same seed, same network: our VE ancestral sampler (with our Langevin corrector for PC) and diffusers'
    `ScoreSdeVeScheduler` (`step_pred`, `step_correct`) give the same trajectory. diffusers evaluates the network at
    sigma(t_i) on a time grid ending at `sampling_eps` = 1e-5, we at the step's own sigma_i (relative difference up to
    (sigma_max / sigma_min)^eps - 1 ~ 7e-5): at diffusers' levels the trajectories agree to float rounding, at ours
    to 1e-3 of the trajectory's scale (sigma_max = 10)."""
    pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = ScoreSdeModel(ScoreSdeConfig.from_preset("score-sde-tiny", sigma_min=0.01, sigma_max=10.0)).eval()
    steps, shape = 50, (64, 3)
    expected, expected_mean, their_sigmas = diffusers_trajectory(model, 0.01, 10.0, steps, shape, 0, correct_steps)

    def run(score_model, denoise):
        return sample_score_sde(
            score_model,
            ScoreSdeVeAncestralScheduler.from_config(model.config, steps),
            shape[0],
            shape=(3,),
            corrector=LangevinCorrector(snr=0.16) if correct_steps else None,
            denoise=denoise,
            generator=torch.Generator().manual_seed(0),
            return_trajectory=True,
        )

    our_sigmas = ScoreSdeVeAncestralScheduler.from_config(model.config, steps).sigmas
    same_levels = run(AtDiffusersSigmas(model, our_sigmas, their_sigmas), denoise=False)
    torch.testing.assert_close(same_levels.trajectory, expected, rtol=0, atol=5e-5)  # float32 rounding at |x| ~ 10
    ours = run(model, denoise=False)
    assert ours.trajectory.shape == expected.shape
    torch.testing.assert_close(ours.trajectory, expected, rtol=0, atol=1e-3)
    # the final Tweedie step is the pipeline's last `prev_sample_mean`
    torch.testing.assert_close(run(model, denoise=True).samples, expected_mean, rtol=0, atol=1e-3)
