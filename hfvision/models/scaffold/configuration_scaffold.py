"""Configurations of Learning to Scaffold (SMaT): the ViT that exposes its attention scores, and the explainers.

Learning to Scaffold: Optimizing Model Explanations for Teaching (Fernandes, Treviso, Pruthi, Martins, Neubig;
NeurIPS 2022, arXiv 2204.10810). Official code (JAX): https://github.com/CoderPat/learning-scaffold.

`ScaffoldVitConfig` is transformers' `ViTConfig` plus the classifier pooling of the official code (a ScalarMix of the
token-mean of every hidden state); `AttentionExplainerConfig` holds the head-mixing explainer's options (layer/head
restriction, head normaliser, row aggregation, initialisation) and the static gradient baselines' options.
"""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig, ViTConfig

# Every Auto class a saved checkpoint opens as remote code (`trust_remote_code=True`).
AUTO_MAP = {
    "AutoConfig": "configuration_scaffold.ScaffoldVitConfig",
    "AutoModel": "modeling_scaffold.ScaffoldVitModel",
    "AutoModelForImageClassification": "modeling_scaffold.ScaffoldVitForImageClassification",
}
EXPLAINER_AUTO_MAP = {
    "AutoConfig": "configuration_scaffold.AttentionExplainerConfig",
    "AutoModel": "modeling_scaffold.AttentionExplainer",
}

POOLINGS = ("scalar_mix_mean", "cls")
HEAD_NORMALIZERS = ("sparsemax", "softmax", "entmax15", "none")
GRADIENT_METHODS = ("grad_norm", "grad_x_input", "integrated_gradients")


@strict
class ScaffoldVitConfig(ViTConfig):
    r"""transformers' `ViTConfig` (every ViT field, same defaults: ViT-B/16 at 224 px) plus the SMaT classifier pooling.

    Args:
        pooling (`str`, *optional*, defaults to `"scalar_mix_mean"`): what feeds the linear classifier.
            `"scalar_mix_mean"` (the official code, for teacher and student): every hidden state (the embedding output
            and each layer's output, before the final LayerNorm) is mean-pooled over tokens, the L + 1 means are mixed
            with softmax weights (zero-initialised) and scaled by a learned `gamma` (one-initialised).
            `"cls"`: the final-LayerNorm CLS token, as `ViTForImageClassification`.
        Other arguments: those of [`ViTConfig`] (`hidden_size`, `num_hidden_layers`, `num_attention_heads`,
            `image_size`, `patch_size`, `num_channels`, ...).
    """

    model_type = "scaffold_vit"

    pooling: str = "scalar_mix_mean"

    # The paper's ViT-B/16 (`google/vit-base-patch16-224-in21k`), the digest's CPU digits model and a test size.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "scaffold-vit-base": {},
        "scaffold-vit-digits": {
            "image_size": 8,
            "patch_size": 2,
            "num_channels": 1,
            "hidden_size": 64,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "layer_norm_eps": 1e-6,
            "num_labels": 10,
        },
        "scaffold-vit-tiny": {
            "image_size": 8,
            "patch_size": 4,
            "num_channels": 1,
            "hidden_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 32,
        },
    }

    def __post_init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {POOLINGS}, got {self.pooling!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be a multiple of `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        for name in ("image_size", "patch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int (square images and patches), got {value!r}.")
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"`image_size` ({self.image_size}) must be a multiple of `patch_size` ({self.patch_size})."
            )

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Patches per side `(image_size / patch_size,) * 2`."""
        side = self.image_size // self.patch_size
        return (side, side)

    @property
    def num_tokens(self) -> int:
        """Tokens per image: the CLS token plus one per patch (197 for ViT-B/16 at 224 px)."""
        return 1 + self.patch_grid[0] * self.patch_grid[1]

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ScaffoldVitConfig:
        """Build a named size (`scaffold-vit-base`, `scaffold-vit-digits`, `scaffold-vit-tiny`); kwargs override it."""
        if name not in cls.PRESETS:
            raise ValueError(f"Unknown Scaffold ViT preset {name!r}; expected one of {sorted(cls.PRESETS)}.")
        return cls(**{**cls.PRESETS[name], **overrides})


@strict
class AttentionExplainerConfig(PreTrainedConfig):
    r"""Configuration of the parameterised attention explainer (SMaT's teacher and student explainers).

    The explanation of an input with pre-softmax attention scores `A^{lh}` `(T, T)` is
    `softmax_j( sum_{lh} lambda_{lh} * mean_i A^{lh}_{ij} )` with `lambda = head_normalizer(head_coeffs)`.

    Args:
        num_hidden_layers (`int`, *optional*, defaults to 12): layers of the explained model.
        num_attention_heads (`int`, *optional*, defaults to 12): heads per layer of the explained model.
        layer_idx (`int`, *optional*): use only this layer's heads (negative counts from the end; -1 is the paper's
            "last layer" baseline). `None` mixes the heads of every layer (`L * H` coefficients).
        head_idx (`int`, *optional*): use only this head (an index into the selected heads); the coefficients are
            then unused.
        head_normalizer (`str`, *optional*, defaults to `"sparsemax"`): maps the coefficients to head weights:
            `"sparsemax"` (paper), `"softmax"`, `"entmax15"` or `"none"` (raw coefficients), as ablated in the paper.
        aggregator (`str` or `int`, *optional*, defaults to `"mean"`): how the `T` query rows are reduced: `"mean"`
            (masked mean, paper) or a row index (e.g. 0 for the CLS row).
        init (`str`, *optional*, defaults to `"uniform"`): coefficient initialisation: `"uniform"` (1 / n, so the
            head weights start uniform), `"lecun_normal"` or `"head_<k>"` (all weight on head k).
        patch_grid (`list[int]`, *optional*, defaults to `[14, 14]`): patch rows and columns, to reshape the patch
            part of an explanation into a saliency map.
        num_prefix_tokens (`int`, *optional*, defaults to 1): leading non-patch tokens (the CLS token); they stay in
            the distribution and are dropped only from the saliency map.
        initializer_range (`float`, *optional*, defaults to 0.02): unused by the uniform init; kept for tooling.
    """

    model_type = "scaffold_attention_explainer"

    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    layer_idx: int | None = None
    head_idx: int | None = None
    head_normalizer: str = "sparsemax"
    aggregator: str | int = "mean"
    init: str = "uniform"
    patch_grid: list[int] | tuple[int, ...] = (14, 14)
    num_prefix_tokens: int = 1
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        self.patch_grid = list(self.patch_grid)  # JSON gives lists back; keep lists so configs round-trip equal
        kwargs.setdefault("auto_map", dict(EXPLAINER_AUTO_MAP))
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        if self.num_hidden_layers < 1 or self.num_attention_heads < 1:
            raise ValueError(
                "`num_hidden_layers` and `num_attention_heads` must be >= 1, got "
                f"{self.num_hidden_layers} and {self.num_attention_heads}."
            )
        if self.layer_idx is not None and not -self.num_hidden_layers <= self.layer_idx < self.num_hidden_layers:
            raise ValueError(
                f"`layer_idx` must be in [-{self.num_hidden_layers}, {self.num_hidden_layers}), got {self.layer_idx}."
            )
        if self.head_idx is not None and not 0 <= self.head_idx < self.num_coefficients:
            raise ValueError(f"`head_idx` must be in [0, {self.num_coefficients}), got {self.head_idx}.")
        if self.head_normalizer not in HEAD_NORMALIZERS:
            raise ValueError(f"`head_normalizer` must be one of {HEAD_NORMALIZERS}, got {self.head_normalizer!r}.")
        if not (self.aggregator == "mean" or (isinstance(self.aggregator, int) and self.aggregator >= 0)):
            raise ValueError(f"`aggregator` must be 'mean' or a row index >= 0, got {self.aggregator!r}.")
        valid_init = self.init in ("uniform", "lecun_normal") or (
            self.init.startswith("head_") and self.init[5:].isdigit() and int(self.init[5:]) < self.num_coefficients
        )
        if not valid_init:
            raise ValueError(
                f"`init` must be 'uniform', 'lecun_normal' or 'head_<k>' with k < {self.num_coefficients}, "
                f"got {self.init!r}."
            )
        if len(self.patch_grid) != 2 or min(self.patch_grid) < 1:
            raise ValueError(f"`patch_grid` must be [rows, columns] >= 1, got {self.patch_grid}.")
        if self.num_prefix_tokens < 0:
            raise ValueError(f"`num_prefix_tokens` must be >= 0, got {self.num_prefix_tokens}.")

    @property
    def num_coefficients(self) -> int:
        """Length of the head-coefficient vector: `L * H`, or `H` with `layer_idx`."""
        return self.num_attention_heads * (1 if self.layer_idx is not None else self.num_hidden_layers)

    @classmethod
    def for_model(cls, model_config: ScaffoldVitConfig, **overrides: Any) -> AttentionExplainerConfig:
        """The explainer config matching a [`ScaffoldVitConfig`] (layers, heads, patch grid); kwargs override it."""
        return cls(
            **{
                "num_hidden_layers": model_config.num_hidden_layers,
                "num_attention_heads": model_config.num_attention_heads,
                "patch_grid": list(model_config.patch_grid),
                **overrides,
            }
        )


__all__ = ["AttentionExplainerConfig", "ScaffoldVitConfig"]
