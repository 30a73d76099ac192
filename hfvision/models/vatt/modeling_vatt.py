"""VATT model.

VATT: Transformers for Multimodal Self-Supervised Learning from Raw Video, Audio and Text (Akbari et al., NeurIPS
2021, arXiv 2104.11178). Official code (TensorFlow): https://github.com/google-research/google-research/tree/master/vatt.

Three transformers (or, in VATT-MA, one transformer shared by the three modalities) read raw signals:
- video `(B, T, 3, H, W)` in [-1, 1] -> Conv3d tubelets (4x16x16) -> 8x14x14 = 1568 tokens (paper Sec. 3.1);
- audio `(B, S)` raw waveform -> Conv1d patches of 128 samples -> 1200 tokens;
- text `(B, L)` word ids -> 300-d word embeddings -> GELU projection -> a T5 encoder (bias-free, unscaled attention,
  bucketed relative position bias; official `text/t5.py`), up to 16 words.
Video and audio tokens get factorised learned positions (time + height + width tables summed, LayerNorm on the sum;
Sec. 3.1), then DropToken keeps a random subset during pretraining (Sec. 3.2; the same subset for the whole batch, as
the official code), then a learned aggregation token (no position) is prepended; its output is the clip feature.
The FAC heads (Sec. 3.3) map video to the video-audio space and from there to the video-text space; audio and text
map linearly into their space. Video-audio pairs are trained with NCE, video-text pairs with MIL-NCE over several
positive captions per clip (Eq. 3-4); clips without text (AudioSet in the paper) are masked out of the text loss and
never serve as negatives.

Where we deviate from the official code:
- the paper's text tower reads frozen word2vec vectors (2^16 words); none ship offline, so the word embeddings are
  trained from scratch over a vocabulary built from the training captions (`freeze_word_embeddings` freezes them);
- position tables are interpolated bicubically (the paper's wording; the code uses an order-3 spline);
- the official masked-token (BERT-style) code path, off in every released config, is not implemented;
- the tokenizers (video Conv3d, audio Conv1d) and VATT-MA's pre-projections are initialised with std fan_in^-0.5
  (the official code: Keras' glorot-uniform, std ~0.005 for the audio Conv1d), so that tokens start at the scale of
  the LayerNormed positions; otherwise the audio tower of a small model starts blind to its input and the
  video-audio NCE settles on a constant audio embedding (measured; see `VattPreTrainedModel._init_weights`). VATT-MA's
  trained-from-scratch word embeddings start with unit variance (standing in for word2vec vectors) behind a fan-in
  projection, for the same reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.t5.modeling_t5 import T5Attention, T5LayerNorm
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple

from .configuration_vatt import VattAudioConfig, VattConfig, VattTextConfig, VattVideoConfig

logger = logging.get_logger(__name__)

MODALITIES = ("video", "audio", "text")


# --- outputs -----------------------------------------------------------------------------------------------------
@dataclass
class VattModelOutput(ModelOutput):
    """Output of [`VattModel`].

    Args:
        logits_video_audio: `(B, B)` video-audio similarities divided by the temperature.
        logits_video_text: `(B, B * K)` video-caption similarities divided by the temperature (K captions per clip).
        video_embeds_va, video_embeds_vt: L2-normalised video embeddings in the video-audio and video-text spaces.
        audio_embeds: `(B, d_va)` L2-normalised audio embeddings.
        text_embeds: `(B, K, d_vt)` L2-normalised caption embeddings.
        video_model_output, audio_model_output, text_model_output: the towers' outputs (`pooler_output` is the
            aggregation token's output; `hidden_states` / `attentions` when asked).
    """

    logits_video_audio: torch.FloatTensor | None = None
    logits_video_text: torch.FloatTensor | None = None
    video_embeds_va: torch.FloatTensor | None = None
    video_embeds_vt: torch.FloatTensor | None = None
    audio_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    video_model_output: BaseModelOutputWithPooling | None = None
    audio_model_output: BaseModelOutputWithPooling | None = None
    text_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(value.to_tuple() if isinstance(value, ModelOutput) else value for value in self.values())


@dataclass
class VattForPreTrainingOutput(ModelOutput):
    """Output of [`VattForPreTraining`]: the loss, its terms, then the fields of [`VattModelOutput`].

    Args:
        loss: `(w_va * loss_video_audio + w_vt * loss_video_text) / (w_va + w_vt)` over the terms present (the
            official weighting; the paper's L = NCE + lambda MIL-NCE up to the constant factor).
        loss_video_audio: NCE between video and audio in the video-audio space.
        loss_video_text: MIL-NCE between video and its captions in the video-text space.
        Other fields as [`VattModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    loss_video_audio: torch.FloatTensor | None = None
    loss_video_text: torch.FloatTensor | None = None
    logits_video_audio: torch.FloatTensor | None = None
    logits_video_text: torch.FloatTensor | None = None
    video_embeds_va: torch.FloatTensor | None = None
    video_embeds_vt: torch.FloatTensor | None = None
    audio_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    video_model_output: BaseModelOutputWithPooling | None = None
    audio_model_output: BaseModelOutputWithPooling | None = None
    text_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(value.to_tuple() if isinstance(value, ModelOutput) else value for value in self.values())


# --- embeddings (paper Sec. 3.1-3.2) -----------------------------------------------------------------------------
def interpolate_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """Resize a `(n, D)` position table to `(length, D)` by bicubic interpolation along its rows (paper Sec. 4.2)."""
    if table.shape[0] == length:
        return table
    resized = nn.functional.interpolate(
        table.t()[None, :, :, None], size=(length, 1), mode="bicubic", align_corners=False
    )  # (1, D, length, 1)
    return resized[0, :, :, 0].t()


def droptoken_indices(
    num_tokens: int, rate: float, device: torch.device, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """Indices of the tokens DropToken keeps: one random subset shared by the whole batch (official code).

    Args:
        num_tokens: N, tokens per sample.
        rate: share dropped; `int(N * (1 - rate))` tokens are kept (784 of 1568 at 0.5).
        device: device of the indices.
        noise: optional `(N,)` scores; the tokens with the lowest scores are kept (a random permutation otherwise).

    Returns:
        `(N_keep,)` long indices, in the random order the official code keeps them.
    """
    num_keep = max(1, int(num_tokens * (1.0 - rate) + 1e-6))
    if noise is None:
        noise = torch.rand(num_tokens, device=device)
    elif noise.shape != (num_tokens,):
        raise ValueError(f"`noise` must have shape ({num_tokens},) (one score per token), got {tuple(noise.shape)}.")
    return noise.argsort()[:num_keep]


class VattEmbeddingsBase(nn.Module):
    """Shared tail of the video and audio embeddings: DropToken, then the aggregation token (no position)."""

    def __init__(self, hidden_size: int, dropout: float):
        super().__init__()
        self.agg_token = nn.Parameter(torch.zeros(hidden_size))
        self.dropout = nn.Dropout(dropout)

    def finish(
        self, tokens: torch.Tensor, droptoken_rate: float, noise: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(B, N, D)` positioned tokens -> `(B, 1 + N_keep, D)` with DropToken applied when `droptoken_rate > 0`."""
        tokens = self.dropout(tokens)
        kept = None
        if droptoken_rate > 0:
            kept = droptoken_indices(tokens.shape[1], droptoken_rate, tokens.device, noise)
            tokens = tokens[:, kept]  # (B, N_keep, D), the same subset for every sample
        agg_token = self.agg_token.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
        return torch.cat([agg_token, tokens], dim=1), kept


class VattVideoEmbeddings(VattEmbeddingsBase):
    """Tubelets -> tokens + factorised learned positions e(t, h, w) = LN(E_T[t] + E_H[h] + E_W[w])."""

    def __init__(self, config: VattVideoConfig, modality_agnostic: bool = False):
        super().__init__(config.hidden_size, config.hidden_dropout_prob)
        self.config = config
        self.patch_embeddings = nn.Conv3d(
            config.num_channels, config.hidden_size, kernel_size=config.tubelet_size, stride=config.tubelet_size
        )
        # VATT-MA: a GELU "pre-projection" per modality before the shared transformer (official uvatt.py)
        self.pre_projection = nn.Linear(config.hidden_size, config.hidden_size) if modality_agnostic else None
        time, height, width = config.grid_size
        self.temporal_position_embeddings = nn.Parameter(torch.zeros(time, config.hidden_size))
        self.vertical_position_embeddings = nn.Parameter(torch.zeros(height, config.hidden_size))
        self.horizontal_position_embeddings = nn.Parameter(torch.zeros(width, config.hidden_size))
        self.position_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def position_embeddings(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """`(t * h * w, D)` positions of a token grid; tables interpolated to another grid."""
        time, height, width = grid
        temporal = interpolate_table(self.temporal_position_embeddings, time)
        vertical = interpolate_table(self.vertical_position_embeddings, height)
        horizontal = interpolate_table(self.horizontal_position_embeddings, width)
        positions = temporal[:, None, None] + vertical[None, :, None] + horizontal[None, None, :]  # (t, h, w, D)
        return self.position_layernorm(positions.flatten(0, 2))

    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        droptoken_rate: float = 0.0,
        noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(B, T, C, H, W)` -> `(B, 1 + N_keep, D)` and the kept token indices (`None` without DropToken)."""
        _check_video(pixel_values_videos, self.config, self.patch_embeddings.weight.dtype, interpolate_pos_encoding)
        patches = self.patch_embeddings(pixel_values_videos.permute(0, 2, 1, 3, 4))  # (B, D, t, h, w)
        grid = tuple(patches.shape[2:])
        tokens = patches.flatten(2).transpose(1, 2)  # (B, t*h*w, D), time-major as the official reshape
        if self.pre_projection is not None:
            tokens = nn.functional.gelu(self.pre_projection(tokens))
        tokens = tokens + self.position_embeddings(grid)
        return self.finish(tokens, droptoken_rate, noise)


class VattAudioEmbeddings(VattEmbeddingsBase):
    """Waveform patches -> tokens + learned temporal positions (LayerNorm on the table)."""

    def __init__(self, config: VattAudioConfig, modality_agnostic: bool = False):
        super().__init__(config.hidden_size, config.hidden_dropout_prob)
        self.config = config
        self.patch_embeddings = nn.Conv1d(
            1, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.pre_projection = nn.Linear(config.hidden_size, config.hidden_size) if modality_agnostic else None
        self.temporal_position_embeddings = nn.Parameter(torch.zeros(config.num_tokens, config.hidden_size))
        self.position_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        input_values: torch.Tensor,
        droptoken_rate: float = 0.0,
        noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(B, S)` -> `(B, 1 + N_keep, D)` and the kept token indices."""
        _check_audio(input_values, self.config, self.patch_embeddings.weight.dtype, interpolate_pos_encoding)
        tokens = self.patch_embeddings(input_values[:, None]).transpose(1, 2)  # (B, S / patch, D)
        if self.pre_projection is not None:
            tokens = nn.functional.gelu(self.pre_projection(tokens))
        positions = interpolate_table(self.temporal_position_embeddings, tokens.shape[1])
        tokens = tokens + self.position_layernorm(positions)
        return self.finish(tokens, droptoken_rate, noise)


class VattTextEmbeddings(nn.Module):
    """Word ids -> word embeddings -> GELU projection to the width, with the aggregation token first.

    Modality-specific tower (official `text/factory.py`): the aggregation token lives in the word-embedding space and
    is prepended before the bias-free GELU pre-projection; there are no absolute positions (the encoder adds T5's
    relative bias). VATT-MA (official `uvatt.py`): a biased GELU pre-projection, learned absolute positions (LayerNorm
    on the table), then the aggregation token in the model width.
    """

    def __init__(self, config: VattTextConfig, modality_agnostic: bool = False):
        super().__init__()
        self.config = config
        self.modality_agnostic = modality_agnostic
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=0)
        self.word_projection = nn.Linear(config.embedding_size, config.hidden_size, bias=modality_agnostic)
        if modality_agnostic:
            self.position_embeddings = nn.Parameter(torch.zeros(config.max_position_embeddings, config.hidden_size))
            self.position_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.agg_token = nn.Parameter(torch.zeros(config.hidden_size))
        else:
            self.agg_token = nn.Parameter(torch.zeros(config.embedding_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`(B, L)` -> `(B, 1 + L, D)`."""
        words = self.word_embeddings(input_ids)  # (B, L, E)
        agg_token = self.agg_token.to(words.dtype).expand(words.shape[0], 1, -1)
        if not self.modality_agnostic:
            tokens = nn.functional.gelu(self.word_projection(torch.cat([agg_token, words], dim=1)))  # (B, 1 + L, D)
            return self.dropout(tokens)
        tokens = nn.functional.gelu(self.word_projection(words))  # (B, L, D)
        tokens = self.dropout(tokens + self.position_layernorm(self.position_embeddings[: tokens.shape[1]]))
        return torch.cat([agg_token, tokens], dim=1)


class VattPostProjection(nn.Linear):
    """The dense layer of VATT-MA's per-modality GELU post-projection (official `uvatt.py`); a class of its own so
    that it gets the official glorot initialisation."""


# --- transformer -------------------------------------------------------------------------------------------------
def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention on `(B, H, N, d)` tensors with an additive `(B, H | 1, N, N)` mask/bias."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (B, N, H, d)
    return attn_output, attn_weights


class VattAttention(nn.Module):
    """Multi-head self-attention through transformers' attention interface.

    Video/audio (official `common/transformers.py`): biased projections, scores scaled by d_kv^-0.5. Text (`t5=True`,
    official `text/t5.py`): T5's bias-free projections and unscaled scores.
    """

    def __init__(
        self, config: VattVideoConfig | VattAudioConfig | VattTextConfig, model_config: VattConfig, t5: bool = False
    ):
        super().__init__()
        self.config = config
        self.model_config = model_config  # the attention implementation follows the model's config (all towers)
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = 1.0 if t5 else self.head_dim**-0.5
        self.is_causal = False
        self.query = nn.Linear(config.hidden_size, config.hidden_size, bias=not t5)
        self.key = nn.Linear(config.hidden_size, config.hidden_size, bias=not t5)
        self.value = nn.Linear(config.hidden_size, config.hidden_size, bias=not t5)
        self.output = nn.Linear(config.hidden_size, config.hidden_size, bias=not t5)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, num_tokens, _ = hidden_states.shape
        shape = (batch_size, num_tokens, self.num_heads, self.head_dim)
        query = self.query(hidden_states).view(shape).transpose(1, 2)  # (B, H, N, d)
        key = self.key(hidden_states).view(shape).transpose(1, 2)
        value = self.value(hidden_states).view(shape).transpose(1, 2)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.model_config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.config.attention_probs_dropout_prob if self.training else 0.0,
            **kwargs,
        )
        attn_output = attn_output.reshape(batch_size, num_tokens, -1)
        return self.output(attn_output), attn_weights


class VattMLP(nn.Module):
    """Dense -> activation -> dropout -> dense; bias-free in the T5 text tower."""

    def __init__(self, config: VattVideoConfig | VattAudioConfig | VattTextConfig, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.activation = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.activation(self.fc1(hidden_states))))


class VattLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block.

    Video/audio (official `TransformerEncoderLayer`, `pre_norm=True`): LayerNorm before attention and MLP. Text
    (`t5=True`, official `text/t5.py` `EncoderLayer`): T5's RMS norm before the bias-free attention, a LayerNorm before
    the bias-free GELU MLP, as the official code mixes them.
    """

    def __init__(
        self, config: VattVideoConfig | VattAudioConfig | VattTextConfig, model_config: VattConfig, t5: bool = False
    ):
        super().__init__()
        norm = T5LayerNorm if t5 else nn.LayerNorm
        self.layernorm_before = norm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = VattAttention(config, model_config, t5=t5)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = VattMLP(config, bias=not t5)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.attention(self.layernorm_before(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + self.dropout(attn_output)
        hidden_states = hidden_states + self.dropout(self.mlp(self.layernorm_after(hidden_states)))
        return hidden_states, attn_weights


class VattRelativePositionBias(nn.Module):
    """T5's bidirectional bucketed relative position bias, `(1, H, N, N)`, shared by every layer as in T5."""

    def __init__(self, config: VattTextConfig):
        super().__init__()
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        self.relative_attention_bias = nn.Embedding(self.num_buckets, config.num_attention_heads)

    def forward(self, num_tokens: int, device: torch.device) -> torch.Tensor:
        positions = torch.arange(num_tokens, device=device)
        relative_position = positions[None, :] - positions[:, None]  # (N, N): key - query
        buckets = T5Attention._relative_position_bucket(
            relative_position, bidirectional=True, num_buckets=self.num_buckets, max_distance=self.max_distance
        )
        return self.relative_attention_bias(buckets).permute(2, 0, 1)[None]  # (1, H, N, N)


class VattEncoder(nn.Module):
    """A stack of [`VattLayer`] with a final norm.

    With `t5=True` (the modality-specific text tower, official `text/t5.py` `T5Encoder`): T5 layers, T5's bucketed
    relative position bias computed once and added in every layer, and a final RMS norm.
    """

    def __init__(
        self, config: VattVideoConfig | VattAudioConfig | VattTextConfig, model_config: VattConfig, t5: bool = False
    ):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList([VattLayer(config, model_config, t5=t5) for _ in range(config.num_hidden_layers)])
        self.relative_position_bias = VattRelativePositionBias(config) if t5 else None
        self.layernorm = (T5LayerNorm if t5 else nn.LayerNorm)(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> BaseModelOutput:
        """Args: `hidden_states` `(B, N, D)`; `attention_mask` `(B, N)` with 1 for real tokens (or `None`)."""
        additive_mask = None
        if attention_mask is not None:
            keep = attention_mask[:, None, None, :].bool()  # (B, 1, 1, N)
            additive_mask = torch.zeros(keep.shape, dtype=hidden_states.dtype, device=hidden_states.device)
            additive_mask = additive_mask.masked_fill(~keep, torch.finfo(hidden_states.dtype).min)
        if self.relative_position_bias is not None:
            bias = self.relative_position_bias(hidden_states.shape[1], hidden_states.device).to(hidden_states.dtype)
            additive_mask = bias if additive_mask is None else additive_mask + bias  # (B | 1, H, N, N)
        all_hidden_states = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights = layer(hidden_states, additive_mask, **kwargs)
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            if output_attentions:
                all_attentions.append(attn_weights)
        return BaseModelOutput(
            last_hidden_state=self.dropout(self.layernorm(hidden_states)),
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )


# --- common-space heads and losses (paper Sec. 3.3) ----------------------------------------------------------------
class VattProjectionHeads(nn.Module):
    """FAC projection heads (official `bridge.py`), d_va = 512 and d_vt = 256 by default.

    z_v,va = BN(W2 ReLU(BN(W1 z_v))); z_v,vt = BN(W3 ReLU(z_v,va)) (video reaches the text space through the
    video-audio space); z_a,va = W_a z_a + b; z_t,vt = W_t z_t + b. No audio-text head exists (as in the paper).
    """

    def __init__(self, config: VattConfig, video_size: int, audio_size: int, text_size: int):
        super().__init__()
        momentum, eps = config.batch_norm_momentum, config.batch_norm_eps
        self.video_to_va = nn.Sequential(
            nn.Linear(video_size, config.d_va, bias=False),
            nn.BatchNorm1d(config.d_va, eps=eps, momentum=momentum),
            nn.ReLU(),
            nn.Linear(config.d_va, config.d_va, bias=False),
            nn.BatchNorm1d(config.d_va, eps=eps, momentum=momentum),
        )
        self.video_va_to_vt = nn.Sequential(
            nn.ReLU(),
            nn.Linear(config.d_va, config.d_vt, bias=False),
            nn.BatchNorm1d(config.d_vt, eps=eps, momentum=momentum),
        )
        self.audio_to_va = nn.Linear(audio_size, config.d_va)
        self.text_to_vt = nn.Linear(text_size, config.d_vt)


def gather_with_mask(
    embeds: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate embeddings (with gradients) and masks of every process, so negatives come from the global batch."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return embeds, mask
    embeds = torch.cat(dist_fn.all_gather(embeds), dim=0)
    if mask is not None:
        gathered = [torch.empty_like(mask) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, mask.contiguous())
        mask = torch.cat(gathered, dim=0)
    return embeds, mask


def nce_loss(
    video_embeds: torch.Tensor, audio_embeds: torch.Tensor, temperature: float, loss_type: str = "asymmetric"
) -> torch.Tensor:
    """NCE between paired, L2-normalised `(B, D)` embeddings (paper Eq. 3).

    `"asymmetric"` (official `AsymmetricNCE`): for anchor i, -log(e^{s_ii} / sum over row i and column i of e^s),
    so the positive appears twice and the minimum is log 2. `"symmetric"`: the sum of the row-wise and column-wise
    cross-entropies (minimum 0).
    """
    logits = video_embeds @ audio_embeds.t() / temperature  # (B, B)
    positives = logits.diagonal()
    if loss_type == "symmetric":
        return (logits.logsumexp(dim=1) - positives).mean() + (logits.logsumexp(dim=0) - positives).mean()
    denominator = torch.cat([logits, logits.t()], dim=1).logsumexp(dim=1)  # row i and column i
    return (denominator - positives).mean()


def mil_nce_loss(
    video_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    caption_mask: torch.Tensor,
    temperature: float,
    loss_type: str = "asymmetric",
) -> torch.Tensor:
    """MIL-NCE between videos and their sets of positive captions (paper Eq. 4).

    Args:
        video_embeds: `(B, D)` L2-normalised video embeddings.
        text_embeds: `(B, K, D)` L2-normalised caption embeddings, K positive captions per clip.
        caption_mask: `(B, K)` bool, False for captions that do not exist (padding, clips without text); those are
            neither positives nor negatives, and a clip without any caption contributes nothing.
        temperature: softmax temperature.
        loss_type: `"asymmetric"` (official: positives over the union of the video's row and its captions' column)
            or `"symmetric"` (sum of the video->text and text->video MIL-NCE).

    Returns:
        Scalar: mean over clips with at least one caption (0 if there are none).
    """
    batch_size, num_captions, _ = text_embeds.shape
    logits = video_embeds @ text_embeds.flatten(0, 1).t() / temperature  # (B, B * K)
    logits = logits.view(batch_size, batch_size, num_captions)  # [video i, clip j, caption k]
    logits = logits.masked_fill(~caption_mask[None], float("-inf"))
    own = logits.diagonal(dim1=0, dim2=1).t()  # (B, K): video i with its own captions
    numerator = own.logsumexp(dim=1)  # MIL: the positives' sum in the numerator
    row = logits.flatten(1).logsumexp(dim=1)  # video i against every caption
    column = logits.transpose(0, 1).flatten(1).logsumexp(dim=1)  # every video against clip i's captions
    if loss_type == "symmetric":
        per_clip = (row - numerator) + (column - numerator)
    else:
        per_clip = torch.stack([row, column], dim=1).logsumexp(dim=1) - numerator
    valid = caption_mask.any(dim=1)
    per_clip = torch.where(valid, per_clip, torch.zeros_like(per_clip))
    return per_clip.sum() / valid.sum().clamp(min=1)


# --- input checks ------------------------------------------------------------------------------------------------
def _check_floats(tensor: Any, name: str, shape_text: str, dtype: torch.dtype) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"`{name}` is required: a {shape_text} tensor, got {type(tensor).__name__}.")
    if tensor.dtype != dtype and not (tensor.is_floating_point() and torch.is_autocast_enabled(tensor.device.type)):
        raise ValueError(
            f"`{name}` must be {dtype} (the model's dtype), as the processor makes it, got {tensor.dtype}; use "
            f"`{name}.to(model.dtype)`."
        )
    if tensor.device.type == "meta" or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return
    if not torch.isfinite(tensor).all():
        raise ValueError(f"`{name}` holds NaN or infinite values.")


def _check_video(pixel_values_videos: Any, config: VattVideoConfig, dtype: torch.dtype, interpolate: bool) -> None:
    name, layout = "pixel_values_videos", f"(batch, frames, {config.num_channels}, height, width)"
    _check_floats(pixel_values_videos, name, layout, dtype)
    shape = tuple(pixel_values_videos.shape)
    if len(shape) != 5 or shape[2] != config.num_channels or shape[0] == 0:
        raise ValueError(f"`{name}` must have shape {layout}, got {shape}.")
    expected = (config.num_frames, config.image_size, config.image_size)
    if interpolate:
        tubelet = config.tubelet_size
        if any(size % patch or size < patch for size, patch in zip((shape[1], *shape[3:]), tubelet, strict=True)):
            raise ValueError(
                f"`{name}`: frames, height and width {shape[1], *shape[3:]} must be multiples of {tubelet}."
            )
    elif (shape[1], *shape[3:]) != expected:
        raise ValueError(
            f"`{name}` has {shape[1]} frames of {shape[3]}x{shape[4]} but the model takes {expected[0]} frames of "
            f"{expected[1]}x{expected[2]}; sample and resize with the processor, or pass "
            "`interpolate_pos_encoding=True` to interpolate the position tables."
        )


def _check_audio(input_values: Any, config: VattAudioConfig, dtype: torch.dtype, interpolate: bool) -> None:
    _check_floats(input_values, "input_values", "(batch, samples) mono waveform", dtype)
    shape = tuple(input_values.shape)
    if len(shape) != 2 or shape[0] == 0:
        hint = " (stereo or multi-channel audio: mix it down to mono first)" if len(shape) == 3 else ""
        raise ValueError(f"`input_values` must be a mono waveform of shape (batch, samples), got {shape}{hint}.")
    if interpolate:
        if shape[1] % config.patch_size or shape[1] == 0:
            raise ValueError(f"`input_values`: {shape[1]} samples is not a multiple of patch_size {config.patch_size}.")
    elif shape[1] != config.num_samples:
        raise ValueError(
            f"`input_values` has {shape[1]} samples but the model takes {config.num_samples} "
            f"({config.num_samples / config.sampling_rate:.2f} s at {config.sampling_rate} Hz); pad or crop with the "
            "feature extractor, or pass `interpolate_pos_encoding=True`."
        )


def _check_text(input_ids: Any, config: VattTextConfig) -> None:
    if not isinstance(input_ids, torch.Tensor):
        raise ValueError(
            f"`input_ids` is required: word ids of shape (batch, [captions,] words), got {type(input_ids)}."
        )
    if input_ids.ndim not in (2, 3) or 0 in input_ids.shape:
        raise ValueError(
            f"`input_ids` must have shape (batch, words) or (batch, captions, words), got {tuple(input_ids.shape)}."
        )
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise ValueError(f"`input_ids` must hold integer word ids (torch.long), got {input_ids.dtype}.")
    if input_ids.shape[-1] > config.max_position_embeddings:
        raise ValueError(
            f"`input_ids` has {input_ids.shape[-1]} words, the model takes at most {config.max_position_embeddings}; "
            "tokenize with truncation=True."
        )
    if input_ids.device.type == "meta" or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return
    low, high = (int(value) for value in torch.aminmax(input_ids))
    if low < 0 or high >= config.vocab_size:
        raise ValueError(f"`input_ids` must hold ids in [0, {config.vocab_size}), got ids in [{low}, {high}].")


def _check_batch_sizes(**tensors: torch.Tensor | None) -> None:
    sizes = {name: tensor.shape[0] for name, tensor in tensors.items() if isinstance(tensor, torch.Tensor)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"Every modality needs one entry per clip, but the batch sizes differ: {sizes}.")


# --- models ------------------------------------------------------------------------------------------------------
class VattPreTrainedModel(PreTrainedModel):
    config_class = VattConfig
    base_model_prefix = "vatt"
    main_input_name = "pixel_values_videos"
    input_modalities = ("video", "audio", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = ["VattLayer", "VattVideoEmbeddings", "VattAudioEmbeddings", "VattTextEmbeddings"]

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.save_pretrained`, shipping the video-text-retrieval pipeline with every checkpoint of the
        three towers ([`VattModel`], [`VattForPreTraining`]; a classifier's is a video/audio-classification one).

        config.json gets the pipeline's `custom_pipelines` entry, and `pipeline_vatt.py` is written beside the
        model's code (transformers copies the files a modeling file imports relatively, and fetches them with it when
        the model is loaded as remote code). So a checkpoint saved any way (`save_pretrained`, `push_to_hub`,
        `Trainer`, a pipeline) runs `pipeline("video-text-retrieval", model=path_or_repo_id, trust_remote_code=True)`
        without hfvision, also after being re-saved there.
        """
        from .pipeline_vatt import VideoTextRetrievalPipeline

        if isinstance(self, (VattModel, VattForPreTraining)):
            pipeline_class = VideoTextRetrievalPipeline
            impl = f"{pipeline_class.__module__.rsplit('.', 1)[-1]}.{pipeline_class.__name__}"
            self.config.custom_pipelines = {
                **(getattr(self.config, "custom_pipelines", None) or {}),
                "video-text-retrieval": {"impl": impl, "pt": ["AutoModel"], "type": "multimodal"},
            }
        return super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Truncated normal (std `initializer_range`) for linear layers; position tables trunc-normal with std D^-0.5
        and aggregation tokens glorot-normal (std D^-0.5 for a vector), as the official code; norms to identity.

        The tokenizers (video Conv3d, audio Conv1d) and VATT-MA's square pre-projections get std fan_in^-0.5, so that
        tokens start at the scale of the LayerNormed positions (for a pre-projection this is the official glorot
        init); VATT-MA's words likewise (unit-variance embeddings, fan-in projection), and its post-projections get
        the official glorot init. With std 0.02, a 32-sample audio patch of a waveform at RMS 0.3 gives tokens of RMS
        0.03 beside positions of RMS 1: the audio tower's aggregation output then barely depends on the clip
        (relative spread 5e-4, 70x below the dropout noise) and contrastive training settles on a constant audio
        embedding; without the VATT-MA scales both of its losses stay at their constant-embedding values (measured;
        README, VATT results).
        """
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if isinstance(module, VattPostProjection):  # the official Keras Dense default (glorot)
                std = (2.0 / (module.in_features + module.out_features)) ** 0.5
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv1d, nn.Conv3d)):
            init.trunc_normal_(module.weight, std=module.weight[0].numel() ** -0.5)  # fan_in = in_channels x kernel
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, VattVideoEmbeddings):
            for table in (
                module.temporal_position_embeddings,
                module.vertical_position_embeddings,
                module.horizontal_position_embeddings,
            ):
                init.trunc_normal_(table, std=table.shape[-1] ** -0.5)
        elif isinstance(module, VattAudioEmbeddings):
            init.trunc_normal_(module.temporal_position_embeddings, std=module.config.hidden_size**-0.5)
        elif isinstance(module, VattTextEmbeddings) and module.modality_agnostic:
            init.trunc_normal_(module.position_embeddings, std=module.config.hidden_size**-0.5)
            # VATT-MA adds the projected words to LayerNormed positions, so they too start at that scale:
            # unit-variance words (in place of the official frozen word2vec vectors) through a fan-in projection
            init.normal_(module.word_embeddings.weight, std=1.0)
            init.zeros_(module.word_embeddings.weight[module.word_embeddings.padding_idx])
            init.trunc_normal_(module.word_projection.weight, std=module.word_projection.in_features**-0.5)
        if isinstance(module, VattEmbeddingsBase) and module.pre_projection is not None:
            init.trunc_normal_(module.pre_projection.weight, std=module.pre_projection.in_features**-0.5)
        if isinstance(module, (VattEmbeddingsBase, VattTextEmbeddings)):
            init.trunc_normal_(module.agg_token, std=module.agg_token.shape[-1] ** -0.5)
        if isinstance(module, nn.BatchNorm1d):
            init.zeros_(module.num_batches_tracked)

    def _adjust_missing_and_unexpected_keys(self, loading_info: Any) -> None:
        """A classification head holds one tower: leave the checkpoint's other towers and common-space heads out of
        the load report and say so once (transformers' loading hook)."""
        kept = getattr(self, "held_modalities", None)
        if kept is not None:
            pattern = re.compile(
                rf"^(vatt\.)?({'|'.join(m for m in MODALITIES if m not in kept)})_|^(vatt\.)?projection_heads\."
            )
            other = {key for key in loading_info.unexpected_keys if pattern.match(key)}
            loading_info.unexpected_keys -= other
            if other:
                logger.info(
                    "%s holds the %s tower only: %d tensors of the checkpoint's other towers and common-space heads "
                    "were not loaded.",
                    type(self).__name__,
                    kept[0],
                    len(other),
                )
        super()._adjust_missing_and_unexpected_keys(loading_info)

    # -- towers, shared by every head --
    def _build_towers(self, config: VattConfig, modalities: tuple[str, ...]) -> None:
        """Create `<modality>_embeddings`, the encoder(s) (`encoder` shared in VATT-MA, else `<modality>_encoder`)
        and, in VATT-MA, `<modality>_post_projection`. The names are the same in every head, so checkpoints load
        across heads."""
        sub_configs = {name: getattr(config, f"{name}_config") for name in MODALITIES}
        embeddings = {"video": VattVideoEmbeddings, "audio": VattAudioEmbeddings, "text": VattTextEmbeddings}
        agnostic = config.modality_agnostic
        for name in modalities:
            setattr(self, f"{name}_embeddings", embeddings[name](sub_configs[name], modality_agnostic=agnostic))
        if agnostic:  # one transformer for every modality (built from video_config; the sizes are equal)
            self.encoder = VattEncoder(sub_configs["video"], config)
            for name in modalities:
                projection = nn.Sequential(
                    VattPostProjection(sub_configs[name].hidden_size, config.post_projection_size), nn.GELU()
                )
                setattr(self, f"{name}_post_projection", projection)
        else:
            for name in modalities:
                setattr(
                    self,
                    f"{name}_encoder",
                    VattEncoder(sub_configs[name], config, t5=name == "text"),
                )

    def tower_output_size(self, modality: str) -> int:
        """Width of a tower's pooled output (the post-projection size in VATT-MA)."""
        if self.config.modality_agnostic:
            return self.config.post_projection_size
        return getattr(self.config, f"{modality}_config").hidden_size

    def encoder_for(self, modality: str) -> VattEncoder:
        """The transformer a modality runs through (the same object for all three in VATT-MA)."""
        return self.encoder if self.config.modality_agnostic else getattr(self, f"{modality}_encoder")

    def _run_tower(
        self,
        modality: str,
        inputs: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        droptoken: bool = False,
        noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling:
        """Embed and encode one modality; `pooler_output` is the aggregation token's output `(B, D_out)`."""
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        embeddings = getattr(self, f"{modality}_embeddings")
        if modality == "text":
            hidden_states = embeddings(inputs)
            if attention_mask is None:
                attention_mask = (inputs != 0).long()  # word id 0 is padding
            attention_mask = torch.cat([attention_mask.new_ones(attention_mask.shape[0], 1), attention_mask], dim=1)
        else:
            rate = self.config.droptoken_rate if droptoken else 0.0
            hidden_states, _ = embeddings(inputs, rate, noise, interpolate_pos_encoding)
            attention_mask = None
        encoded = self.encoder_for(modality)(
            hidden_states,
            attention_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            **kwargs,
        )
        last_hidden_state = encoded.last_hidden_state
        if self.config.modality_agnostic:
            last_hidden_state = getattr(self, f"{modality}_post_projection")(last_hidden_state)
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=last_hidden_state[:, 0],
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )


class VattModel(VattPreTrainedModel):
    """VATT's towers and common-space heads: embeddings, similarity logits and per-modality features.

    DropToken is applied while the model is in training mode (pretraining); `droptoken=False` turns it off.
    """

    def __init__(self, config: VattConfig):
        super().__init__(config)
        self._build_towers(config, MODALITIES)
        self.projection_heads = VattProjectionHeads(
            config, self.tower_output_size("video"), self.tower_output_size("audio"), self.tower_output_size("text")
        )
        self.post_init()
        self.train(self.training)

    def train(self, mode: bool = True) -> VattModel:
        """Set the mode and (re)apply `freeze_word_embeddings` (loading replaces parameters)."""
        super().train(mode)
        if self.config.text_config.freeze_word_embeddings:
            self.text_embeddings.word_embeddings.requires_grad_(False)
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.video_embeddings.patch_embeddings

    @can_return_tuple
    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        space: str = "va",
        droptoken: bool | None = None,
        noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Video tower output whose `pooler_output` is the (unnormalised) video embedding `(B, d_va | d_vt)`.

        Args:
            pixel_values_videos: `(B, T, 3, H, W)` in [-1, 1].
            space: `"va"` (video-audio) or `"vt"` (video-text, reached through the video-audio space).
            droptoken: apply DropToken (default: in training mode); `noise` `(N,)` chooses the kept tokens.
        """
        if space not in ("va", "vt"):
            raise ValueError(f"`space` must be 'va' or 'vt', got {space!r}.")
        droptoken = self.training if droptoken is None else droptoken
        outputs = self._run_tower(
            "video", pixel_values_videos, droptoken=droptoken, noise=noise,
            interpolate_pos_encoding=interpolate_pos_encoding, **kwargs,
        )  # fmt: skip
        embeds = self.projection_heads.video_to_va(outputs.pooler_output)
        if space == "vt":
            embeds = self.projection_heads.video_va_to_vt(embeds)
        outputs.pooler_output = embeds
        return outputs

    @can_return_tuple
    def get_audio_features(
        self,
        input_values: torch.Tensor,
        droptoken: bool | None = None,
        noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Audio tower output whose `pooler_output` is the (unnormalised) audio embedding `(B, d_va)`.

        Args:
            input_values: `(B, S)` mono waveform at `audio_config.sampling_rate`.
        """
        droptoken = self.training if droptoken is None else droptoken
        outputs = self._run_tower(
            "audio", input_values, droptoken=droptoken, noise=noise,
            interpolate_pos_encoding=interpolate_pos_encoding, **kwargs,
        )  # fmt: skip
        outputs.pooler_output = self.projection_heads.audio_to_va(outputs.pooler_output)
        return outputs

    @can_return_tuple
    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """Text tower output whose `pooler_output` is the (unnormalised) caption embedding `(B, d_vt)`.

        Args:
            input_ids: `(B, L)` word ids (0 = padding); `attention_mask` `(B, L)` (default: ids != 0).
        """
        _check_text(input_ids, self.config.text_config)
        if input_ids.ndim != 2:
            raise ValueError(f"`input_ids` must have shape (batch, words) here, got {tuple(input_ids.shape)}.")
        outputs = self._run_tower("text", input_ids, attention_mask=attention_mask, **kwargs)
        outputs.pooler_output = self.projection_heads.text_to_vt(outputs.pooler_output)
        return outputs

    def _embed_all(
        self,
        pixel_values_videos: torch.Tensor | None,
        input_values: torch.Tensor | None,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        droptoken: bool | None,
        video_noise: torch.Tensor | None,
        audio_noise: torch.Tensor | None,
        interpolate_pos_encoding: bool,
        **kwargs: Any,
    ) -> VattModelOutput:
        if pixel_values_videos is None:
            raise ValueError("`pixel_values_videos` is required: VATT aligns audio and text with the video.")
        if input_ids is not None:
            _check_text(input_ids, self.config.text_config)
            if attention_mask is not None and attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"`attention_mask` must have the shape of `input_ids` {tuple(input_ids.shape)}, got "
                    f"{tuple(attention_mask.shape)}."
                )
        _check_batch_sizes(pixel_values_videos=pixel_values_videos, input_values=input_values, input_ids=input_ids)
        video = self.get_video_features(
            pixel_values_videos, droptoken=droptoken, noise=video_noise,
            interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs,
        )  # fmt: skip
        video_va = video.pooler_output
        video_vt = self.projection_heads.video_va_to_vt(video_va)
        video.pooler_output = video_va
        outputs = VattModelOutput(
            video_embeds_va=nn.functional.normalize(video_va, dim=-1),
            video_embeds_vt=nn.functional.normalize(video_vt, dim=-1),
            video_model_output=video,
        )
        temperature = self.config.temperature
        if input_values is not None:
            audio = self.get_audio_features(
                input_values, droptoken=droptoken, noise=audio_noise,
                interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs,
            )  # fmt: skip
            outputs.audio_embeds = nn.functional.normalize(audio.pooler_output, dim=-1)
            outputs.audio_model_output = audio
            outputs.logits_video_audio = outputs.video_embeds_va @ outputs.audio_embeds.t() / temperature
        if input_ids is not None:
            batch_size = input_ids.shape[0]
            flat_ids = input_ids.flatten(0, -2)  # (B * K, L)
            flat_mask = attention_mask.flatten(0, -2) if attention_mask is not None else None
            text = self._run_tower("text", flat_ids, attention_mask=flat_mask, **kwargs)
            text_embeds = nn.functional.normalize(self.projection_heads.text_to_vt(text.pooler_output), dim=-1)
            text.pooler_output = text_embeds
            outputs.text_embeds = (
                text_embeds.view(batch_size, -1, text_embeds.shape[-1]) if input_ids.ndim == 3 else (text_embeds)
            )
            outputs.text_model_output = text
            outputs.logits_video_text = outputs.video_embeds_vt @ text_embeds.t() / temperature
        return outputs

    @can_return_tuple
    def forward(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        droptoken: bool | None = None,
        video_noise: torch.Tensor | None = None,
        audio_noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VattModelOutput:
        r"""Embed a batch of clips in the common spaces and compare them.

        Args:
            pixel_values_videos: `(B, T, 3, H, W)` frames in [-1, 1].
            input_values: `(B, S)` mono waveform (optional).
            input_ids: `(B, L)` or `(B, K, L)` word ids, K captions per clip (optional).
            attention_mask: mask of `input_ids` (default: ids != 0).
            droptoken: apply DropToken to video and audio (default: in training mode).
            video_noise, audio_noise: `(N,)` scores choosing the kept tokens (lowest kept) instead of a random draw.
            interpolate_pos_encoding: interpolate the position tables to another frame count, size or duration.
        """
        return self._embed_all(
            pixel_values_videos, input_values, input_ids, attention_mask, droptoken, video_noise, audio_noise,
            interpolate_pos_encoding, **kwargs,
        )  # fmt: skip


class VattForPreTraining(VattPreTrainedModel):
    """VATT with its pretraining objective: NCE (video-audio) + MIL-NCE (video-text), each term in the output."""

    def __init__(self, config: VattConfig):
        super().__init__(config)
        self.vatt = VattModel(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vatt.get_input_embeddings()

    @can_return_tuple
    def forward(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        droptoken: bool | None = None,
        video_noise: torch.Tensor | None = None,
        audio_noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VattForPreTrainingOutput:
        r"""Pretraining loss of a batch of clips.

        Args:
            pixel_values_videos, input_values, input_ids, attention_mask, droptoken, video_noise, audio_noise,
                interpolate_pos_encoding: as [`VattModel`].
            text_mask: `(B,)`, 0 for clips without text (AudioSet-like): they are left out of the MIL-NCE, as
                anchors and as negatives. Captions whose `attention_mask` (or ids) are all padding are left out too.
        """
        outputs = self.vatt._embed_all(
            pixel_values_videos, input_values, input_ids, attention_mask, droptoken, video_noise, audio_noise,
            interpolate_pos_encoding, **kwargs,
        )  # fmt: skip
        config = self.config
        terms: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {}
        if outputs.audio_embeds is not None:
            video_va, audio = gather_with_mask(outputs.video_embeds_va)[0], gather_with_mask(outputs.audio_embeds)[0]
            terms["loss_video_audio"] = nce_loss(video_va, audio, config.temperature, config.loss_type)
            weights["loss_video_audio"] = config.video_audio_loss_weight
        if outputs.text_embeds is not None:
            batch_size = input_ids.shape[0]
            caption_ids = input_ids if input_ids.ndim == 3 else input_ids[:, None]
            caption_mask = attention_mask if attention_mask is not None else caption_ids != 0
            caption_mask = caption_mask.reshape(caption_ids.shape).bool().any(dim=-1)  # (B, K)
            if text_mask is not None:
                if tuple(text_mask.shape) != (batch_size,):
                    raise ValueError(
                        f"`text_mask` must have shape ({batch_size},), one flag per clip; got {tuple(text_mask.shape)}."
                    )
                caption_mask = caption_mask & text_mask.bool()[:, None].to(caption_mask.device)
            text_embeds = outputs.text_embeds.view(batch_size, caption_ids.shape[1], -1)
            video_vt, _ = gather_with_mask(outputs.video_embeds_vt)
            text_embeds, caption_mask = gather_with_mask(text_embeds, caption_mask)
            terms["loss_video_text"] = mil_nce_loss(
                video_vt, text_embeds, caption_mask, config.temperature, config.loss_type
            )
            weights["loss_video_text"] = config.video_text_loss_weight
        loss = None
        if terms and sum(weights.values()) > 0:
            loss = sum(weights[name] * term for name, term in terms.items()) / sum(weights.values())
        return VattForPreTrainingOutput(loss=loss, **terms, **outputs)


class VattForVideoClassification(VattPreTrainedModel):
    """The video tower (no DropToken) with a linear classifier on the aggregation token (official fine-tuning head).

    Holds the video tower under the names [`VattModel`] uses, so a pretrained checkpoint loads as it is (audio, text
    and common-space weights are left out). `problem_type="multi_label_classification"` gives a multi-label head.
    """

    main_input_name = "pixel_values_videos"
    input_modalities = ("video",)
    held_modalities = ("video",)

    def __init__(self, config: VattConfig):
        super().__init__(config)
        self._build_towers(config, ("video",))
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(self.tower_output_size("video"), config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.video_embeddings.patch_embeddings

    @can_return_tuple
    def forward(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        """Class logits `(B, num_labels)` of `(B, T, 3, H, W)` clips; `loss` from `labels` per `config.problem_type`."""
        outputs = self._run_tower(
            "video", pixel_values_videos, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class VattForAudioClassification(VattPreTrainedModel):
    """The audio tower (no DropToken) with a linear classifier on the aggregation token; multi-label via
    `problem_type="multi_label_classification"` (AudioSet)."""

    main_input_name = "input_values"
    input_modalities = ("audio",)
    held_modalities = ("audio",)

    def __init__(self, config: VattConfig):
        super().__init__(config)
        self._build_towers(config, ("audio",))
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(self.tower_output_size("audio"), config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.audio_embeddings.patch_embeddings

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        """Class logits `(B, num_labels)` of `(B, S)` waveforms; `loss` from `labels` per `config.problem_type`."""
        outputs = self._run_tower("audio", input_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "VattForAudioClassification",
    "VattForPreTraining",
    "VattForPreTrainingOutput",
    "VattForVideoClassification",
    "VattModel",
    "VattModelOutput",
    "VattPreTrainedModel",
    "droptoken_indices",
    "interpolate_table",
    "mil_nce_loss",
    "nce_loss",
]
