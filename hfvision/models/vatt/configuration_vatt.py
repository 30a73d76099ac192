"""VATT configuration.

VATT: Transformers for Multimodal Self-Supervised Learning from Raw Video, Audio and Text (Akbari et al., NeurIPS
2021, arXiv 2104.11178). Official code (TensorFlow): https://github.com/google-research/google-research/tree/master/vatt.

`VattConfig()` is the paper's modality-specific "BBS" model (video Base, audio Base, text Small) with the paper's
inputs: 32 frames at 224x224 cut into 4x16x16 tubelets (8 x 14 x 14 = 1568 video tokens), 3.2 s of raw 48 kHz
waveform cut into patches of 128 samples (1200 audio tokens), and up to 16 words. `VattConfig.from_preset` builds
the other named sizes (`vatt-mbs`, `vatt-lbs`, `vatt-ma-medium`) and a tiny one for tests.
"""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# Every Auto class a saved checkpoint opens as remote code (`trust_remote_code=True`); processors carry their own map.
AUTO_MAP = {
    "AutoConfig": "configuration_vatt.VattConfig",
    "AutoModel": "modeling_vatt.VattModel",
    "AutoModelForPreTraining": "modeling_vatt.VattForPreTraining",
    "AutoModelForVideoClassification": "modeling_vatt.VattForVideoClassification",
    "AutoModelForAudioClassification": "modeling_vatt.VattForAudioClassification",
}

# Transformer sizes of the paper (Table 7): layers, width, MLP width, heads; d_kv = width / heads = 64 everywhere.
TRANSFORMER_SIZES: dict[str, dict[str, int]] = {
    "small": {"num_hidden_layers": 6, "hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8},
    "base": {"num_hidden_layers": 12, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12},
    "medium": {"num_hidden_layers": 12, "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16},
    "large": {"num_hidden_layers": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16},
}
TINY_SIZE = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}


def _check_transformer(config: PreTrainedConfig) -> None:
    if config.hidden_size % config.num_attention_heads != 0:
        raise ValueError(
            f"`hidden_size` ({config.hidden_size}) must be a multiple of `num_attention_heads` "
            f"({config.num_attention_heads})."
        )
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if not 0.0 <= getattr(config, name) < 1.0:
            raise ValueError(f"`{name}` must be in [0, 1), got {getattr(config, name)}.")


@strict
class VattVideoConfig(PreTrainedConfig):
    r"""Video tower of VATT: a ViT over 3-D tubelets (the official `ViTx3D`).

    Args:
        num_frames (`int`, *optional*, defaults to 32): frames per clip at pretraining (10 fps in the paper).
        image_size (`int`, *optional*, defaults to 224): frame height and width.
        num_channels (`int`, *optional*, defaults to 3): RGB.
        tubelet_size (`list[int]`, *optional*, defaults to `[4, 16, 16]`): (time, height, width) of one token; the
            Conv3d patch embedding has this kernel and stride.
        hidden_size, intermediate_size, num_hidden_layers, num_attention_heads: transformer width, MLP width, depth
            and heads (defaults: Base, 12 x 768, MLP 3072, 12 heads).
        hidden_act (`str`, *optional*, defaults to `"gelu"`): MLP activation.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1): dropout on embeddings and residual branches.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.1): dropout on attention probabilities.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6): LayerNorm epsilon (official code).
        initializer_range (`float`, *optional*, defaults to 0.02): std of the linear layers' truncated normal init.
    """

    model_type = "vatt_video"
    base_config_key = "video_config"

    num_frames: int = 32
    image_size: int = 224
    num_channels: int = 3
    tubelet_size: list[int] | tuple[int, ...] = (4, 16, 16)
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        self.tubelet_size = list(self.tubelet_size)
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        _check_transformer(self)
        if len(self.tubelet_size) != 3 or min(self.tubelet_size) < 1:
            raise ValueError(
                f"`tubelet_size` must be three positive ints (time, height, width), got {self.tubelet_size}."
            )
        if (
            self.num_frames % self.tubelet_size[0]
            or self.image_size % self.tubelet_size[1]
            or (self.image_size % self.tubelet_size[2])
        ):
            raise ValueError(
                f"`num_frames` ({self.num_frames}) and `image_size` ({self.image_size}) must be multiples of "
                f"`tubelet_size` {self.tubelet_size}."
            )

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """Token grid (time, height, width) at the configured input size: (8, 14, 14) in the paper."""
        return (
            self.num_frames // self.tubelet_size[0],
            self.image_size // self.tubelet_size[1],
            self.image_size // self.tubelet_size[2],
        )

    @property
    def num_tokens(self) -> int:
        """Tokens per clip before DropToken: 1568 in the paper."""
        time, height, width = self.grid_size
        return time * height * width


@strict
class VattAudioConfig(PreTrainedConfig):
    r"""Audio tower of VATT: a transformer over patches of the raw waveform (the official `AuTx1D`).

    Args:
        sampling_rate (`int`, *optional*, defaults to 48000): waveform sampling rate (48 kHz at pretraining).
        num_samples (`int`, *optional*, defaults to 153600): samples per clip (3.2 s at 48 kHz).
        patch_size (`int`, *optional*, defaults to 128): samples per token; the Conv1d patch embedding has this kernel
            and stride (153600 / 128 = 1200 tokens).
        Other arguments as [`VattVideoConfig`] (defaults: Base).
    """

    model_type = "vatt_audio"
    base_config_key = "audio_config"

    sampling_rate: int = 48000
    num_samples: int = 153600
    patch_size: int = 128
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    def validate_architecture(self) -> None:
        _check_transformer(self)
        if self.num_samples % self.patch_size:
            raise ValueError(
                f"`num_samples` ({self.num_samples}) must be a multiple of `patch_size` ({self.patch_size})."
            )

    @property
    def num_tokens(self) -> int:
        """Tokens per clip before DropToken: 1200 in the paper."""
        return self.num_samples // self.patch_size


@strict
class VattTextConfig(PreTrainedConfig):
    r"""Text tower of VATT: word embeddings projected to the width, a T5-style encoder with relative position bias.

    Args:
        vocab_size (`int`, *optional*, defaults to 65536): word vocabulary (2^16 words in the paper); id 0 is padding.
        embedding_size (`int`, *optional*, defaults to 300): word-embedding size (word2vec's 300 in the paper), then a
            linear projection to `hidden_size`.
        freeze_word_embeddings (`bool`, *optional*, defaults to `False`): keep the word embeddings frozen (the paper
            freezes pretrained word2vec vectors; none ship offline, so they are trained here by default).
        max_position_embeddings (`int`, *optional*, defaults to 16): words per caption (longer captions are
            truncated by the tokenizer and rejected by the model).
        relative_attention_num_buckets (`int`, *optional*, defaults to 32): T5 relative-position buckets.
        relative_attention_max_distance (`int`, *optional*, defaults to 64): distance beyond which buckets saturate.
        Other arguments as [`VattVideoConfig`] (defaults: Small, 6 x 512, MLP 2048, 8 heads).
    """

    model_type = "vatt_text"
    base_config_key = "text_config"

    vocab_size: int = 2**16
    embedding_size: int = 300
    freeze_word_embeddings: bool = False
    max_position_embeddings: int = 16
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 64
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    def validate_architecture(self) -> None:
        _check_transformer(self)


@strict
class VattConfig(PreTrainedConfig):
    r"""Configuration of the VATT models ([`VattModel`], [`VattForPreTraining`], the classification heads).

    Pretraining (paper Sec. 3.3) aligns video with audio and video with text in two common spaces reached through
    the FAC heads (video -> va -> vt): L = w_va NCE(z_v,va, z_a,va) + w_vt MIL-NCE(z_v,vt, {z_t,vt}).

    Args:
        video_config, audio_config, text_config (`dict` or sub-config, *optional*): the three towers (defaults:
            video Base, audio Base, text Small = the paper's BBS).
        modality_agnostic (`bool`, *optional*, defaults to `False`): VATT-MA: one transformer (built from
            `video_config`'s sizes) shared by the three modalities, each with its own tokenizer, GELU pre-projection,
            position table, aggregation token and GELU post-projection to `post_projection_size`. The three
            sub-configs must then have equal transformer sizes.
        post_projection_size (`int`, *optional*, defaults to 1024): output width of VATT-MA's post-projections.
        d_va (`int`, *optional*, defaults to 512): size of the video-audio common space.
        d_vt (`int`, *optional*, defaults to 256): size of the video-text common space.
        temperature (`float`, *optional*, defaults to 0.07): fixed softmax temperature of both losses.
        video_audio_loss_weight (`float`, *optional*, defaults to 1.0): weight of the video-audio NCE.
        video_text_loss_weight (`float`, *optional*, defaults to 1.0): weight (lambda) of the video-text MIL-NCE.
        loss_type (`str`, *optional*, defaults to `"asymmetric"`): `"asymmetric"` is the official code's loss (for
            anchor i the positives over the union of its row and its column: minimum log 2); `"symmetric"` is the
            mean of the two directions (minimum 0).
        droptoken_rate (`float`, *optional*, defaults to 0.5): share of video and audio tokens DropToken removes during
            pretraining (the same random subset for the whole batch); evaluation and fine-tuning keep every token.
        batch_norm_momentum (`float`, *optional*, defaults to 0.1): momentum of the FAC video head's BatchNorms
            (PyTorch convention; TF's 0.9).
        batch_norm_eps (`float`, *optional*, defaults to 1e-5): their epsilon.
        classifier_dropout (`float`, *optional*, defaults to 0.5): dropout before the classification heads (official
            fine-tuning code).
        initializer_range (`float`, *optional*, defaults to 0.02): std of the heads' truncated normal init.
    """

    model_type = "vatt"
    sub_configs_defaults = {
        "video_config": VattVideoConfig,
        "audio_config": VattAudioConfig,
        "text_config": VattTextConfig,
    }

    video_config: dict | VattVideoConfig | None = None
    audio_config: dict | VattAudioConfig | None = None
    text_config: dict | VattTextConfig | None = None
    modality_agnostic: bool = False
    post_projection_size: int = 1024
    d_va: int = 512
    d_vt: int = 256
    temperature: float = 0.07
    video_audio_loss_weight: float = 1.0
    video_text_loss_weight: float = 1.0
    loss_type: str = "asymmetric"
    droptoken_rate: float = 0.5
    batch_norm_momentum: float = 0.1
    batch_norm_eps: float = 1e-5
    classifier_dropout: float = 0.5
    initializer_range: float = 0.02

    # Named models of the paper (Table 7 sizes) and tiny ones for tests and CPU runs.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "vatt-bbs": {},
        "vatt-mbs": {"video_config": TRANSFORMER_SIZES["medium"]},
        "vatt-lbs": {"video_config": TRANSFORMER_SIZES["large"]},
        "vatt-ma-medium": {
            "modality_agnostic": True,
            "video_config": TRANSFORMER_SIZES["medium"],
            "audio_config": TRANSFORMER_SIZES["medium"],
            "text_config": TRANSFORMER_SIZES["medium"],
        },
        "vatt-tiny": {
            "d_va": 24,
            "d_vt": 16,
            "video_config": {**TINY_SIZE, "num_frames": 4, "image_size": 16, "tubelet_size": [2, 8, 8]},
            "audio_config": {**TINY_SIZE, "sampling_rate": 8000, "num_samples": 320, "patch_size": 32},
            "text_config": {**TINY_SIZE, "vocab_size": 99, "embedding_size": 12, "max_position_embeddings": 8},
        },
        "vatt-ma-tiny": {
            "modality_agnostic": True,
            "post_projection_size": 40,
            "d_va": 24,
            "d_vt": 16,
            "video_config": {**TINY_SIZE, "num_frames": 4, "image_size": 16, "tubelet_size": [2, 8, 8]},
            "audio_config": {**TINY_SIZE, "sampling_rate": 8000, "num_samples": 320, "patch_size": 32},
            "text_config": {**TINY_SIZE, "vocab_size": 99, "embedding_size": 12, "max_position_embeddings": 8},
        },
    }

    def __post_init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        if not 0.0 <= self.droptoken_rate < 1.0:
            raise ValueError(f"`droptoken_rate` must be in [0, 1), got {self.droptoken_rate}.")
        if self.temperature <= 0:
            raise ValueError(f"`temperature` must be > 0, got {self.temperature}.")
        if self.loss_type not in ("asymmetric", "symmetric"):
            raise ValueError(f"`loss_type` must be 'asymmetric' or 'symmetric', got {self.loss_type!r}.")
        if min(self.video_audio_loss_weight, self.video_text_loss_weight) < 0:
            raise ValueError("`video_audio_loss_weight` and `video_text_loss_weight` must be >= 0.")
        if self.modality_agnostic and isinstance(self.video_config, PreTrainedConfig):
            keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
            sizes = {
                name: tuple(getattr(getattr(self, name), key) for key in keys)
                for name in ("video_config", "audio_config", "text_config")
                if isinstance(getattr(self, name), PreTrainedConfig)
            }
            if len(set(sizes.values())) > 1:
                raise ValueError(
                    f"`modality_agnostic=True` shares one transformer, so the sub-configs' {keys} must be equal; got "
                    f"{sizes}."
                )

    @property
    def num_frames(self) -> int:
        """Frames per clip (read by transformers' video-classification pipeline)."""
        return self.video_config.num_frames

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> VattConfig:
        """Build a named model (`vatt-bbs`, `vatt-mbs`, `vatt-lbs`, `vatt-ma-medium`, `vatt-tiny`, `vatt-ma-tiny`);
        kwargs override it (a sub-config dict is merged into the preset's)."""
        if name not in cls.PRESETS:
            raise ValueError(f"Unknown VATT preset {name!r}; expected one of {sorted(cls.PRESETS)}.")
        preset = {key: dict(value) if isinstance(value, dict) else value for key, value in cls.PRESETS[name].items()}
        for key in ("video_config", "audio_config", "text_config"):
            if isinstance(overrides.get(key), dict):
                preset[key] = {**preset.get(key, {}), **overrides.pop(key)}
        return cls(**{**preset, **overrides})


__all__ = ["TRANSFORMER_SIZES", "VattAudioConfig", "VattConfig", "VattTextConfig", "VattVideoConfig"]
