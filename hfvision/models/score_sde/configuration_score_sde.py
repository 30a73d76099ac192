"""Score-SDE configuration.

Score-Based Generative Models Detect Manifolds (J. Pidstrigach, NeurIPS 2022, arXiv 2206.01018), a theoretical paper
without official code; the forward SDEs are those of Song et al., Score-Based Generative Modeling through Stochastic
Differential Equations (ICLR 2021, https://github.com/yang-song/score_sde), and the `edm` preconditioning that of
Karras et al., Elucidating the Design Space of Diffusion-Based Generative Models (NeurIPS 2022).

One config holds the forward SDE (`ve`, `vp` or the paper's `ou`), the data shape (points in R^d or images), the score
network and its output parameterisation. The defaults are the digest's manifold-demo setting (a circle in R^10, VE
with sigma in [1e-3, 3], EDM preconditioning, a 4 x 256 MLP); `from_preset` builds the named sizes and tiny ones.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# Every Auto class a saved checkpoint opens as remote code (`trust_remote_code=True`).
AUTO_MAP = {
    "AutoConfig": "configuration_score_sde.ScoreSdeConfig",
    "AutoModel": "modeling_score_sde.ScoreSdeModel",
}
EMPIRICAL_AUTO_MAP = {
    "AutoConfig": "configuration_score_sde.EmpiricalScoreConfig",
    "AutoModel": "modeling_score_sde.EmpiricalScoreModel",
}

SDES = ("ve", "vp", "ou")
BACKBONES = ("mlp", "unet")
TIME_EMBEDDINGS = ("log_sigma", "fourier")
PARAMETERIZATIONS = ("ncsn", "edm")
SIGMA_SAMPLINGS = ("log_uniform", "log_normal")


@strict
class ScoreSdeConfig(PreTrainedConfig):
    r"""Configuration of [`ScoreSdeModel`] (a score network) and [`EmpiricalScoreModel`] (the exact score of a set).

    The forward process is x_t = alpha_t x_0 + sigma_t z with one of three SDEs:
    `ve` (dx = g dW, sigma_t = sigma_min (sigma_max / sigma_min)^(t/T), alpha_t = 1),
    `vp` (dx = -beta_t x / 2 dt + sqrt(beta_t) dW, beta linear from `beta_min` to `beta_max` over [0, T]) and
    `ou`, the paper's dx = -x dt + sqrt(2) dW (alpha_t = e^-t, sigma_t^2 = 1 - e^-2t).
    Every model is a denoiser of the variance-exploding form x = x_0 + sigma z: a model conditioned on the noise level
    sigma serves every SDE through sigma = sigma_t / alpha_t (see `ScoreSdeSchedule`).

    Args:
        sde (`str`, *optional*, defaults to `"ve"`): the forward SDE, `"ve"`, `"vp"` or `"ou"`.
        sigma_min (`float`, *optional*, defaults to 1e-3): smallest VE noise level (the digest's manifold demos;
            NCSN uses 0.01). Also the lower end of the training noise levels for `log_uniform` sampling.
        sigma_max (`float`, *optional*, defaults to 3.0): largest VE noise level, about the largest pairwise distance
            of the data (3 for the unit circle; 50 for CIFAR-10 in NCSN++).
        beta_min (`float`, *optional*, defaults to 0.1): VP beta at t = 0.
        beta_max (`float`, *optional*, defaults to 20.0): VP beta at t = T.
        horizon (`float`, *optional*, defaults to 1.0): end time T of the forward process. For `ou` it sets how close
            p_T is to N(0, I) (digest B2.1: it changes the output's weights, not its support); `ve` and `vp` run their
            schedules over [0, T].
        sampling_eps (`float`, *optional*, defaults to 1e-5): the time at which reverse sampling stops (Song's eps).
        data_dim (`int`, *optional*, defaults to 10): dimension d of point-cloud data (`backbone="mlp"`).
        image_size (`int`, *optional*, defaults to 32): height = width of image data (`backbone="unet"`).
        num_channels (`int`, *optional*, defaults to 3): channels of image data.
        backbone (`str`, *optional*, defaults to `"mlp"`): `"mlp"` for points `(B, data_dim)`, `"unet"` for images
            `(B, num_channels, image_size, image_size)`.
        hidden_size (`int`, *optional*, defaults to 256): MLP width.
        num_layers (`int`, *optional*, defaults to 4): residual MLP blocks.
        block_out_channels (`list[int]`, *optional*, defaults to `[32, 64]`): U-Net channels per resolution; each
            level after the first halves the resolution (`image_size` must be divisible by 2^(levels - 1)).
        layers_per_block (`int`, *optional*, defaults to 1): residual blocks per U-Net level.
        norm_num_groups (`int`, *optional*, defaults to 8): GroupNorm groups in the U-Net (divides every width).
        time_embedding (`str`, *optional*, defaults to `"log_sigma"`): how the noise level conditions the network:
            `"log_sigma"` (an MLP of c_noise = ln(sigma) / 4) or `"fourier"` (fixed random Fourier features of
            c_noise, as NCSN++'s Gaussian Fourier projection, then the MLP).
        time_embedding_size (`int`, *optional*, defaults to 64): width of the noise-level embedding.
        fourier_scale (`float`, *optional*, defaults to 16.0): std of the Fourier frequencies (NCSN++: 16).
        parameterization (`str`, *optional*, defaults to `"edm"`): `"ncsn"`, the score s = F(x, sigma) / sigma (the
            1/sigma output scale the paper's B2.3 asks for), or `"edm"`, D = c_skip x + c_out F(c_in x, c_noise) and
            s = (D - x) / sigma^2.
        sigma_data (`float`, *optional*, defaults to 0.5): data std assumed by the EDM preconditioning.
        sigma_sampling (`str`, *optional*, defaults to `"log_normal"`): training noise levels when `forward(...,
            return_loss=True)` is given none: `"log_uniform"` on the SDE's [sigma(eps), sigma(T)] or EDM's
            `"log_normal"` (ln sigma ~ N(p_mean, p_std^2)).
        p_mean (`float`, *optional*, defaults to -1.2): mean of ln sigma for `log_normal` (EDM).
        p_std (`float`, *optional*, defaults to 1.2): std of ln sigma for `log_normal` (EDM).
        hidden_act (`str`, *optional*, defaults to `"silu"`): activation.
        num_training_points (`int`, *optional*, defaults to 0): size N of the set an [`EmpiricalScoreModel`] stores
            (set by `EmpiricalScoreModel.from_training_points`).
        initializer_range (`float`, *optional*, defaults to 0.02): kept for transformers' generic init helpers; the
            layers use Xavier initialisation.
    """

    model_type = "score_sde"
    default_auto_map: ClassVar[dict[str, str]] = AUTO_MAP

    sde: str = "ve"
    sigma_min: float = 1e-3
    sigma_max: float = 3.0
    beta_min: float = 0.1
    beta_max: float = 20.0
    horizon: float = 1.0
    sampling_eps: float = 1e-5
    data_dim: int = 10
    image_size: int = 32
    num_channels: int = 3
    backbone: str = "mlp"
    hidden_size: int = 256
    num_layers: int = 4
    block_out_channels: list[int] | tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    time_embedding: str = "log_sigma"
    time_embedding_size: int = 64
    fourier_scale: float = 16.0
    parameterization: str = "edm"
    sigma_data: float = 0.5
    sigma_sampling: str = "log_normal"
    p_mean: float = -1.2
    p_std: float = 1.2
    hidden_act: str = "silu"
    num_training_points: int = 0
    initializer_range: float = 0.02

    # Named sizes: the digest's demos (B3/B5), a small image U-Net, and tiny ones for tests.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "score-sde-circle": {},  # circle in R^10, EDM, 4 x 256 (digest B5: median distance 9.4e-3)
        "score-sde-circle-ncsn": {"data_dim": 2, "num_layers": 3, "hidden_size": 128, "parameterization": "ncsn"},
        "score-sde-unet-32": {
            "backbone": "unet",
            "sigma_min": 0.01,
            "sigma_max": 50.0,
            "block_out_channels": [64, 128, 128],
            "layers_per_block": 2,
            "time_embedding": "fourier",
            "time_embedding_size": 128,
            "norm_num_groups": 32,
        },
        "score-sde-tiny": {"data_dim": 3, "hidden_size": 16, "num_layers": 2, "time_embedding_size": 8},
        "score-sde-unet-tiny": {
            "backbone": "unet",
            "image_size": 8,
            "num_channels": 1,
            "block_out_channels": [8, 16],
            "norm_num_groups": 4,
            "time_embedding": "fourier",
            "time_embedding_size": 8,
        },
    }

    def __post_init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("auto_map", dict(self.default_auto_map))
        self.block_out_channels = list(self.block_out_channels)  # JSON round-trips give lists; keep one type
        self.check_values()  # plain ValueErrors, before the strict validators wrap theirs
        super().__post_init__(**kwargs)

    def check_values(self) -> None:
        """Raise a `ValueError` naming the first field whose value is out of range."""
        choices = {
            "sde": SDES,
            "backbone": BACKBONES,
            "time_embedding": TIME_EMBEDDINGS,
            "parameterization": PARAMETERIZATIONS,
            "sigma_sampling": SIGMA_SAMPLINGS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"`sigma_min` must be > 0 and < `sigma_max`, got sigma_min={self.sigma_min}, "
                f"sigma_max={self.sigma_max}."
            )
        if not 0 < self.beta_min < self.beta_max:
            raise ValueError(
                f"`beta_min` must be > 0 and < `beta_max`, got beta_min={self.beta_min}, beta_max={self.beta_max}."
            )
        if not 0 < self.sampling_eps < self.horizon:
            raise ValueError(
                f"`sampling_eps` must be > 0 and < `horizon`, got sampling_eps={self.sampling_eps}, "
                f"horizon={self.horizon}."
            )
        positive = ("data_dim", "image_size", "num_channels", "hidden_size", "num_layers", "layers_per_block")
        for name in (*positive, "time_embedding_size", "norm_num_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        for name in ("sigma_data", "p_std", "fourier_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)}.")
        if self.num_training_points < 0:
            raise ValueError(f"`num_training_points` must be >= 0, got {self.num_training_points}.")
        if self.backbone == "unet":
            if not self.block_out_channels or min(self.block_out_channels) < 1:
                raise ValueError(f"`block_out_channels` must be non-empty and positive, got {self.block_out_channels}.")
            if any(channels % self.norm_num_groups for channels in self.block_out_channels):
                raise ValueError(
                    f"`norm_num_groups` ({self.norm_num_groups}) must divide every `block_out_channels` entry "
                    f"({self.block_out_channels})."
                )
            stride = 2 ** (len(self.block_out_channels) - 1)
            if self.image_size % stride:
                raise ValueError(f"`image_size` ({self.image_size}) must be divisible by {stride} (the U-Net stride).")

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one sample: `(data_dim,)` for points, `(num_channels, image_size, image_size)` for images."""
        if self.backbone == "mlp":
            return (self.data_dim,)
        return (self.num_channels, self.image_size, self.image_size)

    @property
    def num_features(self) -> int:
        """Number of coordinates d of one sample (the ambient dimension)."""
        return math.prod(self.data_shape)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ScoreSdeConfig:
        """Build a named size (`score-sde-circle`, `-circle-ncsn`, `-unet-32`, `-tiny`, `-unet-tiny`)."""
        if name not in cls.PRESETS:
            raise ValueError(f"Unknown Score-SDE preset {name!r}; expected one of {sorted(cls.PRESETS)}.")
        return cls(**{**cls.PRESETS[name], **overrides})


@strict
class EmpiricalScoreConfig(ScoreSdeConfig):
    r"""Configuration of [`EmpiricalScoreModel`]: the fields of [`ScoreSdeConfig`] (its SDE and data shape are used, its
    network fields are not), under its own `model_type` so that `AutoModel` opens an empirical-score checkpoint as
    [`EmpiricalScoreModel`]. `num_training_points` is the size N of the stored set.
    """

    model_type = "score_sde_empirical"
    default_auto_map: ClassVar[dict[str, str]] = EMPIRICAL_AUTO_MAP


__all__ = ["EmpiricalScoreConfig", "ScoreSdeConfig"]
