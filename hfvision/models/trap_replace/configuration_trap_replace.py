"""Trap and Replace configuration.

Trap and Replace: Defending Backdoor Attacks by Trapping Them into an Easy-to-Replace Subnetwork (Wang, Hong, Zhang,
Zhou, Wang; NeurIPS 2022, arXiv 2210.06428). Official code: https://github.com/VITA-Group/Trap-and-Replace-Backdoor-Defense.

Defaults equal the paper's CIFAR-10 / GTSRB network: a WRN-16-1 whose stem ends after residual block 5 of 6, a
two-layer transposed-convolution decoder, reconstruction weight 10 and total-variation weight 1
(`trap-replace-wrn-16-1`). `from_preset` also builds the ImageNet-12 ResNet-34 and a tiny network for tests.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# Every Auto class a saved checkpoint opens as remote code (`trust_remote_code=True`); the processor carries its own.
AUTO_MAP = {
    "AutoConfig": "configuration_trap_replace.TrapReplaceConfig",
    "AutoModel": "modeling_trap_replace.TrapReplaceModel",
    "AutoModelForImageClassification": "modeling_trap_replace.TrapReplaceForImageClassification",
}

BACKBONES = ("wide_resnet", "resnet")
DECODER_ACTIVATIONS = ("relu", "instance_norm_relu", "none")


@strict
class TrapReplaceConfig(PreTrainedConfig):
    r"""Configuration of [`TrapReplaceModel`] (the stem) and [`TrapReplaceForImageClassification`].

    The backbone's residual blocks are numbered 1..`sum(depths)`; the *stem* is the input convolution and blocks
    1..`stem_end_block`, the *head* the remaining blocks, a final normalisation (pre-activation networks), global
    average pooling and a linear classifier. Stage 1 trains the stem with a small *trap* head and an image decoder;
    `replace_head` swaps the trap head for a freshly initialised one (stage 2) and freezes the stem.

    Args:
        num_channels (`int`, *optional*, defaults to 3): input channels (1 for grayscale data).
        backbone (`str`, *optional*, defaults to `"wide_resnet"`): `"wide_resnet"` (pre-activation blocks, a 3x3
            input conv, LeakyReLU; the official WRN including its quirk that a block changing the width feeds its
            first conv and shortcut the *raw* input) or `"resnet"` (torchvision's post-activation BasicBlock, a 7x7
            stride-2 input conv and max-pool, ReLU).
        embedding_size (`int`, *optional*, defaults to 16): channels of the input convolution.
        hidden_sizes (`list[int]`, *optional*, defaults to `[16, 32, 64]`): output channels of each group of blocks;
            every group but the first halves the resolution in its first block.
        depths (`list[int]`, *optional*, defaults to `[2, 2, 2]`): blocks per group (WRN-16: 2 per group).
        stem_end_block (`int`, *optional*, defaults to 5): the last block (1-based) inside the stem; the paper's
            default 5 leaves one block in the trap head. `sum(depths)` leaves only the final norm and the classifier.
        negative_slope (`float`, *optional*, defaults to 0.1): LeakyReLU slope (0 is a ReLU, the ResNet's).
        decoder_hidden_sizes (`list[int]`, *optional*, defaults to `[32]`): output channels of every transposed
            convolution of the decoder but the last (which outputs `num_channels`).
        decoder_strides (`list[int]`, *optional*, defaults to `[2, 2]`): stride of each transposed convolution
            (2: kernel 4, padding 1, doubles the size; 1: kernel 3, padding 1). Their product must equal the stem's
            stride, so the reconstruction has the input's size.
        decoder_activations (`list[str]`, *optional*, defaults to `["relu"]`): what follows each transposed
            convolution but the last: `"relu"`, `"instance_norm_relu"` (the ImageNet decoder) or `"none"`. The last
            one is followed by a sigmoid: reconstructions lie in [0, 1].
        reconstruction_weight (`float`, *optional*, defaults to 10.0): lambda, the weight of the MSE between the
            reconstruction and the (de-normalised) input. 0 is the paper's "no bait" ablation.
        tv_weight (`float`, *optional*, defaults to 1.0): mu, the weight of the reconstruction's total variation.
        head_dropout (`float`, *optional*, defaults to 0.5): dropout inside the blocks of the replacement head
            (stage 2); the trap head has none.
        head_replaced (`bool`, *optional*, defaults to `False`): `True` after `replace_head`: the model has the
            replacement head, no trap head and no decoder, and its stem is frozen (parameters and normalisation
            statistics; the stem stays in eval mode under `model.train()`).
        image_mean (`list[float]`, *optional*): the normalisation the image processor applied, if any, so the
            reconstruction target is the de-normalised image in [0, 1]. `None` (the CIFAR recipe: no normalisation)
            uses the pixels as they are.
        image_std (`list[float]`, *optional*): see `image_mean`.
    """

    model_type = "trap_replace"

    num_channels: int = 3
    backbone: str = "wide_resnet"
    embedding_size: int = 16
    hidden_sizes: list[int] | tuple[int, ...] = (16, 32, 64)
    depths: list[int] | tuple[int, ...] = (2, 2, 2)
    stem_end_block: int = 5
    negative_slope: float = 0.1
    decoder_hidden_sizes: list[int] | tuple[int, ...] = (32,)
    decoder_strides: list[int] | tuple[int, ...] = (2, 2)
    decoder_activations: list[str] | tuple[str, ...] = ("relu",)
    reconstruction_weight: float = 10.0
    tv_weight: float = 1.0
    head_dropout: float = 0.5
    head_replaced: bool = False
    image_mean: list[float] | tuple[float, ...] | None = None
    image_std: list[float] | tuple[float, ...] | None = None

    # Named sizes: the paper's two networks and a tiny one for tests and CPU demos.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "trap-replace-wrn-16-1": {},
        # ImageNet-12: ResNet-34, stem up to layer4[1] (the official `stem_end_block=31` counts layers differently:
        # here blocks are counted, 3 + 4 + 6 + 2 = 15), five stride-2 transposed convs from 7x7 back to 224x224.
        "trap-replace-resnet34": {
            "backbone": "resnet",
            "embedding_size": 64,
            "hidden_sizes": [64, 128, 256, 512],
            "depths": [3, 4, 6, 3],
            "stem_end_block": 15,
            "negative_slope": 0.0,
            "decoder_hidden_sizes": [256, 128, 64, 32],
            "decoder_strides": [2, 2, 2, 2, 2],
            "decoder_activations": ["none", "instance_norm_relu", "none", "instance_norm_relu"],
            "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225],
        },
        "trap-replace-tiny": {
            "embedding_size": 4,
            "hidden_sizes": [4, 8, 16],
            "depths": [1, 1, 1],
            "stem_end_block": 2,
            "decoder_hidden_sizes": [4],
            "decoder_strides": [2, 1],
        },
    }

    def __post_init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        # JSON round-trips give lists; keep one type
        self.hidden_sizes = list(self.hidden_sizes)
        self.depths = list(self.depths)
        self.decoder_hidden_sizes = list(self.decoder_hidden_sizes)
        self.decoder_strides = list(self.decoder_strides)
        self.decoder_activations = list(self.decoder_activations)
        self.image_mean = None if self.image_mean is None else list(self.image_mean)
        self.image_std = None if self.image_std is None else list(self.image_std)
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"`backbone` must be one of {BACKBONES}, got {self.backbone!r}.")
        if self.num_channels < 1 or self.embedding_size < 1:
            raise ValueError(
                f"`num_channels` and `embedding_size` must be >= 1, got {self.num_channels} and {self.embedding_size}."
            )
        if not self.depths or len(self.hidden_sizes) != len(self.depths) or min(self.depths) < 1:
            raise ValueError(
                f"`hidden_sizes` ({self.hidden_sizes}) and `depths` ({self.depths}) must be non-empty, of equal "
                "length, with at least one block per group."
            )
        widths = [self.embedding_size, *self.hidden_sizes]
        if self.backbone == "wide_resnet" and any(widths[i] == widths[i + 1] for i in range(1, len(widths) - 1)):
            raise ValueError(
                f"a WRN downsamples only in blocks that change the width: consecutive `hidden_sizes` must differ, "
                f"got {self.hidden_sizes}."
            )
        if not 1 <= self.stem_end_block <= self.num_blocks:
            raise ValueError(f"`stem_end_block` must be in [1, {self.num_blocks}], got {self.stem_end_block}.")
        if len(self.decoder_strides) != len(self.decoder_hidden_sizes) + 1:
            raise ValueError(
                f"`decoder_strides` needs one entry per transposed conv (len(decoder_hidden_sizes) + 1 = "
                f"{len(self.decoder_hidden_sizes) + 1}), got {self.decoder_strides}."
            )
        if len(self.decoder_activations) != len(self.decoder_hidden_sizes):
            raise ValueError(
                f"`decoder_activations` needs one entry per hidden decoder layer ({len(self.decoder_hidden_sizes)}), "
                f"got {self.decoder_activations}."
            )
        if any(activation not in DECODER_ACTIVATIONS for activation in self.decoder_activations):
            raise ValueError(
                f"`decoder_activations` entries must be in {DECODER_ACTIVATIONS}, got {self.decoder_activations}."
            )
        if any(stride not in (1, 2) for stride in self.decoder_strides):
            raise ValueError(f"`decoder_strides` entries must be 1 or 2, got {self.decoder_strides}.")
        if math.prod(self.decoder_strides) != self.stem_stride:
            raise ValueError(
                f"the decoder upsamples by prod(decoder_strides) = {math.prod(self.decoder_strides)}, but the stem "
                f"ending at block {self.stem_end_block} downsamples by {self.stem_stride}; they must be equal."
            )
        if self.reconstruction_weight < 0 or self.tv_weight < 0:
            raise ValueError(
                f"`reconstruction_weight` and `tv_weight` must be >= 0, got {self.reconstruction_weight} and "
                f"{self.tv_weight}."
            )
        if not 0 <= self.head_dropout < 1:
            raise ValueError(f"`head_dropout` must be in [0, 1), got {self.head_dropout}.")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.num_channels:
                raise ValueError(f"`{name}` needs one value per input channel ({self.num_channels}), got {value}.")
        if (self.image_mean is None) != (self.image_std is None):
            raise ValueError("`image_mean` and `image_std` must be given together (or both None).")

    @property
    def num_blocks(self) -> int:
        """Residual blocks of the whole backbone."""
        return sum(self.depths)

    @property
    def block_groups(self) -> list[int]:
        """The group index of every block, in order."""
        return [group for group, depth in enumerate(self.depths) for _ in range(depth)]

    @property
    def stem_stride(self) -> int:
        """How much the stem downsamples: the input layer's stride times 2 per group entered after the first."""
        entered = self.block_groups[self.stem_end_block - 1]
        return (4 if self.backbone == "resnet" else 1) * 2**entered

    @property
    def stem_hidden_size(self) -> int:
        """Channels of the stem output."""
        return self.hidden_sizes[self.block_groups[self.stem_end_block - 1]]

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TrapReplaceConfig:
        """Build a named size (`trap-replace-wrn-16-1`, `trap-replace-resnet34`, `trap-replace-tiny`)."""
        if name not in cls.PRESETS:
            raise ValueError(f"Unknown Trap and Replace preset {name!r}; expected one of {sorted(cls.PRESETS)}.")
        return cls(**{**cls.PRESETS[name], **overrides})


__all__ = ["TrapReplaceConfig"]
