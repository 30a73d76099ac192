"""MCMAE (ConvMAE) models.

ConvMAE: Masked Convolution Meets Masked Autoencoders (Gao, Ma, Li, Lin, Dai, Qiao; NeurIPS 2022, arXiv 2205.03892).
Official code: https://github.com/Alpha-VL/ConvMAE (`models_convmae.py` for pretraining, `models_convvit.py` for
fine-tuning).

A hybrid encoder with three stages (Base: strides 4 / 8 / 16, widths 256 / 384 / 768):
1. two convolution stages, each a non-overlapping strided patch embedding (conv, LayerNorm, GELU) followed by conv
   blocks - a transformer block whose attention is a depthwise 5x5 conv between 1x1 convs, with a 1x1-conv MLP;
2. a transformer stage (ViT blocks) on the stride-16 tokens, with fixed 2-D sin-cos positions and no CLS token.
Pretraining (paper Sec. 3): a random 75% of the stride-16 tokens is masked ("block-wise masking": the same mask,
upsampled, holds for the earlier stages, so every 16x16 pixel block is visible or masked at every stage); the input of
each depthwise conv is multiplied by the visible mask ("masked convolution") so no masked pixel reaches a visible
feature; the transformer runs on the visible tokens only; strided convs of the stage-1/2 features are added to the
visible tokens ("multi-scale decoder"); an MAE decoder reconstructs the pixels of the masked patches.

Where we deviate from the official code: any image size whose side is a multiple of the token stride (the official
code hard-codes 224), and other sizes at run time with `interpolate_pos_encoding=True` (as transformers' ViTs); the
fine-tuning model keeps the sin-cos table as a learnable parameter of the same name (the official code copies it into
a new learnable table). The transformer blocks and attention (eager/SDPA through `ALL_ATTENTION_FUNCTIONS`) are
transformers' ViTMAE layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, ViTMAEConfig
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.models.vit_mae.modeling_vit_mae import (
    ViTMAEAttention,
    ViTMAELayer,
    build_2d_sinusoidal_position_embedding,
)
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_mcmae import McMaeConfig


@dataclass
class McMaeModelOutput(ModelOutput):
    """Output of [`McMaeModel`].

    Args:
        last_hidden_state: `(B, N_kept, D)` output of the last transformer block; `N_kept` is every token without
            masking, the visible ones (in `ids_restore`'s shuffled order) with it.
        pooler_output: `(B, D)` LayerNorm of the token mean (the classification feature); `None` without pooler.
        conv_hidden_states: the stage-1 and stage-2 feature maps `(B, C_s, H_s, W_s)` after their conv blocks.
        mask: `(B, N)`, 1 for masked and 0 for visible tokens (with masking).
        ids_restore: `(B, N)` indices that undo the token shuffle (with masking).
        hidden_states: transformer-stage tokens after the embedding and after each block, `(B, N_kept, D)` each.
        attentions: per transformer block `(B, heads, N_kept, N_kept)`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    conv_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    mask: torch.FloatTensor | None = None
    ids_restore: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class McMaeForPreTrainingOutput(ModelOutput):
    """Output of [`McMaeForPreTraining`] (the fields of transformers' `ViTMAEForPreTrainingOutput`, plus the latent).

    Args:
        loss: mean squared error on the masked patches only (per-patch normalised targets with `norm_pix_loss`).
        logits: `(B, N, patch_size**2 * num_channels)` predicted pixels of every patch (`unpatchify` makes an image).
        mask: `(B, N)`, 1 for masked and 0 for visible patches.
        ids_restore: `(B, N)` indices that undo the token shuffle.
        last_hidden_state: `(B, N_visible, D)` encoder latent of the visible tokens after multi-scale fusion and the
            encoder LayerNorm (the decoder's input).
        conv_hidden_states: stage-1 and stage-2 feature maps, as [`McMaeModelOutput`].
        hidden_states: transformer-stage visible tokens after the embedding and each block; the last entry is the
            encoder's final visible tokens `(B, N_visible, D)` before fusion.
        attentions: per transformer block `(B, heads, N_visible, N_visible)`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    mask: torch.FloatTensor | None = None
    ids_restore: torch.LongTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    conv_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def sincos_position_embedding(grid_size: int, embed_dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos table `(grid_size**2, embed_dim)` in MAE's layout (width block first, as ViTMAE's)."""
    table = build_2d_sinusoidal_position_embedding(grid_size, grid_size, embed_dim=embed_dim)
    half = embed_dim // 2
    return torch.cat([table[:, half:], table[:, :half]], dim=-1)


def resize_position_table(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A square `(1, g*g, D)` position table resized bicubically to `grid` `(h, w)` -> `(1, h*w, D)` (as ViT's)."""
    side = int(table.shape[1] ** 0.5)
    if (side, side) == tuple(grid):
        return table
    square = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, D, g, g)
    resized = nn.functional.interpolate(square, size=tuple(grid), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)


def random_block_masking(noise: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's per-sample random masking by argsort of noise, on the stride-16 token grid.

    Args:
        noise: `(B, N)` scores; the tokens with the lowest scores are kept.
        mask_ratio: fraction of tokens masked; `int(N * (1 - mask_ratio))` are kept.

    Returns:
        `ids_keep` `(B, N_kept)`, `mask` `(B, N)` with 1 = masked, `ids_restore` `(B, N)`.
    """
    batch_size, num_tokens = noise.shape
    len_keep = int(num_tokens * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch_size, num_tokens, device=noise.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)  # unshuffle: 1 where the token was not kept
    return ids_shuffle[:, :len_keep], mask, ids_restore


def upsample_visible_mask(mask: torch.Tensor, grid: int | tuple[int, int], scale: int) -> torch.Tensor:
    """Visible mask `(B, 1, h*scale, w*scale)` (1 = visible) of a conv stage from the token mask `(B, N = h*w)`."""
    grid_h, grid_w = (grid, grid) if isinstance(grid, int) else grid
    visible = (1 - mask).reshape(-1, 1, grid_h, grid_w)
    return visible.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)  # nearest upsampling


def gather_tokens(tokens: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """Tokens `(B, N, D)` at `ids_keep` `(B, N_kept)` -> `(B, N_kept, D)`."""
    return torch.gather(tokens, dim=1, index=ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def drop_path_rates(config: McMaeConfig) -> list[float]:
    """Stochastic-depth rate of every encoder block (conv blocks first), linear from 0 to `drop_path_rate`.

    Plain Python (the values of `torch.linspace(0, rate, n)`): `__init__` also runs on the meta device, where no tensor
    value can be read.
    """
    num_blocks = sum(config.depths)
    if num_blocks == 1:
        return [0.0]
    return [config.drop_path_rate * index / (num_blocks - 1) for index in range(num_blocks)]


class McMaeDropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch per sample with probability `drop_prob` (timm's)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        keep = hidden_states.new_empty(shape).bernoulli_(keep_prob)
        return hidden_states * keep / keep_prob


class McMaeLayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a `(B, C, H, W)` map (per position, so it never mixes positions)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class McMaePatchEmbeddings(nn.Module):
    """Non-overlapping strided conv (kernel = stride = `patch_size`), LayerNorm, GELU (official `PatchEmbed`)."""

    def __init__(self, config: McMaeConfig, in_channels: int, out_channels: int, patch_size: int):
        super().__init__()
        self.projection = nn.Conv2d(in_channels, out_channels, kernel_size=patch_size, stride=patch_size)
        self.layernorm = McMaeLayerNorm2d(out_channels, eps=config.conv_layer_norm_eps)
        self.activation = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.layernorm(self.projection(hidden_states)))  # (B, C_out, H / p, W / p)


def pointwise_conv(hidden_states: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 `conv` on a channels-last map `(B, H, W, C_in)` -> `(B, H, W, C_out)`, as one matrix product.

    The weight stays the conv's `(C_out, C_in, 1, 1)` parameter (checkpoint keys and shapes are the official ones);
    PyTorch's CPU build runs such 1x1 convs through its slow unfold path (`_slow_conv2d`: 31% of an MCMAE-B
    pretraining step's CPU time in the profile); the matrix product is the same arithmetic on the fast GEMM path.
    """
    return F.linear(hidden_states, conv.weight.flatten(1), conv.bias)


class McMaeConvBlock(nn.Module):
    """Conv block (official `CBlock`): a transformer block with attention replaced by a depthwise conv.

    x += Conv1x1(DWConv(m * Conv1x1(LN(x))));  x += MLP(LN(x)) with 1x1 convs. The visible mask `m` is applied right
    before the depthwise conv, the block's only op that mixes positions: the masked convolution (paper Sec. 3.2).
    The block works on channels-last maps `(B, H, W, C)`: LayerNorm and the 1x1 convs act on the last axis (matrix
    products), and the depthwise conv reads the same memory as a channels-last `(B, C, H, W)` view, with no copy.
    """

    def __init__(self, config: McMaeConfig, hidden_size: int, mlp_ratio: float, drop_path: float = 0.0):
        super().__init__()
        kernel = config.conv_kernel_size
        self.layernorm_before = nn.LayerNorm(hidden_size, eps=config.conv_layer_norm_eps)
        self.conv_in = nn.Conv2d(hidden_size, hidden_size, 1)
        self.spatial_conv = nn.Conv2d(hidden_size, hidden_size, kernel, padding=kernel // 2, groups=hidden_size)
        self.conv_out = nn.Conv2d(hidden_size, hidden_size, 1)
        self.layernorm_after = nn.LayerNorm(hidden_size, eps=config.conv_layer_norm_eps)
        intermediate_size = int(hidden_size * mlp_ratio)
        self.fc1 = nn.Conv2d(hidden_size, intermediate_size, 1)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Conv2d(intermediate_size, hidden_size, 1)
        self.drop_path = McMaeDropPath(drop_path)

    def forward(self, hidden_states: torch.Tensor, visible_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, H, W, C)` map and `(B, H, W, 1)` visible mask -> `(B, H, W, C)`."""
        mixed = pointwise_conv(self.layernorm_before(hidden_states), self.conv_in)  # (B, H, W, C)
        if visible_mask is not None:
            mixed = mixed * visible_mask  # masked convolution: masked positions contribute zeros
        spatial = self.spatial_conv(mixed.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # depthwise conv, (B, H, W, C)
        hidden_states = hidden_states + self.drop_path(pointwise_conv(spatial, self.conv_out))
        mlp_output = pointwise_conv(
            self.activation(pointwise_conv(self.layernorm_after(hidden_states), self.fc1)), self.fc2
        )
        return hidden_states + self.drop_path(mlp_output)


class McMaeConvStage(nn.Module):
    """Patch embedding then conv blocks, at one stride."""

    def __init__(self, config: McMaeConfig, stage: int, drop_paths: list[float]):
        super().__init__()
        in_channels = config.num_channels if stage == 0 else config.hidden_sizes[stage - 1]
        hidden_size = config.hidden_sizes[stage]
        self.patch_embeddings = McMaePatchEmbeddings(config, in_channels, hidden_size, config.patch_sizes[stage])
        self.blocks = nn.ModuleList(
            [McMaeConvBlock(config, hidden_size, config.mlp_ratios[stage], rate) for rate in drop_paths]
        )

    def forward(self, hidden_states: torch.Tensor, visible_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, C_in, H, W)` and the stage's `(B, 1, H / p, W / p)` visible mask -> `(B, C, H / p, W / p)` (a
        channels-last view)."""
        hidden_states = self.patch_embeddings(hidden_states).permute(0, 2, 3, 1)  # (B, H / p, W / p, C)
        if visible_mask is not None:
            visible_mask = visible_mask.permute(0, 2, 3, 1)  # (B, H / p, W / p, 1)
        for block in self.blocks:
            hidden_states = block(hidden_states, visible_mask)
        return hidden_states.permute(0, 3, 1, 2)


def transformer_layer_config(
    config: McMaeConfig, hidden_size: int, num_heads: int, intermediate_size: int
) -> ViTMAEConfig:
    """The ViTMAE config a block of the given size is built from (widths differ between encoder and decoder)."""
    return ViTMAEConfig(
        hidden_size=hidden_size,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        hidden_act=config.hidden_act,
        qkv_bias=config.qkv_bias,
        layer_norm_eps=config.layer_norm_eps,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
    )


class McMaeLayer(ViTMAELayer):
    """ViTMAE's pre-LN transformer block (qkv bias, MLP, LN eps 1e-6), sized by `layer_config`, with stochastic depth.

    The attention reads the attention implementation (eager / SDPA / ...) from the model's own config, so
    `attn_implementation=` and `set_attn_implementation` reach every block.
    """

    def __init__(self, config: McMaeConfig, layer_config: ViTMAEConfig, drop_path: float = 0.0):
        super().__init__(layer_config)
        self.attention.config = config
        self.drop_path = McMaeDropPath(drop_path)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        attention_output, _ = self.attention(self.layernorm_before(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + self.drop_path(self.dropout(attention_output))
        mlp_output = self.mlp(self.layernorm_after(hidden_states))
        return hidden_states + self.drop_path(self.dropout(mlp_output))


class McMaeTokenEmbeddings(nn.Module):
    """Stage-3 embedding: strided conv patch embedding, flatten, Linear, + fixed sin-cos positions (no CLS token)."""

    def __init__(self, config: McMaeConfig):
        super().__init__()
        self.patch_embeddings = McMaePatchEmbeddings(
            config, config.hidden_sizes[1], config.hidden_size, config.patch_sizes[2]
        )
        self.projection = nn.Linear(config.hidden_size, config.hidden_size)  # official `patch_embed4`
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches, config.hidden_size))

    def forward(self, stage2_features: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embeddings(stage2_features)  # (B, D, h, w)
        positions = resize_position_table(self.position_embeddings, tokens.shape[-2:])  # as is at the trained size
        return self.projection(tokens.flatten(2).transpose(1, 2)) + positions  # (B, N, D)


class McMaePooler(nn.Module):
    """Mean over tokens then LayerNorm (official fine-tuning `global_pool` + `fc_norm`)."""

    def __init__(self, config: McMaeConfig):
        super().__init__()
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.layernorm(hidden_states.mean(dim=1))


class McMaeDecoder(nn.Module):
    """MAE decoder: Linear to the decoder width, mask tokens, fixed sin-cos positions, blocks, LN, pixel predictor."""

    def __init__(self, config: McMaeConfig):
        super().__init__()
        self.decoder_embed = nn.Linear(config.hidden_size, config.decoder_hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_hidden_size))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, config.num_patches, config.decoder_hidden_size), requires_grad=False
        )
        layer_config = transformer_layer_config(
            config, config.decoder_hidden_size, config.decoder_num_attention_heads, config.decoder_intermediate_size
        )
        self.decoder_layers = nn.ModuleList(
            [McMaeLayer(config, layer_config) for _ in range(config.decoder_num_hidden_layers)]
        )
        self.decoder_norm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        self.decoder_pred = nn.Linear(config.decoder_hidden_size, config.patch_size**2 * config.num_channels)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Predicted pixels `(B, N, p*p*C)` from the visible latent `(B, N_visible, D)` on a token grid `(h, w)`."""
        hidden_states = self.decoder_embed(latent)  # (B, N_visible, D_dec)
        batch_size, num_visible, width = hidden_states.shape
        mask_tokens = self.mask_token.expand(batch_size, ids_restore.shape[1] - num_visible, -1)
        hidden_states = torch.cat([hidden_states, mask_tokens], dim=1)  # shuffled order
        hidden_states = torch.gather(hidden_states, 1, ids_restore.unsqueeze(-1).expand(-1, -1, width))  # unshuffle
        hidden_states = hidden_states + resize_position_table(self.decoder_pos_embed, grid)
        for layer in self.decoder_layers:
            hidden_states = layer(hidden_states)
        return self.decoder_pred(self.decoder_norm(hidden_states))


# Copied from hfvision.models.pyramidclip.modeling_pyramidclip._check_pixel_values
def _check_pixel_values(
    pixel_values: torch.Tensor | None, num_channels: int, dtype: torch.dtype, name: str = "pixel_values"
) -> None:
    """Raise a `ValueError` naming the argument unless it is a non-empty `(B, num_channels, H, W)` tensor of finite
    values of the model's `dtype`.

    Checked at the model's boundary because torch otherwise fails deep inside a convolution (uint8 pixels, float16
    pixels in a float32 model) or not at all (NaN pixels, an empty batch). Under autocast any floating dtype passes
    (autocast casts it); the finiteness check is skipped on the meta device and while compiling or tracing.
    """
    if not isinstance(pixel_values, torch.Tensor):
        raise ValueError(
            f"`{name}` is required: a (batch, {num_channels}, height, width) tensor, got {type(pixel_values).__name__}."
        )
    if pixel_values.ndim != 4 or pixel_values.shape[1] != num_channels or pixel_values.shape[0] == 0:
        raise ValueError(
            f"`{name}` must have shape (batch >= 1, {num_channels}, height, width), got {tuple(pixel_values.shape)}."
        )
    if pixel_values.dtype != dtype and not (
        pixel_values.is_floating_point() and torch.is_autocast_enabled(pixel_values.device.type)
    ):
        raise ValueError(
            f"`{name}` must be {dtype} (the model's dtype), normalised as the image processor does, got "
            f"{pixel_values.dtype}; use the image processor, or `{name}.to(model.dtype)` for float pixels."
        )
    if pixel_values.device.type == "meta" or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return
    if not torch.isfinite(pixel_values).all():
        raise ValueError(f"`{name}` holds NaN or infinite values; expected finite, normalised pixels.")


class McMaePreTrainedModel(PreTrainedModel):
    config_class = McMaeConfig
    base_model_prefix = "mcmae"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["McMaeConvStage", "McMaeTokenEmbeddings", "McMaeLayer"]
    _can_record_outputs = {"hidden_states": McMaeLayer, "attentions": ViTMAEAttention}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Official ConvMAE initialisation: xavier-uniform Linear layers and token patch embedding, PyTorch's default
        for the other convs, sin-cos positions, a near-zero classifier."""
        # Leaf modules only: transformers skips modules without parameters of their own in remote code.
        super()._init_weights(module)  # LayerNorm 1/0, biases 0
        if isinstance(module, nn.Linear) and module is getattr(self, "classifier", None):
            init.trunc_normal_(module.weight, std=2e-5)  # official fine-tuning head init
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):  # convs keep PyTorch's default init, as in the official code
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.weight[0].numel())
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, McMaeTokenEmbeddings):
            # the token patch embedding is initialised like a Linear layer: xavier-uniform on (out, in * k * k)
            weight = module.patch_embeddings.projection.weight
            bound = math.sqrt(6.0 / (weight.shape[0] + weight[0].numel()))
            init.uniform_(weight, -bound, bound)
            grid = int(module.position_embeddings.shape[1] ** 0.5)
            table = sincos_position_embedding(grid, module.position_embeddings.shape[-1])
            init.copy_(module.position_embeddings, table.unsqueeze(0))
        elif isinstance(module, McMaeDecoder):
            grid = int(module.decoder_pos_embed.shape[1] ** 0.5)
            table = sincos_position_embedding(grid, module.decoder_pos_embed.shape[-1])
            init.copy_(module.decoder_pos_embed, table.unsqueeze(0))
            init.normal_(module.mask_token, std=self.config.initializer_range)


class McMaeModel(McMaePreTrainedModel):
    """The MCMAE encoder: two conv stages and a transformer stage; masking only when `apply_masking=True`."""

    def __init__(self, config: McMaeConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        rates = drop_path_rates(config)
        stage_rates = [rates[: config.depths[0]], rates[config.depths[0] : sum(config.depths[:2])]]
        self.conv_stages = nn.ModuleList([McMaeConvStage(config, stage, stage_rates[stage]) for stage in range(2)])
        self.embeddings = McMaeTokenEmbeddings(config)
        layer_config = transformer_layer_config(
            config, config.hidden_size, config.num_attention_heads, int(config.hidden_size * config.mlp_ratios[2])
        )
        self.layers = nn.ModuleList(
            [McMaeLayer(config, layer_config, rate) for rate in rates[sum(config.depths[:2]) :]]
        )
        self.pooler = McMaePooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.conv_stages[0].patch_embeddings.projection

    def check_pixel_values(self, pixel_values: torch.Tensor | None, interpolate_pos_encoding: bool) -> tuple[int, int]:
        """Validate `pixel_values` and return its token grid `(H / patch_size, W / patch_size)`."""
        size, patch, channels = self.config.image_size, self.config.patch_size, self.config.num_channels
        _check_pixel_values(pixel_values, channels, self.dtype)
        height, width = pixel_values.shape[2:]
        if interpolate_pos_encoding and (height % patch or width % patch):
            raise ValueError(f"`pixel_values` height and width must be multiples of {patch}, got {height}x{width}.")
        if not interpolate_pos_encoding and (height, width) != (size, size):
            raise ValueError(
                f"`pixel_values` must be {size}x{size} pixels, got {height}x{width}; pass "
                "`interpolate_pos_encoding=True` for other sizes (multiples of the token stride)."
            )
        return height // patch, width // patch

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        apply_masking: bool = False,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> McMaeModelOutput:
        r"""Encode `pixel_values` `(B, C, H, W)`.

        Args:
            pixel_values: images of the configured size (any multiple of `patch_size` with
                `interpolate_pos_encoding`).
            noise: `(B, N)` masking scores (lowest kept), to fix the random mask; `N = (H / p) * (W / p)`. Ignored
                without `apply_masking`, so generic callers may pass it to every model that accepts it.
            apply_masking: mask `config.mask_ratio` of the tokens (pretraining). Without it every token is encoded.
            interpolate_pos_encoding: resize the position table bicubically to the input's token grid.
        """
        grid = self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        batch_size, num_patches = pixel_values.shape[0], grid[0] * grid[1]
        stride2 = self.config.patch_sizes[2]

        # Block-wise masking on the stride-16 grid, upsampled to the conv stages (paper Sec. 3.2).
        mask = ids_restore = ids_keep = None
        visible_masks: list[torch.Tensor | None] = [None, None]
        if apply_masking:
            if noise is None:
                noise = torch.rand(batch_size, num_patches, device=pixel_values.device)
            if noise.shape != (batch_size, num_patches):
                raise ValueError(f"`noise` must have shape ({batch_size}, {num_patches}), got {tuple(noise.shape)}.")
            ids_keep, mask, ids_restore = random_block_masking(noise.to(pixel_values.device), self.config.mask_ratio)
            mask = mask.to(pixel_values.dtype)
            scales = (self.config.patch_sizes[1] * stride2, stride2)
            visible_masks = [upsample_visible_mask(mask, grid, scale) for scale in scales]

        # Stages 1-2: masked convolution on the full grid.
        hidden_states = pixel_values
        conv_hidden_states = []
        for stage, visible_mask in zip(self.conv_stages, visible_masks, strict=True):
            hidden_states = stage(hidden_states, visible_mask)  # (B, C_s, H_s, W_s)
            conv_hidden_states.append(hidden_states)

        # Stage 3: transformer on the visible tokens only.
        tokens = self.embeddings(hidden_states)  # (B, N, D)
        if ids_keep is not None:
            tokens = gather_tokens(tokens, ids_keep)  # (B, N_visible, D)
        for layer in self.layers:
            tokens = layer(tokens, **kwargs)
        pooled = self.pooler(tokens) if self.pooler is not None else None
        return McMaeModelOutput(
            last_hidden_state=tokens,
            pooler_output=pooled,
            conv_hidden_states=tuple(conv_hidden_states),
            mask=mask,
            ids_restore=ids_restore,
        )


class McMaeForPreTraining(McMaePreTrainedModel):
    """MCMAE with multi-scale fusion and the MAE decoder for masked-image pretraining (as `ViTMAEForPreTraining`)."""

    def __init__(self, config: McMaeConfig):
        super().__init__(config)
        self.mcmae = McMaeModel(config, add_pooling_layer=False)
        if config.use_multiscale_fusion:
            # Official `stage1_output_decode` / `stage2_output_decode`: strided convs down to the token grid.
            stride1 = config.patch_sizes[1] * config.patch_sizes[2]
            stride2 = config.patch_sizes[2]
            self.stage1_fusion = nn.Conv2d(config.hidden_sizes[0], config.hidden_size, stride1, stride=stride1)
            self.stage2_fusion = nn.Conv2d(config.hidden_sizes[1], config.hidden_size, stride2, stride=stride2)
        self.encoder_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = McMaeDecoder(config)
        self.post_init()
        self.train(self.training)

    def train(self, mode: bool = True) -> McMaeForPreTraining:
        """Set the mode and keep the encoder's sin-cos positions fixed, as in pretraining (re-applied after loading)."""
        super().train(mode)
        self.mcmae.embeddings.position_embeddings.requires_grad_(False)
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.mcmae.get_input_embeddings()

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, N, p*p*C)` patches of side `config.patch_size`, in ViTMAE's layout."""
        patch, channels = self.config.patch_size, self.config.num_channels
        batch_size, _, height, width = pixel_values.shape
        patches = pixel_values.reshape(batch_size, channels, height // patch, patch, width // patch, patch)
        patches = patches.permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, p, C)
        return patches.reshape(batch_size, (height // patch) * (width // patch), patch * patch * channels)

    def unpatchify(self, patches: torch.Tensor, image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """`(B, N, p*p*C)` -> `(B, C, H, W)`, the inverse of `patchify`; `image_size` `(H, W)` defaults to square."""
        patch, channels = self.config.patch_size, self.config.num_channels
        batch_size, num_patches, _ = patches.shape
        if image_size is None:
            side = int(num_patches**0.5) * patch
            image_size = (side, side)
        grid_h, grid_w = image_size[0] // patch, image_size[1] // patch
        if grid_h * grid_w != num_patches:
            raise ValueError(f"{num_patches} patches do not tile an image of {image_size[0]}x{image_size[1]} pixels.")
        images = patches.reshape(batch_size, grid_h, grid_w, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)
        return images.reshape(batch_size, channels, grid_h * patch, grid_w * patch)

    def forward_loss(self, pixel_values: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """L = sum_i m_i mean((pred_i - target_i)^2) / sum_i m_i over patches i (MAE; masked patches only)."""
        target = self.patchify(pixel_values)  # (B, N, p*p*C)
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        per_patch = (logits - target).pow(2).mean(dim=-1)  # (B, N)
        return (per_patch * mask).sum() / mask.sum().clamp(min=1)  # no masked patch (mask_ratio 0) gives 0

    @torch.no_grad()
    def reconstruct(
        self, pixel_values: torch.Tensor, noise: torch.Tensor | None = None, interpolate_pos_encoding: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images of what the model saw and what it reconstructed, in the (normalised) space of `pixel_values`.

        With `norm_pix_loss` the predictions are per-patch normalised; each patch is mapped back with the mean and
        variance of the true patch (as MAE's visualisation demo does), so colours and contrast come from the input.

        Args:
            pixel_values: `(B, C, H, W)` normalised images.
            noise: `(B, N)` masking scores to fix the mask.
            interpolate_pos_encoding: accept other sizes, as in `forward`.

        Returns:
            `masked` (input with masked patches zeroed), `reconstruction` (the prediction for every patch) and
            `pasted` (visible input patches plus predicted masked patches), each `(B, C, H, W)`.
        """
        outputs = self.forward(
            pixel_values=pixel_values, noise=noise, interpolate_pos_encoding=interpolate_pos_encoding
        )
        predicted = outputs.logits  # (B, N, p*p*C)
        if self.config.norm_pix_loss:
            target = self.patchify(pixel_values)
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            predicted = predicted * (var + 1.0e-6) ** 0.5 + mean
        mask = outputs.mask.unsqueeze(-1)  # (B, N, 1), 1 = masked
        size = tuple(pixel_values.shape[2:])
        reconstruction = self.unpatchify(predicted, size)
        masked = self.unpatchify(self.patchify(pixel_values) * (1 - mask), size)
        pasted = self.unpatchify(self.patchify(pixel_values) * (1 - mask) + predicted * mask, size)
        return masked, reconstruction, pasted

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> McMaeForPreTrainingOutput:
        r"""Mask, encode the visible tokens, fuse, decode, and score the reconstruction of the masked patches.

        Args:
            pixel_values: `(B, C, H, W)` normalised images.
            noise: `(B, N)` masking scores to fix the random mask (the lowest `N * (1 - mask_ratio)` are kept).
            interpolate_pos_encoding: accept other sizes (multiples of `patch_size`), resizing the position tables.
        """
        outputs = self.mcmae(
            pixel_values, noise=noise, apply_masking=True, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )
        patch = self.config.patch_size
        grid = (pixel_values.shape[2] // patch, pixel_values.shape[3] // patch)
        latent = outputs.last_hidden_state  # (B, N_visible, D)
        if self.config.use_multiscale_fusion:
            ids_keep = torch.argsort(outputs.ids_restore, dim=1)[:, : latent.shape[1]]
            stage1, stage2 = outputs.conv_hidden_states
            for fusion, features in ((self.stage1_fusion, stage1), (self.stage2_fusion, stage2)):
                latent = latent + gather_tokens(fusion(features).flatten(2).transpose(1, 2), ids_keep)
        latent = self.encoder_norm(latent)
        logits = self.decoder(latent, outputs.ids_restore, grid)  # (B, N, p*p*C)
        loss = self.forward_loss(pixel_values, logits, outputs.mask)
        return McMaeForPreTrainingOutput(
            loss=loss,
            logits=logits,
            mask=outputs.mask,
            ids_restore=outputs.ids_restore,
            last_hidden_state=latent,
            conv_hidden_states=outputs.conv_hidden_states,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class McMaeForImageClassification(McMaePreTrainedModel):
    """MCMAE encoder with a linear head on the mean-pooled, normalised tokens (official fine-tuning model)."""

    def __init__(self, config: McMaeConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mcmae = McMaeModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.mcmae.get_input_embeddings()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        """Class logits `(B, num_labels)`; `loss` from `labels` following `config.problem_type`."""
        outputs = self.mcmae(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        logits = self.classifier(outputs.pooler_output)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "McMaeForImageClassification",
    "McMaeForPreTraining",
    "McMaeForPreTrainingOutput",
    "McMaeModel",
    "McMaeModelOutput",
    "McMaePreTrainedModel",
]
