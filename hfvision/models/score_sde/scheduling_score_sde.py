"""Reverse-time samplers for Score-SDE models, in diffusers' scheduler style.

Score-Based Generative Models Detect Manifolds (J. Pidstrigach, arXiv 2206.01018) studies the output law of the
reverse SDE dY = [-f Y + g^2 grad log p_{T-t}(Y)] dt + g dB started from pi; Song et al. (ICLR 2021,
https://github.com/yang-song/score_sde) give the discretisations implemented here:

- `ScoreSdeEulerMaruyamaScheduler`: Euler-Maruyama on the reverse SDE of any configured SDE (`ve`, `vp`, `ou`);
- `ScoreSdeVeAncestralScheduler`: the SMLD / VE ancestral step x <- x + (sigma_i^2 - sigma_{i+1}^2) s +
  sqrt(sigma_i^2 - sigma_{i+1}^2) z, sigma_N = 0 (diffusers' `ScoreSdeVeScheduler.step_pred`);
- `LangevinCorrector`: the Langevin corrector of predictor-corrector sampling, step 2 (snr ||z|| / ||s||)^2
  (diffusers' `step_correct`);
- `ScoreSdeHeunOdeScheduler`: the probability-flow ODE dx/dt = f x - g^2 s / 2 with Heun's method (two score
  evaluations per step, tracked inside the scheduler as diffusers' `HeunDiscreteScheduler` does);
- `sample_score_sde`: the loop (prior draw, corrector, predictor, optional final Tweedie denoising step).

A scheduler is a small object: `set_timesteps` fixes the times at which the model is evaluated, `model_score` evaluates
a model there (through the VE form sigma_t / alpha_t, so a model trained once serves every SDE), `step` returns a
`ScoreSdeSchedulerOutput`; all randomness comes from `generator=`. Simplifications: Euler-Maruyama uses a uniform time
grid from T to `sampling_eps` (Song's code); the VP corrector scale is 1 - beta(t) dt as in Song's code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from .configuration_score_sde import ScoreSdeConfig
from .modeling_score_sde import ScoreSdeSchedule, append_dims


@dataclass
class ScoreSdeSchedulerOutput(ModelOutput):
    """Output of a scheduler or corrector step.

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, *data_shape)`): the sample at the next (smaller) time.
        prev_sample_mean (`torch.Tensor` of shape `(batch_size, *data_shape)`, *optional*): the same step without its
            noise term (for the last VE ancestral step: the Tweedie denoising x + sigma_min^2 s).
    """

    prev_sample: torch.Tensor | None = None
    prev_sample_mean: torch.Tensor | None = None


@dataclass
class ScoreSdeSamplerOutput(ModelOutput):
    """Output of `sample_score_sde`.

    Args:
        samples (`torch.Tensor` of shape `(batch_size, *data_shape)`): the generated samples.
        trajectory (`torch.Tensor` of shape `(num_states, batch_size, *data_shape)`, *optional*): the prior draw and
            the sample after every predictor step (with `return_trajectory=True`).
    """

    samples: torch.Tensor | None = None
    trajectory: torch.Tensor | None = None


ScoreFunction = Callable[..., object]


def evaluate_score(model: ScoreFunction, sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """VE-form score of `model` at `sample` `(B, *shape)` and noise level `sigma` `(B,)`: a Score-SDE model (its
    output's `.score`) or any callable `(sample, sigma=) -> score`."""
    output = model(sample, sigma=sigma)
    return output.score if hasattr(output, "score") else output


class ScoreSdeScheduler:
    """Shared state of the samplers: the SDE, the evaluation times and a step counter.

    Args:
        schedule: the forward SDE.
        num_inference_steps: number of steps from T to the end time.
    """

    order = 1
    stochastic = True

    def __init__(self, schedule: ScoreSdeSchedule, num_inference_steps: int = 1000) -> None:
        self.schedule = schedule
        self.set_timesteps(num_inference_steps)

    @classmethod
    def from_config(cls, config: ScoreSdeConfig, num_inference_steps: int = 1000, **schedule_overrides: object):
        """The scheduler of a model's config (`schedule_overrides`, e.g. `sigma_min=1e-4`, change the SDE)."""
        return cls(ScoreSdeSchedule.from_config(config, **schedule_overrides), num_inference_steps)

    def _grid(self, num_inference_steps: int, device: torch.device | str | None) -> torch.Tensor:
        if num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be >= 1, got {num_inference_steps}.")
        self.num_inference_steps = num_inference_steps
        return torch.linspace(self.schedule.horizon, self.schedule.sampling_eps, num_inference_steps + 1, device=device)

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Fix the evaluation times `self.timesteps` (float64) and reset the step counter."""
        raise NotImplementedError

    def init_noise(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """A draw from the start law pi = N(0, prior_std^2 I) (digest B2.1: any Gaussian pi keeps the support)."""
        return self.schedule.prior_std * torch.randn(shape, generator=generator, dtype=dtype).to(device)

    def _noise(self, sample: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(sample.shape, generator=generator, dtype=sample.dtype).to(sample.device)

    @property
    def current_timestep(self) -> torch.Tensor:
        return self.timesteps[self.step_index]

    def model_score(self, model: ScoreFunction, sample: torch.Tensor) -> torch.Tensor:
        """grad log p_t(sample) at the current time t, from a model of the VE form: s(x / alpha_t, sigma_t / alpha_t)
        / alpha_t."""
        alpha, sigma = self.schedule.alpha_sigma(self.current_timestep)
        noise_level = (sigma / alpha).to(sample.dtype).expand(sample.shape[0])
        return evaluate_score(model, sample / alpha.to(sample.dtype), noise_level) / alpha.to(sample.dtype)

    @property
    def final_time(self) -> float | None:
        """Time reached after the last step, where noise sigma_t remains (None when the last step removes it)."""
        return self.schedule.sampling_eps

    def langevin_scale(self) -> float:
        """Song's factor of the Langevin step size at the current time (1 - beta(t) dt for VP, else 1)."""
        return 1.0

    def _advance(self, timestep: torch.Tensor | float | None) -> int:
        if self.step_index >= len(self.timesteps):
            raise ValueError("All steps are done; call `set_timesteps` to sample again.")
        if timestep is not None and abs(float(timestep) - float(self.timesteps[self.step_index])) > 1e-6:
            raise ValueError(
                f"`timestep` {float(timestep)} is not the scheduler's next time "
                f"{float(self.timesteps[self.step_index])}."
            )
        index = self.step_index
        self.step_index += 1
        return index


class ScoreSdeEulerMaruyamaScheduler(ScoreSdeScheduler):
    """Euler-Maruyama on the reverse SDE dx = [f(t) x - g(t)^2 s(x, t)] dt + g(t) dW-bar, t from T to `sampling_eps`
    on a uniform grid of `num_inference_steps` steps (Song's `EulerMaruyamaPredictor`)."""

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        self.grid = self._grid(num_inference_steps, device).to(torch.float64)
        self.timesteps = self.grid[:-1]
        self.step_index = 0

    def langevin_scale(self) -> float:
        if self.schedule.sde != "vp":
            return 1.0
        index = min(self.step_index, len(self.timesteps) - 1)
        step = float(self.grid[index] - self.grid[index + 1])
        return 1.0 - float(self.schedule.beta(self.grid[index])) * step

    def step(
        self,
        score: torch.Tensor,
        timestep: torch.Tensor | float | None,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> ScoreSdeSchedulerOutput:
        """One reverse step from `timestep` to the next grid time.

        Args:
            score (`torch.Tensor` of shape `(batch_size, *data_shape)`): grad log p_t(sample) at `timestep`.
            timestep: the current time (checked against the scheduler's; `None` skips the check).
            sample (`torch.Tensor` of shape `(batch_size, *data_shape)`): x_t.
            generator: source of the Brownian increment.
        """
        index = self._advance(timestep)
        time, next_time = self.grid[index], self.grid[index + 1]
        step = next_time - time  # dt < 0: time runs backwards
        drift = (
            self.schedule.drift_coefficient(time) * sample
            - self.schedule.diffusion_squared(time).to(sample.dtype) * score
        )
        prev_sample_mean = sample + drift * step.to(sample.dtype)
        diffusion = torch.sqrt(self.schedule.diffusion_squared(time) * -step).to(sample.dtype)
        prev_sample = prev_sample_mean + diffusion * self._noise(sample, generator)
        return ScoreSdeSchedulerOutput(prev_sample=prev_sample, prev_sample_mean=prev_sample_mean)


class ScoreSdeVeAncestralScheduler(ScoreSdeScheduler):
    """The VE (SMLD) ancestral sampler on the geometric noise levels sigma_max = sigma_0 > ... > sigma_{N-1} =
    sigma_min, sigma_N = 0:

    x <- x + (sigma_i^2 - sigma_{i+1}^2) s(x, sigma_i) + sqrt(sigma_i^2 - sigma_{i+1}^2) z   (digest B3).

    The last step's mean x + sigma_min^2 s(x, sigma_min) is the Tweedie denoising step. The steps are those of
    diffusers' `ScoreSdeVeScheduler.step_pred` (same sigmas, same noise draws from the same generator); the model is
    evaluated at the step's own sigma_i, where diffusers' pipeline uses sigma(t_i) on a time grid ending at
    `sampling_eps`, larger by a factor (sigma_max / sigma_min)^(i eps / (N - 1)) (7e-5 relative for eps = 1e-5).
    """

    def __init__(self, schedule: ScoreSdeSchedule, num_inference_steps: int = 1000) -> None:
        if schedule.sde != "ve":
            raise ValueError(f"The VE ancestral sampler needs `sde='ve'`, got {schedule.sde!r}.")
        super().__init__(schedule, num_inference_steps)

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        if num_inference_steps < 2:
            raise ValueError(f"`num_inference_steps` must be >= 2, got {num_inference_steps}.")
        self.num_inference_steps = num_inference_steps
        schedule = self.schedule
        log_ratio = torch.linspace(1.0, 0.0, num_inference_steps, dtype=torch.float64, device=device)
        self.sigmas = schedule.sigma_min * (schedule.sigma_max / schedule.sigma_min) ** log_ratio  # (N,)
        self.timesteps = schedule.horizon * log_ratio  # sigma(t_i) = sigma_i
        self.step_index = 0

    @property
    def final_time(self) -> float | None:
        return None

    def model_score(self, model: ScoreFunction, sample: torch.Tensor) -> torch.Tensor:
        sigma = self.sigmas[self.step_index].to(sample.dtype).expand(sample.shape[0])
        return evaluate_score(model, sample, sigma)

    def step(
        self,
        score: torch.Tensor,
        timestep: torch.Tensor | float | None,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> ScoreSdeSchedulerOutput:
        """One ancestral step from sigma_i to sigma_{i+1} (`score` at sigma_i, shapes as `sample`)."""
        index = self._advance(timestep)
        sigma = self.sigmas[index]
        next_sigma = self.sigmas[index + 1] if index + 1 < len(self.sigmas) else torch.zeros_like(sigma)
        variance = (sigma**2 - next_sigma**2).to(sample.dtype)
        prev_sample_mean = sample + variance * score
        prev_sample = prev_sample_mean + variance.sqrt() * self._noise(sample, generator)
        return ScoreSdeSchedulerOutput(prev_sample=prev_sample, prev_sample_mean=prev_sample_mean)


class ScoreSdeHeunOdeScheduler(ScoreSdeScheduler):
    """Heun's method on the probability-flow ODE dx/dt = f(t) x - g(t)^2 s(x, t) / 2 (deterministic; same marginals as
    the reverse SDE). `timesteps` lists each model evaluation: t_0, t_1, t_1, t_2, ..., t_N (2 per step); odd calls of
    `step` take the Euler predictor and store it, even calls apply the trapezoidal correction."""

    order = 2
    stochastic = False

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        self.grid = self._grid(num_inference_steps, device).to(torch.float64)
        self.timesteps = torch.stack([self.grid[:-1], self.grid[1:]], dim=1).flatten()  # (2N,)
        self.step_index = 0
        self._first_stage: tuple[torch.Tensor, torch.Tensor] | None = None

    def _velocity(self, score: torch.Tensor, sample: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        drift = self.schedule.drift_coefficient(time).to(sample.dtype)
        return drift * sample - 0.5 * self.schedule.diffusion_squared(time).to(sample.dtype) * score

    def step(
        self,
        score: torch.Tensor,
        timestep: torch.Tensor | float | None,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> ScoreSdeSchedulerOutput:
        """Half a Heun step: the Euler predictor (first call) or the trapezoidal corrector (second call)."""
        index = self._advance(timestep)
        interval = index // 2
        time, next_time = self.grid[interval], self.grid[interval + 1]
        step = (next_time - time).to(sample.dtype)
        if index % 2 == 0:
            velocity = self._velocity(score, sample, time)
            self._first_stage = (sample, velocity)
            predicted = sample + step * velocity
            return ScoreSdeSchedulerOutput(prev_sample=predicted, prev_sample_mean=predicted)
        start, velocity = self._first_stage
        self._first_stage = None
        prev_sample = start + 0.5 * step * (velocity + self._velocity(score, sample, next_time))
        return ScoreSdeSchedulerOutput(prev_sample=prev_sample, prev_sample_mean=prev_sample)


class LangevinCorrector:
    """Langevin MCMC at a fixed time (the corrector of predictor-corrector sampling, Song et al. Alg. 4):

    x <- x + eps s + sqrt(2 eps) z,  eps = 2 scale (snr ||z|| / ||s||)^2  (norms averaged over the batch).

    Args:
        snr: signal-to-noise ratio (0.15-0.16 in Song et al.; diffusers' default 0.15).
    """

    def __init__(self, snr: float = 0.15) -> None:
        if snr <= 0:
            raise ValueError(f"`snr` must be > 0, got {snr}.")
        self.snr = snr

    def step(
        self,
        score: torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        scale: float = 1.0,
    ) -> ScoreSdeSchedulerOutput:
        """One Langevin step with `score` = grad log p_t(sample) `(B, *shape)`."""
        noise = torch.randn(sample.shape, generator=generator, dtype=sample.dtype).to(sample.device)
        score_norm = score.flatten(1).norm(dim=-1).mean()
        noise_norm = noise.flatten(1).norm(dim=-1).mean()
        step_size = 2 * scale * (self.snr * noise_norm / score_norm) ** 2
        prev_sample_mean = sample + step_size * score
        prev_sample = prev_sample_mean + (2 * step_size).sqrt() * noise
        return ScoreSdeSchedulerOutput(prev_sample=prev_sample, prev_sample_mean=prev_sample_mean)


@torch.no_grad()
def sample_score_sde(
    model: ScoreFunction,
    scheduler: ScoreSdeScheduler,
    num_samples: int | None = None,
    *,
    shape: tuple[int, ...] | None = None,
    sample: torch.Tensor | None = None,
    corrector: LangevinCorrector | None = None,
    corrector_steps: int = 1,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> ScoreSdeSamplerOutput:
    """Draw samples by running `scheduler` (and an optional `corrector`) on the reverse process of `model`.

    Args:
        model: a Score-SDE model, or any callable `(sample, sigma=) -> VE-form score`.
        scheduler: a predictor (Euler-Maruyama, VE ancestral, Heun ODE); its timesteps are reset here.
        num_samples: batch size B (with the model's `config.data_shape`, or `shape`).
        shape: one sample's shape, for a callable without a config.
        sample (`torch.Tensor` of shape `(batch_size, *data_shape)`, *optional*): the start point instead of a
            prior draw.
        corrector: a Langevin corrector, run `corrector_steps` times before every predictor step (PC sampling).
        denoise: end with the Tweedie step E[x_0 | x] = (x + sigma_t^2 s) / alpha_t at the final time (for the VE
            ancestral sampler, the mean of its last step).
        generator: source of all randomness.
        return_trajectory: also return the state after every predictor step.

    Returns:
        `ScoreSdeSamplerOutput` with `samples` `(B, *data_shape)`.
    """
    # 1. the start law pi
    num_steps = scheduler.num_inference_steps
    scheduler.set_timesteps(num_steps, device=device)
    if sample is None:
        if shape is None:
            shape = tuple(model.config.data_shape)
        if num_samples is None:
            raise ValueError("Give `num_samples` or a start `sample`.")
        sample = scheduler.init_noise((num_samples, *shape), generator=generator, dtype=dtype, device=device)
    trajectory = [sample] if return_trajectory else None
    sample_mean = sample
    # 2. predictor steps (each preceded by corrector steps), from T down to the end time
    for timestep in scheduler.timesteps:
        if corrector is not None and scheduler.step_index % scheduler.order == 0:
            for _ in range(corrector_steps):
                score = scheduler.model_score(model, sample)
                sample = corrector.step(score, sample, generator, scale=scheduler.langevin_scale()).prev_sample
        score = scheduler.model_score(model, sample)
        output = scheduler.step(score, timestep, sample, generator=generator)
        sample, sample_mean = output.prev_sample, output.prev_sample_mean
        if return_trajectory and scheduler.step_index % scheduler.order == 0:
            trajectory.append(sample)
    # 3. the final denoising step
    if denoise:
        final_time = scheduler.final_time
        if final_time is None:
            sample = sample_mean
        else:
            alpha, sigma = scheduler.schedule.alpha_sigma(torch.tensor(final_time, device=sample.device))
            noise_level = (sigma / alpha).to(sample.dtype).expand(sample.shape[0])
            score = evaluate_score(model, sample / alpha.to(sample.dtype), noise_level)  # VE form at x / alpha
            sample = sample / alpha.to(sample.dtype) + append_dims(noise_level**2, sample.ndim) * score
    return ScoreSdeSamplerOutput(samples=sample, trajectory=torch.stack(trajectory) if return_trajectory else None)


__all__ = [
    "LangevinCorrector",
    "ScoreSdeEulerMaruyamaScheduler",
    "ScoreSdeHeunOdeScheduler",
    "ScoreSdeSamplerOutput",
    "ScoreSdeScheduler",
    "ScoreSdeSchedulerOutput",
    "ScoreSdeVeAncestralScheduler",
    "evaluate_score",
    "sample_score_sde",
]
