"""MCMAE (ConvMAE) configuration.

ConvMAE: Masked Convolution Meets Masked Autoencoders (Gao, Ma, Li, Lin, Dai, Qiao; NeurIPS 2022, arXiv 2205.03892).
Official code: https://github.com/Alpha-VL/ConvMAE.

Defaults equal the official ConvMAE-Base (`mcmae-base`); `McMaeConfig.from_preset` builds the named sizes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig, ViTMAEConfig

# Every Auto class a saved checkpoint opens as remote code (`trust_remote_code=True`); processors carry their own map.
AUTO_MAP = {
    "AutoConfig": "configuration_mcmae.McMaeConfig",
    "AutoModel": "modeling_mcmae.McMaeModel",
    "AutoModelForPreTraining": "modeling_mcmae.McMaeForPreTraining",
    "AutoModelForImageClassification": "modeling_mcmae.McMaeForImageClassification",
}

_LIST_FIELDS = ("hidden_sizes", "depths", "patch_sizes", "mlp_ratios")


@strict
class McMaeConfig(PreTrainedConfig):
    r"""Configuration of the MCMAE models: two convolution stages, one transformer stage, an MAE decoder.

    The encoder has three stages at strides 4, 8 and 16 (Base): stages 1-2 are convolution blocks whose spatial mixing
    (a depthwise `conv_kernel_size` conv) sees only visible positions during pretraining (masked convolution);
    stage 3 is a ViT on the visible tokens. Masks are drawn on the stage-3 grid and upsampled to stages 1-2.

    Args:
        image_size (`int`, *optional*, defaults to 224): input resolution (square).
        num_channels (`int`, *optional*, defaults to 3): input channels.
        hidden_sizes (`list[int]`, *optional*, defaults to `[256, 384, 768]`): width of stages 1, 2, 3.
        depths (`list[int]`, *optional*, defaults to `[2, 2, 11]`): blocks in stages 1, 2 (conv) and 3 (transformer).
        patch_sizes (`list[int]`, *optional*, defaults to `[4, 2, 2]`): kernel = stride of each stage's patch
            embedding; their product is the stride of the transformer tokens (16).
        mlp_ratios (`list[float]`, *optional*, defaults to `[4.0, 4.0, 4.0]`): MLP width ratio per stage.
        num_attention_heads (`int`, *optional*, defaults to 12): heads of the transformer stage.
        conv_kernel_size (`int`, *optional*, defaults to 5): depthwise kernel of the conv blocks (odd).
        qkv_bias (`bool`, *optional*, defaults to `True`): bias of the query/key/value projections.
        hidden_act (`str`, *optional*, defaults to `"gelu"`): activation everywhere.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6): LayerNorm epsilon of the transformer blocks.
        conv_layer_norm_eps (`float`, *optional*, defaults to 1e-5): LayerNorm epsilon in conv blocks and patch
            embeddings (plain `nn.LayerNorm` in the official code).
        hidden_dropout_prob, attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0): dropouts.
        drop_path_rate (`float`, *optional*, defaults to 0.0): stochastic depth of the last block; the rate grows
            linearly from 0 over all encoder blocks, conv and transformer (official fine-tuning: 0.1; pretraining: 0).
        mask_ratio (`float`, *optional*, defaults to 0.75): fraction of stage-3 tokens masked in pretraining.
        use_multiscale_fusion (`bool`, *optional*, defaults to `True`): add strided-conv projections of the stage-1
            and stage-2 features to the visible tokens before the decoder (the paper's multi-scale decoder).
        decoder_hidden_size (`int`, *optional*, defaults to 512): MAE decoder width.
        decoder_num_hidden_layers (`int`, *optional*, defaults to 8): MAE decoder depth.
        decoder_num_attention_heads (`int`, *optional*, defaults to 16): MAE decoder heads.
        decoder_intermediate_size (`int`, *optional*, defaults to 2048): MAE decoder MLP width.
        norm_pix_loss (`bool`, *optional*, defaults to `True`): normalise each target patch by its own mean and
            variance (the official pretraining command).
        initializer_range (`float`, *optional*, defaults to 0.02): std of normal initialisations.
    """

    model_type = "mcmae"

    image_size: int = 224
    num_channels: int = 3
    hidden_sizes: list[int] | tuple[int, ...] = (256, 384, 768)
    depths: list[int] | tuple[int, ...] = (2, 2, 11)
    patch_sizes: list[int] | tuple[int, ...] = (4, 2, 2)
    mlp_ratios: list[float] | tuple[float, ...] = (4.0, 4.0, 4.0)
    num_attention_heads: int = 12
    conv_kernel_size: int = 5
    qkv_bias: bool = True
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    conv_layer_norm_eps: float = 1e-5
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.0
    mask_ratio: float = 0.75
    use_multiscale_fusion: bool = True
    decoder_hidden_size: int = 512
    decoder_num_hidden_layers: int = 8
    decoder_num_attention_heads: int = 16
    decoder_intermediate_size: int = 2048
    norm_pix_loss: bool = True
    initializer_range: float = 0.02

    # Named sizes: the official Base, the authors' Small (ConvMAE-v2 line) and a tiny one for tests and CPU demos.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "mcmae-base": {},
        "mcmae-small": {"hidden_sizes": [128, 256, 384], "num_attention_heads": 6},
        "mcmae-tiny": {
            "image_size": 32,
            "hidden_sizes": [8, 16, 32],
            "depths": [1, 1, 2],
            "patch_sizes": [2, 2, 2],
            "mlp_ratios": [2.0, 2.0, 2.0],
            "num_attention_heads": 2,
            "conv_kernel_size": 3,
            "decoder_hidden_size": 16,
            "decoder_num_hidden_layers": 1,
            "decoder_num_attention_heads": 2,
            "decoder_intermediate_size": 32,
        },
    }

    def __post_init__(self, **kwargs: Any) -> None:
        for name in _LIST_FIELDS:  # JSON gives lists back; keep them lists so configs round-trip equal
            setattr(self, name, list(getattr(self, name)))
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        for name in _LIST_FIELDS:
            if len(getattr(self, name)) != 3:
                raise ValueError(
                    f"`{name}` must have 3 entries (conv, conv, transformer stage), got {getattr(self, name)}."
                )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_sizes[-1]` ({self.hidden_size}) must be a multiple of `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if self.decoder_hidden_size % self.decoder_num_attention_heads != 0:
            raise ValueError(
                f"`decoder_hidden_size` ({self.decoder_hidden_size}) must be a multiple of "
                f"`decoder_num_attention_heads` ({self.decoder_num_attention_heads})."
            )
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"`image_size` ({self.image_size}) must be a multiple of the token stride ({self.patch_size} = product "
                "of `patch_sizes`)."
            )
        if self.conv_kernel_size % 2 != 1:
            raise ValueError(f"`conv_kernel_size` must be odd, got {self.conv_kernel_size}.")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"`drop_path_rate` must be in [0, 1), got {self.drop_path_rate}.")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"`mask_ratio` must be in [0, 1), got {self.mask_ratio}.")

    @property
    def hidden_size(self) -> int:
        """Width of the transformer stage (and of the encoder output)."""
        return self.hidden_sizes[-1]

    @property
    def num_hidden_layers(self) -> int:
        """Blocks of the transformer stage: the layers `hidden_states` records."""
        return self.depths[-1]

    @property
    def patch_size(self) -> int:
        """Stride of the transformer tokens in pixels (16 for Base): the side of a masked block and a target patch."""
        return self.patch_sizes[0] * self.patch_sizes[1] * self.patch_sizes[2]

    @property
    def num_patches(self) -> int:
        """Tokens of the transformer stage: `(image_size / patch_size) ** 2`."""
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> McMaeConfig:
        """Build a named size (`mcmae-base`, `mcmae-small`, `mcmae-tiny`); kwargs override it."""
        if name not in cls.PRESETS:
            raise ValueError(f"Unknown MCMAE preset {name!r}; expected one of {sorted(cls.PRESETS)}.")
        return cls(**{**cls.PRESETS[name], **overrides})


def matching_vitmae_config(config: McMaeConfig) -> ViTMAEConfig:
    """The plain MAE (transformers' `ViTMAEConfig`) of comparable size: the paper's baseline for `config`.

    The paper pairs ConvMAE-B with MAE's ViT-B/16: the ViTMAE encoder takes the width, heads, MLP ratio and token
    stride of MCMAE's transformer stage and one block more (MCMAE's conv stages stand in for the 12th block and the
    patch embedding), which gives both encoders about the same parameter count; the decoder, mask ratio and
    `norm_pix_loss` are the same.
    """
    return ViTMAEConfig(
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_channels=config.num_channels,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.depths[2] + 1,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=int(config.hidden_size * config.mlp_ratios[2]),
        qkv_bias=config.qkv_bias,
        layer_norm_eps=config.layer_norm_eps,
        decoder_hidden_size=config.decoder_hidden_size,
        decoder_num_hidden_layers=config.decoder_num_hidden_layers,
        decoder_num_attention_heads=config.decoder_num_attention_heads,
        decoder_intermediate_size=config.decoder_intermediate_size,
        mask_ratio=config.mask_ratio,
        norm_pix_loss=config.norm_pix_loss,
    )


__all__ = ["McMaeConfig", "matching_vitmae_config"]
