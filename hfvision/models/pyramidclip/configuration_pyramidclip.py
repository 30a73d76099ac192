"""PyramidCLIP configuration.

PyramidCLIP: Hierarchical Feature Alignment for Vision-language Model Pretraining (Gao et al., NeurIPS 2022,
arXiv 2204.14095). Official (inference-only) code: https://github.com/Yuting-Gao/PyramidCLIP.

Defaults equal the paper's ViT-B/16 model ("pyramidclip-base"); `PyramidClipConfig.from_preset` builds the named sizes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# Every Auto class a saved checkpoint opens as remote code (`trust_remote_code=True`); processors carry their own map.
AUTO_MAP = {
    "AutoConfig": "configuration_pyramidclip.PyramidClipConfig",
    "AutoModel": "modeling_pyramidclip.PyramidClipModel",
    "AutoModelForZeroShotImageClassification": "modeling_pyramidclip.PyramidClipModel",
    "AutoModelForImageClassification": "modeling_pyramidclip.PyramidClipForImageClassification",
}

# Values of `PyramidClipConfig.objective`: the paper's pyramid loss, and the multi-caption CLIP ablation.
OBJECTIVES = ("pyramid", "multi_caption")


@strict
class PyramidClipTextConfig(PreTrainedConfig):
    r"""Text tower of PyramidCLIP: CLIP's causal transformer, features max-pooled over tokens.

    Args:
        vocab_size (`int`, *optional*, defaults to 49408): CLIP BPE vocabulary size.
        hidden_size (`int`, *optional*, defaults to 512): width of the text transformer.
        intermediate_size (`int`, *optional*, defaults to 2048): MLP width.
        num_hidden_layers (`int`, *optional*, defaults to 12): transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 8): attention heads.
        max_position_embeddings (`int`, *optional*, defaults to 77): context length; longer texts are truncated by
            the processor and rejected by the model.
        hidden_act (`str`, *optional*, defaults to `"quick_gelu"`): MLP activation.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5): LayerNorm epsilon.
        attention_dropout (`float`, *optional*, defaults to 0.0): dropout on attention probabilities.
        initializer_range (`float`, *optional*, defaults to 0.02): std of embedding initialisation.
        initializer_factor (`float`, *optional*, defaults to 1.0): scale on every initialisation std (as CLIP).
    """

    model_type = "pyramidclip_text_model"
    base_config_key = "text_config"

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0

    def validate_architecture(self) -> None:
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be a multiple of `num_attention_heads` "
                f"({self.num_attention_heads})."
            )


@strict
class PyramidClipVisionConfig(PreTrainedConfig):
    r"""Vision tower of PyramidCLIP: a CLIP ViT whose first blocks use a LeFF MLP, plus the ROI branch.

    Args:
        hidden_size, intermediate_size, num_hidden_layers, num_attention_heads: ViT width, MLP width, depth, heads.
        num_channels (`int`, *optional*, defaults to 3): input channels.
        image_size (`int`, *optional*, defaults to 224): input resolution (square).
        patch_size (`int`, *optional*, defaults to 16): patch size of the (frozen) patch embedding.
        hidden_act (`str`, *optional*, defaults to `"quick_gelu"`): activation in MLPs and LeFF.
        layer_norm_eps, attention_dropout, initializer_range, initializer_factor: as in CLIP.
        num_leff_layers (`int`, *optional*, defaults to 9): the first `num_leff_layers` blocks replace the MLP by a
            locally-enhanced feed-forward (Linear-BN-act, depthwise 3x3 conv-BN-act, Linear-BN-act) on patch tokens
            (official code; CeiT's LeFF).
        freeze_patch_embedding (`bool`, *optional*, defaults to `True`): keep the patch-embedding conv frozen (the
            MoCo-v3 trick the official code uses).
        roi_feature_dim (`int`, *optional*, defaults to 2052): size of one region feature of the ROI sequence
            (2048-d detector feature + 4 box coordinates in the paper).
        num_roi_layers (`int`, *optional*, defaults to 3): the ROI sequence runs through the last `num_roi_layers`
            vision blocks (shared weights); they must be plain-MLP blocks.
    """

    model_type = "pyramidclip_vision_model"
    base_config_key = "vision_config"

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 16
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    num_leff_layers: int = 9
    freeze_patch_embedding: bool = True
    roi_feature_dim: int = 2052
    num_roi_layers: int = 3

    def validate_architecture(self) -> None:
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be a multiple of `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"`image_size` ({self.image_size}) must be a multiple of `patch_size` ({self.patch_size})."
            )
        if self.num_leff_layers + self.num_roi_layers > self.num_hidden_layers:
            raise ValueError(
                f"`num_leff_layers` ({self.num_leff_layers}) + `num_roi_layers` ({self.num_roi_layers}) must not "
                f"exceed `num_hidden_layers` ({self.num_hidden_layers}): the ROI branch reuses plain-MLP blocks only."
            )


@strict
class PyramidClipConfig(PreTrainedConfig):
    r"""Configuration of [`PyramidClipModel`].

    The objective (paper Sec. 3) aligns a visual pyramid (global view G, local view L, ROI sequence R) with a
    linguistic pyramid (summary S, original caption T, object-attribute text A):

        L = (1 - lambda - mu) (L_GS + L_LT) / 2 + lambda (L_GA + L_RS) / 2 + mu (L_LA + L_RT) / 2

    where each L_XY is a symmetric InfoNCE whose negatives are softened: the target puts `1 - alpha` on the positive
    and `alpha / (N - 1)` on each of the N - 1 negatives.

    Args:
        text_config (`dict` or [`PyramidClipTextConfig`], *optional*): text tower.
        vision_config (`dict` or [`PyramidClipVisionConfig`], *optional*): vision tower.
        projection_dim (`int`, *optional*, defaults to 512): joint embedding dimension.
        logit_scale_init_value (`float`, *optional*, defaults to 2.6592): initial log of the inverse temperature,
            ln(1 / 0.07) as in CLIP; learnable.
        softening_alpha (`float`, *optional*, defaults to 0.2): negative-softening factor alpha; 0 gives plain InfoNCE.
        objective (`str`, *optional*, defaults to `"pyramid"`): the loss `PyramidClipModel` trains with when given
            more than the image-caption pair. `"pyramid"`: the objective above, over the whole pyramid (local view,
            regions, summary and attribute text). `"multi_caption"`: an ablation, not the paper's method (CLIP with
            the summary and attribute text as extra captions): the global view against each of T, S and A, one
            (softened) InfoNCE each, averaged: L = (L_GT + L_GS + L_GA) / 3; the local view and regions are unused.
        cross_level_global_weight (`float`, *optional*, defaults to 1/3): lambda, weight of the global cross-level
            relation terms (L_GA, L_RS).
        cross_level_local_weight (`float`, *optional*, defaults to 1/3): mu, weight of the local cross-level terms
            (L_LA, L_RT). The peer-level terms (L_GS, L_LT) get `1 - lambda - mu`.
        initializer_factor (`float`, *optional*, defaults to 1.0): scale on initialisation stds.
    """

    model_type = "pyramidclip"
    sub_configs_defaults = {"text_config": PyramidClipTextConfig, "vision_config": PyramidClipVisionConfig}

    text_config: dict | PyramidClipTextConfig | None = None
    vision_config: dict | PyramidClipVisionConfig | None = None
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    softening_alpha: float = 0.2
    objective: str = "pyramid"
    cross_level_global_weight: float = 1 / 3
    cross_level_local_weight: float = 1 / 3
    initializer_factor: float = 1.0

    # Named sizes: the paper's ViT-B/32 and ViT-B/16 (= base) and a tiny one for tests and CPU demos.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "pyramidclip-base": {},
        "pyramidclip-vit-b-32": {"vision_config": {"patch_size": 32}},
        "pyramidclip-tiny": {
            "projection_dim": 32,
            "text_config": {
                "vocab_size": 49408,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "max_position_embeddings": 77,
            },
            "vision_config": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 3,
                "num_attention_heads": 2,
                "image_size": 32,
                "patch_size": 8,
                "num_leff_layers": 2,
                "num_roi_layers": 1,
                "roi_feature_dim": 52,
            },
        },
    }

    def __post_init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        if not 0.0 <= self.softening_alpha < 1.0:
            raise ValueError(f"`softening_alpha` must be in [0, 1), got {self.softening_alpha}.")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"`objective` must be one of {OBJECTIVES}, got {self.objective!r}.")
        weights = (self.cross_level_global_weight, self.cross_level_local_weight)
        if min(weights) < 0 or sum(weights) > 1:
            raise ValueError(
                "`cross_level_global_weight` and `cross_level_local_weight` must be >= 0 and sum to at most 1 "
                f"(the peer-level weight is 1 minus their sum); got {weights}."
            )

    @property
    def peer_level_weight(self) -> float:
        """Weight of the peer-level terms L_GS and L_LT: 1 - lambda - mu."""
        return 1.0 - self.cross_level_global_weight - self.cross_level_local_weight

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PyramidClipConfig:
        """Build a named size (`pyramidclip-base`, `pyramidclip-vit-b-32`, `pyramidclip-tiny`); kwargs override it."""
        if name not in cls.PRESETS:
            raise ValueError(f"Unknown PyramidCLIP preset {name!r}; expected one of {sorted(cls.PRESETS)}.")
        preset = {key: dict(value) if isinstance(value, dict) else value for key, value in cls.PRESETS[name].items()}
        for key in ("text_config", "vision_config"):
            if isinstance(overrides.get(key), dict):
                preset[key] = {**preset.get(key, {}), **overrides.pop(key)}
        return cls(**{**preset, **overrides})


__all__ = ["PyramidClipConfig", "PyramidClipTextConfig", "PyramidClipVisionConfig"]
