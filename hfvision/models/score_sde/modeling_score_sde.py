"""Score-SDE models: a score network (MLP for points, small U-Net for images) and the exact score of a finite set.

Score-Based Generative Models Detect Manifolds (J. Pidstrigach, NeurIPS 2022, arXiv 2206.01018). The paper is
theoretical and has no official code; the SDEs and samplers follow Song et al. (ICLR 2021,
https://github.com/yang-song/score_sde), the `edm` preconditioning Karras et al. (NeurIPS 2022).

Reading order: the forward SDE (`ScoreSdeSchedule`, x_t = alpha_t x_0 + sigma_t z), the noise-level embedding, the
networks, the `PreTrainedModel` base (which turns a denoiser into a score and a denoising-score-matching loss), then
`ScoreSdeModel` and `EmpiricalScoreModel`.

Every model here is a denoiser of the variance-exploding form x = x_0 + sigma z. Since x_t / alpha_t = x_0 +
(sigma_t / alpha_t) z, the same model serves the VE, VP and OU SDEs at sigma = sigma_t / alpha_t, and the score of p_t
is grad log p_t(x_t) = s(x_t / alpha_t, sigma_t / alpha_t) / alpha_t. Calling a model with `sigma=` uses the VE form
directly; `timestep=` converts through the configured SDE.

Where we simplify or choose:
- the MLP conditions on c_noise = ln(sigma) / 4 for both parameterisations (NCSN itself feeds sigma to a U-Net);
- the loss is the digest's lambda(sigma) = sigma^2 weighting, E ||sigma s(x_0 + sigma z, sigma) + z||^2, summed over
  coordinates and averaged over the batch (Song's `reduce_mean=False`), for `ncsn` and `edm` alike;
- the U-Net is a small DDPM-style one (residual blocks with GroupNorm, no attention), not NCSN++;
- the empirical score uses Song's VE convention x_t = x_0 + sigma_t z with sigma_t the full kernel std.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .configuration_score_sde import EmpiricalScoreConfig, ScoreSdeConfig


@dataclass
class ScoreSdeOutput(ModelOutput):
    r"""Output of [`ScoreSdeModel`] and [`EmpiricalScoreModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned with `return_loss=True`): denoising score
            matching, mean over the batch of ||sigma s(x_0 + sigma z, sigma) + z||^2 (sum over coordinates).
        score (`torch.FloatTensor` of shape `(batch_size, *data_shape)`): grad_x log p(x) at the input (with
            `timestep=` the score of p_t at x_t; with `return_loss=True` at the noised sample).
        denoised (`torch.FloatTensor` of shape `(batch_size, *data_shape)`): the Tweedie estimate of x_0,
            E[x_0 | x_t] = (x_t + sigma_t^2 grad log p_t(x_t)) / alpha_t.
        noisy_sample (`torch.FloatTensor` of shape `(batch_size, *data_shape)`, *optional*): with `return_loss=True`,
            the noised sample x_t = alpha_t x_0 + sigma_t z the score was evaluated at.
        sigma (`torch.FloatTensor` of shape `(batch_size,)`, *optional*): with `return_loss=True`, the VE-form noise
            level sigma_t / alpha_t of each sample.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): network activations (input projection and every
            block) with `output_hidden_states=True`.
    """

    loss: torch.FloatTensor | None = None
    score: torch.FloatTensor | None = None
    denoised: torch.FloatTensor | None = None
    noisy_sample: torch.FloatTensor | None = None
    sigma: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


# --- the forward SDE ---------------------------------------------------------------------------------------------
class ScoreSdeSchedule:
    r"""The forward SDE dx = f(t) x dt + g(t) dW and its Gaussian marginals x_t = alpha_t x_0 + sigma_t z.

    A plain object (floats only), shared by the models and the samplers:

    | sde | alpha_t | sigma_t^2 | f(t) | g(t)^2 |
    |---|---|---|---|---|
    | `ve` | 1 | (sigma_min r^(t/T))^2, r = sigma_max / sigma_min | 0 | 2 sigma_t^2 ln(r) / T |
    | `vp` | exp(-B(t) / 2), B = int_0^t beta | 1 - alpha_t^2 | -beta(t) / 2 | beta(t) |
    | `ou` | e^-t | 1 - e^-2t | -1 | 2 |

    with beta(t) = (beta_min + (t / T) (beta_max - beta_min)) / T for `vp` (Song et al.'s VP SDE on [0, T]) and `ou` the
    paper's dx = -x dt + sqrt(2) dW. The VE noise level of the marginal is sigma_t / alpha_t.

    Args:
        sde: `"ve"`, `"vp"` or `"ou"`.
        sigma_min, sigma_max: the VE noise range.
        beta_min, beta_max: the VP beta range.
        horizon: the end time T.
        sampling_eps: the time at which reverse sampling stops.
    """

    def __init__(
        self,
        sde: str = "ve",
        sigma_min: float = 1e-3,
        sigma_max: float = 3.0,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        horizon: float = 1.0,
        sampling_eps: float = 1e-5,
    ) -> None:
        if sde not in ("ve", "vp", "ou"):
            raise ValueError(f"`sde` must be one of ('ve', 'vp', 'ou'), got {sde!r}.")
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"`sigma_min` must be > 0 and < `sigma_max`, got {sigma_min} and {sigma_max}.")
        if not 0 < sampling_eps < horizon:
            raise ValueError(f"`sampling_eps` must be > 0 and < `horizon`, got {sampling_eps} and {horizon}.")
        self.sde, self.sigma_min, self.sigma_max = sde, float(sigma_min), float(sigma_max)
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.horizon, self.sampling_eps = float(horizon), float(sampling_eps)

    @classmethod
    def from_config(cls, config: ScoreSdeConfig, **overrides: object) -> ScoreSdeSchedule:
        """The schedule of `config`, with optional field overrides (e.g. another `sigma_min` for sampling)."""
        names = ("sde", "sigma_min", "sigma_max", "beta_min", "beta_max", "horizon", "sampling_eps")
        return cls(**{name: getattr(config, name) for name in names} | overrides)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in vars(self).items())
        return f"ScoreSdeSchedule({fields})"

    def _as_time(self, t: torch.Tensor | float) -> torch.Tensor:
        return torch.as_tensor(t, dtype=torch.float64)

    def _integrated_beta(self, t: torch.Tensor) -> torch.Tensor:
        fraction = t / self.horizon
        return self.beta_min * fraction + 0.5 * (self.beta_max - self.beta_min) * fraction**2  # int_0^t beta

    def alpha_sigma(self, t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """Marginal coefficients `(alpha_t, sigma_t)` at times `t` (any shape), in float64."""
        t = self._as_time(t)
        if self.sde == "ve":
            sigma = self.sigma_min * (self.sigma_max / self.sigma_min) ** (t / self.horizon)
            return torch.ones_like(t), sigma
        exponent = self._integrated_beta(t) if self.sde == "vp" else 2 * t  # alpha_t^2 = exp(-exponent)
        return torch.exp(-0.5 * exponent), torch.sqrt(-torch.expm1(-exponent))

    def noise_level(self, t: torch.Tensor | float) -> torch.Tensor:
        """The VE-form noise level sigma_t / alpha_t at times `t`, in float64."""
        alpha, sigma = self.alpha_sigma(t)
        return sigma / alpha

    def drift_coefficient(self, t: torch.Tensor | float) -> torch.Tensor:
        """f(t) of the linear drift f(t) x, in float64."""
        t = self._as_time(t)
        if self.sde == "ve":
            return torch.zeros_like(t)
        if self.sde == "vp":
            return -0.5 * self.beta(t)
        return -torch.ones_like(t)

    def beta(self, t: torch.Tensor | float) -> torch.Tensor:
        """VP beta(t) (per unit time on [0, T])."""
        t = self._as_time(t)
        return (self.beta_min + (t / self.horizon) * (self.beta_max - self.beta_min)) / self.horizon

    def diffusion_squared(self, t: torch.Tensor | float) -> torch.Tensor:
        """g(t)^2, in float64."""
        t = self._as_time(t)
        if self.sde == "ve":
            _, sigma = self.alpha_sigma(t)
            return 2 * sigma**2 * math.log(self.sigma_max / self.sigma_min) / self.horizon  # d sigma_t^2 / dt
        if self.sde == "vp":
            return self.beta(t)
        return torch.full_like(t, 2.0)

    @property
    def prior_std(self) -> float:
        """Std of the start law pi = N(0, prior_std^2 I) of reverse sampling (p_T without the data term)."""
        return self.sigma_max if self.sde == "ve" else 1.0

    @property
    def noise_level_range(self) -> tuple[float, float]:
        """VE-form noise levels at `sampling_eps` and at T: the range a model is trained on."""
        return float(self.noise_level(self.sampling_eps)), float(self.noise_level(self.horizon))


def append_dims(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """`(B,)` -> `(B, 1, ..., 1)` with `ndim` dimensions, to broadcast per-sample scalars over a sample."""
    return values.reshape(values.shape[0], *([1] * (ndim - 1)))


# --- the networks ------------------------------------------------------------------------------------------------
class ScoreSdeNoiseEmbedding(nn.Module):
    """c_noise = ln(sigma) / 4 -> `(B, time_embedding_size)`: the scalar itself, or fixed random Fourier features of it
    (NCSN++'s Gaussian Fourier projection; the frequencies are a saved buffer), then a two-layer MLP."""

    def __init__(self, config: ScoreSdeConfig):
        super().__init__()
        size = config.time_embedding_size
        self.use_fourier = config.time_embedding == "fourier"
        self.fourier_scale = config.fourier_scale
        if self.use_fourier:
            self.register_buffer("fourier_frequencies", torch.empty(max(size // 2, 1)))
        in_features = 2 * max(size // 2, 1) if self.use_fourier else 1
        self.linear_1 = nn.Linear(in_features, size)
        self.act = ACT2FN[config.hidden_act]
        self.linear_2 = nn.Linear(size, size)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        features = c_noise[:, None]  # (B, 1)
        if self.use_fourier:
            angles = 2 * math.pi * features * self.fourier_frequencies[None]  # (B, E/2)
            features = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, E)
        return self.linear_2(self.act(self.linear_1(features)))  # (B, E)


class ScoreSdeMlpLayer(GradientCheckpointingLayer):
    """Pre-norm residual block h + W2 act(W1 act(LN(h)) + U emb)."""

    def __init__(self, config: ScoreSdeConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size)
        self.dense_1 = nn.Linear(config.hidden_size, config.hidden_size)
        self.noise_projection = nn.Linear(config.time_embedding_size, config.hidden_size)
        self.dense_2 = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor, noise_embedding: torch.Tensor) -> torch.Tensor:
        residual = self.dense_1(self.act(self.norm(hidden_states))) + self.noise_projection(noise_embedding)
        return hidden_states + self.dense_2(self.act(residual))  # (B, H)


class ScoreSdeMlp(nn.Module):
    """F(x, c_noise) for points `(B, d)`: input projection, residual blocks, output projection."""

    def __init__(self, config: ScoreSdeConfig):
        super().__init__()
        self.input_projection = nn.Linear(config.data_dim, config.hidden_size)
        self.layers = nn.ModuleList([ScoreSdeMlpLayer(config) for _ in range(config.num_layers)])
        self.output_norm = nn.LayerNorm(config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.output_projection = nn.Linear(config.hidden_size, config.data_dim)

    def forward(
        self, sample: torch.Tensor, noise_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        hidden_states = self.input_projection(sample)  # (B, H)
        all_hidden_states = [hidden_states]
        for layer in self.layers:
            hidden_states = layer(hidden_states, noise_embedding)
            all_hidden_states.append(hidden_states)
        return self.output_projection(self.act(self.output_norm(hidden_states))), tuple(all_hidden_states)  # (B, d)


class ScoreSdeResnetBlock(GradientCheckpointingLayer):
    """GroupNorm, act, conv3x3, + projected noise embedding, GroupNorm, act, conv3x3; a 1x1 shortcut when the widths
    differ."""

    def __init__(self, config: ScoreSdeConfig, in_channels: int, out_channels: int):
        super().__init__()
        self.norm_1 = nn.GroupNorm(math.gcd(config.norm_num_groups, in_channels), in_channels)
        self.conv_1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.noise_projection = nn.Linear(config.time_embedding_size, out_channels)
        self.norm_2 = nn.GroupNorm(config.norm_num_groups, out_channels)
        self.conv_2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.act = ACT2FN[config.hidden_act]
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, hidden_states: torch.Tensor, noise_embedding: torch.Tensor) -> torch.Tensor:
        residual = self.conv_1(self.act(self.norm_1(hidden_states)))  # (B, C_out, h, w)
        residual = residual + self.noise_projection(noise_embedding)[:, :, None, None]
        residual = self.conv_2(self.act(self.norm_2(residual)))
        return self.shortcut(hidden_states) + residual


class ScoreSdeUNet(nn.Module):
    """F(x, c_noise) for images `(B, C, H, W)`: a small DDPM-style U-Net (residual blocks, strided-conv downsampling,
    nearest upsampling + conv, skip connections after every block), without attention."""

    def __init__(self, config: ScoreSdeConfig):
        super().__init__()
        channels = config.block_out_channels
        self.conv_in = nn.Conv2d(config.num_channels, channels[0], 3, padding=1)
        skip_channels, current = [channels[0]], channels[0]
        self.down_blocks, self.downsamplers = nn.ModuleList(), nn.ModuleList()
        for level, width in enumerate(channels):
            blocks = nn.ModuleList()
            for _ in range(config.layers_per_block):
                blocks.append(ScoreSdeResnetBlock(config, current, width))
                current = width
                skip_channels.append(current)
            self.down_blocks.append(blocks)
            if level < len(channels) - 1:
                self.downsamplers.append(nn.Conv2d(current, current, 3, stride=2, padding=1))
                skip_channels.append(current)
        self.mid_block = ScoreSdeResnetBlock(config, current, current)
        self.up_blocks, self.upsamplers = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(channels))):
            blocks = nn.ModuleList()
            for _ in range(config.layers_per_block + 1):
                blocks.append(ScoreSdeResnetBlock(config, current + skip_channels.pop(), channels[level]))
                current = channels[level]
            self.up_blocks.append(blocks)
            if level > 0:
                self.upsamplers.append(nn.Conv2d(current, current, 3, padding=1))
        self.norm_out = nn.GroupNorm(config.norm_num_groups, current)
        self.act = ACT2FN[config.hidden_act]
        self.conv_out = nn.Conv2d(current, config.num_channels, 3, padding=1)

    def forward(
        self, sample: torch.Tensor, noise_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        hidden_states = self.conv_in(sample)  # (B, C0, H, W)
        skips, all_hidden_states = [hidden_states], [hidden_states]
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                hidden_states = block(hidden_states, noise_embedding)
                skips.append(hidden_states)
            if level < len(self.downsamplers):
                hidden_states = self.downsamplers[level](hidden_states)  # (B, C, h / 2, w / 2)
                skips.append(hidden_states)
            all_hidden_states.append(hidden_states)
        hidden_states = self.mid_block(hidden_states, noise_embedding)
        all_hidden_states.append(hidden_states)
        for level, blocks in enumerate(self.up_blocks):
            for block in blocks:
                hidden_states = block(torch.cat([hidden_states, skips.pop()], dim=1), noise_embedding)
            if level < len(self.upsamplers):
                hidden_states = F.interpolate(hidden_states, scale_factor=2.0, mode="nearest")
                hidden_states = self.upsamplers[level](hidden_states)
            all_hidden_states.append(hidden_states)
        return self.conv_out(self.act(self.norm_out(hidden_states))), tuple(all_hidden_states)  # (B, C, H, W)


# --- models ------------------------------------------------------------------------------------------------------
class ScoreSdePreTrainedModel(PreTrainedModel):
    """Turns a VE-form prediction (score, denoised) at noise level sigma into the score of any configured SDE and the
    denoising-score-matching loss; subclasses implement `predict`."""

    config_class = ScoreSdeConfig
    base_model_prefix = "score_sde"
    main_input_name = "sample"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False
    _no_split_modules = ["ScoreSdeMlpLayer", "ScoreSdeResnetBlock"]

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.save_pretrained`, shipping the sample-generation pipeline with every checkpoint.

        config.json gets the pipeline's `custom_pipelines` entry, and `pipeline_score_sde.py` (with the scheduler and
        picture files it imports) is written beside the model's code (transformers copies the files a modeling file
        imports relatively, and fetches them with it when the model is loaded as remote code). So a checkpoint saved
        any way (`save_pretrained`, `push_to_hub`, `Trainer`, a pipeline) runs
        `pipeline("unconditional-sample-generation", model=path_or_repo_id, trust_remote_code=True)` without
        hfvision, also after being re-saved there.
        """
        # imported here: the pipeline imports the scheduler, which imports this file
        from .pipeline_score_sde import ScoreSdeSampleGenerationPipeline

        pipeline_class = ScoreSdeSampleGenerationPipeline
        impl = f"{pipeline_class.__module__.rsplit('.', 1)[-1]}.{pipeline_class.__name__}"
        self.config.custom_pipelines = {
            **(getattr(self.config, "custom_pipelines", None) or {}),
            "unconditional-sample-generation": {"impl": impl, "pt": ["AutoModel"], "type": "multimodal"},
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    @property
    def schedule(self) -> ScoreSdeSchedule:
        """The forward SDE of `self.config` (read at every call, so config edits take effect)."""
        return ScoreSdeSchedule.from_config(self.config)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Xavier-uniform linear and conv weights, zero biases, unit norms, N(0, fourier_scale^2) Fourier frequencies,
        an all-zero training set (filled by `EmpiricalScoreModel.from_training_points` or the checkpoint)."""
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ScoreSdeNoiseEmbedding) and module.use_fourier:
            init.normal_(module.fourier_frequencies, std=module.fourier_scale)
        elif isinstance(module, EmpiricalScoreModel):
            init.zeros_(module.training_points)

    def predict(
        self, sample: torch.Tensor, sigma: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """VE-form score grad log p_sigma(x) and denoised E[x_0 | x] at `sample` `(B, *data_shape)`, `sigma` `(B,)`."""
        raise NotImplementedError

    def _check_sample(self, sample: torch.Tensor) -> None:
        expected = tuple(self.config.data_shape)
        if not isinstance(sample, torch.Tensor) or sample.ndim != len(expected) + 1 or sample.shape[1:] != expected:
            got = tuple(sample.shape) if isinstance(sample, torch.Tensor) else type(sample).__name__
            raise ValueError(f"`sample` must have shape (batch, {', '.join(map(str, expected))}), got {got}.")

    def _per_sample(self, value: torch.Tensor | float, name: str, batch_size: int, like: torch.Tensor) -> torch.Tensor:
        value = torch.as_tensor(value, dtype=torch.float64, device=like.device).reshape(-1)
        if value.numel() == 1:
            value = value.expand(batch_size)
        if value.shape != (batch_size,):
            raise ValueError(f"`{name}` must be a scalar or of shape ({batch_size},), got {tuple(value.shape)}.")
        return value

    def sample_training_sigmas(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training noise levels `(B,)`: log-uniform on the schedule's range, or EDM's log-normal."""
        if self.config.sigma_sampling == "log_normal":
            normal = torch.randn(batch_size, generator=generator, dtype=torch.float64)
            return torch.exp(self.config.p_mean + self.config.p_std * normal)
        low, high = self.schedule.noise_level_range
        uniform = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        return torch.exp(math.log(low) + uniform * (math.log(high) - math.log(low)))

    @can_return_tuple
    def forward(
        self,
        sample: torch.Tensor,
        sigma: torch.Tensor | float | None = None,
        timestep: torch.Tensor | float | None = None,
        noise: torch.Tensor | None = None,
        return_loss: bool = False,
        generator: torch.Generator | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ScoreSdeOutput:
        r"""The score and denoised estimate at `sample`, and optionally the denoising-score-matching loss.

        Args:
            sample (`torch.Tensor` of shape `(batch_size, *data_shape)`): x_t, the point the score is evaluated at;
                with `return_loss=True` the clean data x_0 instead, noised here as x_t = alpha_t x_0 + sigma_t z.
            sigma (`torch.Tensor` of shape `()` or `(batch_size,)`, *optional*): VE-form noise level (x = x_0 +
                sigma z, alpha = 1). Give `sigma` or `timestep`; with `return_loss=True` and neither, noise levels are
                drawn by `config.sigma_sampling`.
            timestep (`torch.Tensor` of shape `()` or `(batch_size,)`, *optional*): time t of the configured SDE.
            noise (`torch.Tensor` of shape `(batch_size, *data_shape)`, *optional*): z for the loss (drawn from
                `generator` when absent).
            return_loss: compute the loss, E ||sigma_t grad log p_t(x_t) + z||^2 (digest B3).
            generator: source of the training noise levels and of `noise`.
            output_hidden_states: also return the network's activations.
        """
        self._check_sample(sample)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        batch_size, ndim = sample.shape[0], sample.ndim
        if sigma is not None and timestep is not None:
            raise ValueError("Give `sigma` or `timestep`, not both.")
        # 1. the VE-form noise level sigma_hat = sigma_t / alpha_t and the scale alpha_t of every sample
        if timestep is not None:
            alpha, sigma_t = self.schedule.alpha_sigma(self._per_sample(timestep, "timestep", batch_size, sample))
            noise_level = sigma_t / alpha
        elif sigma is not None:
            noise_level = self._per_sample(sigma, "sigma", batch_size, sample)
            alpha = torch.ones_like(noise_level)
        elif return_loss:
            noise_level = self.sample_training_sigmas(batch_size, generator).to(sample.device)
            alpha = torch.ones_like(noise_level)
        else:
            raise ValueError("Give the noise level: `sigma` (VE form) or `timestep` (time of the configured SDE).")
        if not bool((noise_level > 0).all()):
            raise ValueError("The noise level (`sigma`, or sigma_t / alpha_t at `timestep`) must be > 0.")
        noise_level_ = append_dims(noise_level.to(sample.dtype), ndim)  # (B, 1, ...)
        alpha_ = append_dims(alpha.to(sample.dtype), ndim)
        # 2. with the loss: noise the clean sample, x_t / alpha_t = x_0 + sigma_hat z
        noisy_sample = None
        if return_loss:
            if noise is None:
                noise = torch.randn(sample.shape, generator=generator, dtype=sample.dtype).to(sample.device)
            elif noise.shape != sample.shape:
                raise ValueError(f"`noise` must have the shape of `sample` {tuple(sample.shape)}, got {noise.shape}.")
            scaled_sample = sample + noise_level_ * noise
            noisy_sample = alpha_ * scaled_sample
        else:
            scaled_sample = sample / alpha_
        # 3. the VE-form prediction; the score of p_t is the VE score divided by alpha_t
        score, denoised, hidden_states = self.predict(scaled_sample, noise_level.to(sample.dtype), output_hidden_states)
        loss = None
        if return_loss:
            # lambda(sigma) = sigma^2: ||sigma s + z||^2, summed over coordinates, averaged over the batch
            loss = (noise_level_ * score + noise).pow(2).flatten(1).sum(-1).mean()
        return ScoreSdeOutput(
            loss=loss,
            score=score / alpha_,
            denoised=denoised,
            noisy_sample=noisy_sample,
            sigma=noise_level.to(sample.dtype) if return_loss else None,
            hidden_states=hidden_states if output_hidden_states else None,
        )


class ScoreSdeModel(ScoreSdePreTrainedModel):
    r"""A score network s_theta(x, sigma) on points (MLP) or images (U-Net), with the `ncsn` (s = F / sigma) or `edm`
    (D = c_skip x + c_out F(c_in x, c_noise), s = (D - x) / sigma^2) output parameterisation. Both let the score grow
    like 1 / sigma as sigma -> 0, which digest B2.3 shows a model needs to put its samples on a manifold."""

    supports_gradient_checkpointing = True

    def __init__(self, config: ScoreSdeConfig):
        super().__init__(config)
        self.noise_embedding = ScoreSdeNoiseEmbedding(config)
        self.network = ScoreSdeMlp(config) if config.backbone == "mlp" else ScoreSdeUNet(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.network.input_projection if self.config.backbone == "mlp" else self.network.conv_in

    def predict(
        self, sample: torch.Tensor, sigma: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        sigma_ = append_dims(sigma, sample.ndim)  # (B, 1, ...)
        noise_embedding = self.noise_embedding(sigma.log() / 4)  # c_noise = ln(sigma) / 4, (B, E)
        if self.config.parameterization == "ncsn":
            output, hidden_states = self.network(sample, noise_embedding)
            score = output / sigma_  # s = F / sigma
            denoised = sample + sigma_ * output  # Tweedie: x + sigma^2 s
        else:
            sigma_data = self.config.sigma_data
            total = sigma_**2 + sigma_data**2
            c_in, c_out = total.rsqrt(), sigma_ * sigma_data * total.rsqrt()  # EDM Table 1
            output, hidden_states = self.network(c_in * sample, noise_embedding)
            denoised = (sigma_data**2 / total) * sample + c_out * output
            # (D - x) / sigma^2 without the cancellation: 1 - c_skip = sigma^2 / (sigma^2 + sigma_data^2)
            score = -sample / total + (sigma_data * total.rsqrt() / sigma_) * output
        return score, denoised, hidden_states if output_hidden_states else None


class EmpiricalScoreModel(ScoreSdePreTrainedModel):
    r"""The exact score of the Gaussian-smoothed empirical measure mu_N = (1/N) sum_i delta_{x_i} (digest B2.4, B3):

    s_N(x, sigma) = sum_i w_i (x_i - x) / sigma^2,  w = softmax_i(-||x - x_i||^2 / (2 sigma^2)),

    the minimiser of the DSM loss on the set; a sampler driven by it reproduces training points. The set is the
    buffer `training_points` `(N, *data_shape)`, saved in the checkpoint. Cost O(B N d) per call (one matmul, in
    float64 so that the squared distances stay exact at small sigma), memory O(B N). No trainable weights.
    """

    config_class = EmpiricalScoreConfig

    def __init__(self, config: EmpiricalScoreConfig):
        super().__init__(config)
        self.register_buffer("training_points", torch.zeros(config.num_training_points, *config.data_shape))
        self.post_init()

    # transformers reads these from the first parameter; this model has none
    @property
    def dtype(self) -> torch.dtype:
        return self.training_points.dtype

    @property
    def device(self) -> torch.device:
        return self.training_points.device

    @classmethod
    def from_training_points(
        cls, training_points: torch.Tensor, config: ScoreSdeConfig | None = None, **overrides: object
    ) -> EmpiricalScoreModel:
        """The empirical score of `training_points` `(N, d)` or `(N, C, S, S)`.

        Args:
            training_points: the finite set x_1..x_N.
            config: a config whose SDE fields are kept (e.g. the trained model's, to compare the two).
            overrides: other config fields.
        """
        if training_points.ndim == 2:
            shape = {"backbone": "mlp", "data_dim": training_points.shape[1]}
        elif training_points.ndim == 4 and training_points.shape[2] == training_points.shape[3]:
            shape = {
                "backbone": "unet",
                "num_channels": training_points.shape[1],
                "image_size": training_points.shape[2],
            }
        else:
            raise ValueError(
                f"`training_points` must have shape (N, d) or (N, C, S, S), got {tuple(training_points.shape)}."
            )
        fields = {} if config is None else config.to_dict()
        for name in ("model_type", "auto_map", "architectures", "transformers_version", "_name_or_path"):
            fields.pop(name, None)
        fields.update(shape, num_training_points=training_points.shape[0], **overrides)
        model = cls(EmpiricalScoreConfig(**fields))
        model.training_points.copy_(training_points.detach().to(model.training_points.dtype))
        return model.eval()

    def log_density(self, sample: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """log p_sigma(x) of mu_N * N(0, sigma^2 I) at `sample` `(B, *data_shape)`: `(B,)`, float64."""
        self._check_sample(sample)
        sigma = self._per_sample(sigma, "sigma", sample.shape[0], sample)[:, None]  # (B, 1)
        logits = -self._squared_distances(sample) / (2 * sigma**2)  # (B, N)
        num_points, dim = self.training_points.shape[0], self.config.num_features
        return (
            torch.logsumexp(logits, dim=-1)
            - math.log(num_points)
            - 0.5 * dim * torch.log(2 * math.pi * sigma[:, 0] ** 2)
        )

    def _squared_distances(self, sample: torch.Tensor) -> torch.Tensor:
        if self.training_points.shape[0] == 0:
            raise ValueError(
                "This EmpiricalScoreModel stores no training points; build it with "
                "`EmpiricalScoreModel.from_training_points(points)`."
            )
        points = self.training_points.flatten(1).to(torch.float64)  # (N, d)
        queries = sample.flatten(1).to(torch.float64)  # (B, d)
        squared = queries.pow(2).sum(-1, keepdim=True) - 2 * queries @ points.T + points.pow(2).sum(-1)  # (B, N)
        return squared.clamp_min(0)

    def predict(
        self, sample: torch.Tensor, sigma: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        variance = sigma.to(torch.float64)[:, None] ** 2  # (B, 1)
        weights = torch.softmax(-self._squared_distances(sample) / (2 * variance), dim=-1)  # (B, N)
        points = self.training_points.flatten(1).to(torch.float64)
        queries = sample.flatten(1).to(torch.float64)
        denoised = weights @ points  # (B, d): E[x_0 | x]
        score = (denoised - queries) / variance  # sum_i w_i (x_i - x) / sigma^2
        return score.to(sample.dtype).view_as(sample), denoised.to(sample.dtype).view_as(sample), None


__all__ = [
    "EmpiricalScoreModel",
    "ScoreSdeModel",
    "ScoreSdeOutput",
    "ScoreSdePreTrainedModel",
    "ScoreSdeSchedule",
    "append_dims",
]
