"""LPS-ResNet configuration.

Learnable Polyphase Sampling for Shift Invariant and Equivariant Convolutional Networks (Rojas-Gomez, Lim, Schwing,
Do, Yeh; NeurIPS 2022, arXiv 2210.08001). Official code: https://github.com/raymondyeh07/learnable_polyphase_sampling.

Defaults equal the paper's ImageNet ResNet-18 with LPS and circular padding ("lps-resnet18"); `from_preset` builds the
named sizes (ResNet-18/34/50, ImageNet or CIFAR stem) and a tiny one for tests and CPU demos.
"""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# Every Auto class a saved checkpoint opens as remote code (`trust_remote_code=True`); the processor carries its own.
AUTO_MAP = {
    "AutoConfig": "configuration_lps.LpsResNetConfig",
    "AutoModel": "modeling_lps.LpsResNetModel",
    "AutoModelForImageClassification": "modeling_lps.LpsResNetForImageClassification",
    "AutoModelForSemanticSegmentation": "modeling_lps.LpsForSemanticSegmentation",
}

DOWNSAMPLE_MODES = ("lps", "aps", "stride", "blurpool")
STEMS = ("imagenet", "cifar")
LAYER_TYPES = ("basic", "bottleneck")
PADDING_MODES = ("circular", "zeros", "reflect", "replicate")
DECODER_UPSAMPLE_MODES = ("lpu", "bilinear")
ANTIALIAS_MODES = ("binomial", "ddac")


@strict
class LpsResNetConfig(PreTrainedConfig):
    r"""Configuration of [`LpsResNetModel`] and its heads.

    A ResNet whose every stride-2 subsampling is a polyphase selection: the feature map is split into its 4 polyphase
    components and one is kept. With `downsample="lps"` a small circular CNN scores each component and the choice is
    learned through Gumbel-softmax; since the scores only permute when the input is shifted, the
    network is exactly invariant to circular shifts (with circular padding everywhere and input sizes divisible by the
    total stride).

    Args:
        num_channels (`int`, *optional*, defaults to 3): input channels.
        embedding_size (`int`, *optional*, defaults to 64): channels of the stem.
        hidden_sizes (`list[int]`, *optional*, defaults to `[64, 128, 256, 512]`): output channels of each stage.
        depths (`list[int]`, *optional*, defaults to `[2, 2, 2, 2]`): residual blocks per stage; every stage but the
            first halves the resolution in its first block.
        layer_type (`str`, *optional*, defaults to `"basic"`): `"basic"` (ResNet-18/34) or `"bottleneck"` (ResNet-50,
            expansion 4: `hidden_sizes` are the block outputs, the inner width is a quarter of them).
        stem (`str`, *optional*, defaults to `"imagenet"`): `"imagenet"` (conv7x7 stride 1, downsample, max-pool 2
            stride 1, downsample: total stride 32 with 4 stages) or `"cifar"` (conv3x3, no downsampling: stride 8).
        downsample (`str`, *optional*, defaults to `"lps"`): how every stride-2 step picks its samples: `"lps"`
            (learned polyphase scores), `"aps"` (the component of largest l2 norm, Chaman & Dokmanic 2021),
            `"stride"` (always component 0: a plain strided network), `"blurpool"` (binomial low-pass, then
            component 0: Zhang 2019).
        padding_mode (`str`, *optional*, defaults to `"circular"`): padding of every convolution, filter and the
            stem's max-pool. Exact shift invariance needs `"circular"`.
        gumbel_tau (`float`, *optional*, defaults to 1.0): initial Gumbel-softmax temperature; stored as the buffer
            `gumbel_tau` of every LPS layer, which `GumbelTemperatureCallback` anneals during training (the
            official step decay) and `model.set_gumbel_tau` sets by hand.
        straight_through (`bool`, *optional*, defaults to `False`): in training, use the hard one-hot Gumbel sample
            with the soft gradient (straight-through) instead of the paper's soft sample.
        logits_hidden_size (`int`, *optional*): width of the LPS scoring CNN; `None` uses the width of the scored
            feature map (the paper's default).
        lowpass_filter_size (`int`, *optional*, defaults to 0): size of the low-pass filter applied before LPS/APS
            selection (the paper's LPS + LPF and LPS + DDAC variants); 0 or 1 disables it.
        blurpool_filter_size (`int`, *optional*, defaults to 3): size of the filter of the `"blurpool"` baseline
            (with `antialias="ddac"`: the DDAC baseline of Zou et al. 2020, adaptive filter then plain subsampling).
        antialias (`str`, *optional*, defaults to `"binomial"`): kind of those filters: `"binomial"` (fixed
            depthwise binomial taps, Zhang 2019) or `"ddac"` (content-adaptive: a conv-BN-softmax predicts a
            `k x k` filter per pixel and channel group, Zou et al. 2020; odd sizes only; learned, so every
            filtered downsampling layer and its shortcut gets its own).
        antialias_groups (`int`, *optional*, defaults to 8): DDAC channel groups sharing one predicted filter (the
            official default); the channels of every filtered map must be divisible by it.
        hidden_act (`str`, *optional*, defaults to `"relu"`): activation.
        decoder_hidden_size (`int`, *optional*, defaults to 64): channels of the segmentation decoder.
        decoder_upsample (`str`, *optional*, defaults to `"lpu"`): `"lpu"` places features back at the phases the
            encoder chose (shift-equivariant) and `"bilinear"` is the usual (non-equivariant) baseline.
        semantic_loss_ignore_index (`int`, *optional*, defaults to 255): label ignored by the segmentation loss.
        initializer_range (`float`, *optional*, defaults to 0.02): std of the classifier's initialisation.
    """

    model_type = "lps_resnet"

    num_channels: int = 3
    embedding_size: int = 64
    hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 256, 512)
    depths: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    layer_type: str = "basic"
    stem: str = "imagenet"
    downsample: str = "lps"
    padding_mode: str = "circular"
    gumbel_tau: float = 1.0
    straight_through: bool = False
    logits_hidden_size: int | None = None
    lowpass_filter_size: int = 0
    blurpool_filter_size: int = 3
    antialias: str = "binomial"
    antialias_groups: int = 8
    hidden_act: str = "relu"
    decoder_hidden_size: int = 64
    decoder_upsample: str = "lpu"
    semantic_loss_ignore_index: int = 255
    initializer_range: float = 0.02

    # Named sizes: the paper's ResNets (ImageNet and CIFAR stems) and a tiny CIFAR-style one for tests and CPU demos.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "lps-resnet18": {},
        "lps-resnet34": {"depths": [3, 4, 6, 3]},
        "lps-resnet50": {"depths": [3, 4, 6, 3], "layer_type": "bottleneck", "hidden_sizes": [256, 512, 1024, 2048]},
        "lps-resnet18-cifar": {"stem": "cifar"},
        "lps-resnet18-tiny": {
            "stem": "cifar",
            "embedding_size": 8,
            "hidden_sizes": [8, 16, 16],
            "depths": [1, 1, 1],
            "decoder_hidden_size": 8,
        },
    }

    def __post_init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        self.hidden_sizes = list(self.hidden_sizes)  # JSON round-trips give lists; keep one type
        self.depths = list(self.depths)
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        choices = {
            "downsample": DOWNSAMPLE_MODES,
            "stem": STEMS,
            "layer_type": LAYER_TYPES,
            "padding_mode": PADDING_MODES,
            "decoder_upsample": DECODER_UPSAMPLE_MODES,
            "antialias": ANTIALIAS_MODES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")
        if len(self.hidden_sizes) != len(self.depths) or not self.depths:
            raise ValueError(
                f"`hidden_sizes` ({self.hidden_sizes}) and `depths` ({self.depths}) must be non-empty and of equal "
                "length."
            )
        if min(self.depths) < 1:
            raise ValueError(f"every stage needs at least one block, got `depths` = {self.depths}.")
        if not (0 <= self.lowpass_filter_size <= 7 and 1 <= self.blurpool_filter_size <= 7):
            raise ValueError(
                "binomial filter sizes must be at most 7 (`lowpass_filter_size` >= 0, `blurpool_filter_size` >= 1), "
                f"got {self.lowpass_filter_size} and {self.blurpool_filter_size}."
            )
        if self.antialias == "ddac" and (self.lowpass_filter_size > 1 and self.lowpass_filter_size % 2 == 0):
            raise ValueError(f"DDAC filters need an odd size, got `lowpass_filter_size` = {self.lowpass_filter_size}.")
        if self.antialias == "ddac" and self.downsample == "blurpool" and self.blurpool_filter_size % 2 == 0:
            raise ValueError(
                f"DDAC filters need an odd size, got `blurpool_filter_size` = {self.blurpool_filter_size}."
            )
        if self.antialias_groups < 1:
            raise ValueError(f"`antialias_groups` must be >= 1, got {self.antialias_groups}.")
        if self.gumbel_tau <= 0:
            raise ValueError(f"`gumbel_tau` must be > 0, got {self.gumbel_tau}.")

    @property
    def num_downsampling_layers(self) -> int:
        """Stride-2 steps: one per stage after the first, plus two in the ImageNet stem."""
        return len(self.depths) - 1 + (2 if self.stem == "imagenet" else 0)

    @property
    def total_stride(self) -> int:
        """Input height and width must be multiples of this for exact shift invariance."""
        return 2**self.num_downsampling_layers

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> LpsResNetConfig:
        """Build a named size (`lps-resnet18`, `-34`, `-50`, `lps-resnet18-cifar`, `lps-resnet18-tiny`)."""
        if name not in cls.PRESETS:
            raise ValueError(f"Unknown LPS preset {name!r}; expected one of {sorted(cls.PRESETS)}.")
        return cls(**{**cls.PRESETS[name], **overrides})


__all__ = ["LpsResNetConfig"]
