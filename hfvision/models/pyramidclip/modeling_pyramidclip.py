"""PyramidCLIP model.

PyramidCLIP: Hierarchical Feature Alignment for Vision-language Model Pretraining (Gao et al., NeurIPS 2022,
arXiv 2204.14095). Official (inference-only) code: https://github.com/Yuting-Gao/PyramidCLIP.

A CLIP dual encoder trained on an input pyramid: the image gives a global view G, a local view L and a sequence R of
region (ROI) features; the text gives an original caption T, a summary S and an object-attribute text A. The
objective aligns peer levels (G-S, L-T) and cross levels (G-A, R-S, L-A, R-T) with an InfoNCE whose negatives are
softened by alpha (paper Sec. 3.2-3.3). Architecture details follow the official code (Sec. 1.1 of our digest):
the first `num_leff_layers` vision blocks use a LeFF MLP on patch tokens, the patch embedding is frozen, the ROI
sequence runs through the last `num_roi_layers` vision blocks (shared weights), text features are max-pooled.

Where we deviate from the official code:
- text features are max-pooled over real tokens only (the official code also pools over padding positions, which
  makes features depend on the padding length);
- the ROI branch masks padded regions with a key-padding mask (the official fixed 11x11 mask yields NaN rows when
  more than 10 regions are given);
- `logit_scale.exp()` is clamped at 100 as in CLIP/open_clip training.
The transformer blocks, attention (eager/SDPA through `ALL_ATTENTION_FUNCTIONS`) and embeddings are transformers'
CLIP layers. `config.objective = "multi_caption"` trains with an ablation instead of the paper's loss (CLIP with the
summary and attribute text as extra captions), to tell the text pyramid's share from the alignment's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.models.clip.modeling_clip import (
    CLIPMLP,
    CLIPAttention,
    CLIPEncoderLayer,
    CLIPTextEmbeddings,
    CLIPVisionEmbeddings,
)
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_pyramidclip import PyramidClipConfig, PyramidClipTextConfig, PyramidClipVisionConfig

logger = logging.get_logger(__name__)

# What a dual-model checkpoint holds beyond the image side, left out by the classification head (the prefix: heads
# saved before the head held the vision tower only).
TEXT_SIDE_KEYS = re.compile(r"^(pyramidclip\.)?(text_model\.|text_projection\.|logit_scale$)")

LOSS_TERMS = (
    "loss_global_summary",
    "loss_local_text",
    "loss_global_attribute",
    "loss_region_summary",
    "loss_local_attribute",
    "loss_region_text",
)
# The terms of the "multi_caption" ablation: the global view against the caption, the summary and the attribute text.
MULTI_CAPTION_LOSS_TERMS = ("loss_global_text", "loss_global_summary", "loss_global_attribute")
# The inputs beyond the image-caption pair that each `config.objective` trains on (given all together, or none).
OBJECTIVE_INPUTS = {
    "pyramid": ("pixel_values_local", "summary_input_ids", "attribute_input_ids", "roi_features"),
    "multi_caption": ("summary_input_ids", "attribute_input_ids"),
}


@dataclass
class PyramidClipOutput(ModelOutput):
    """Output of [`PyramidClipModel`].

    Args:
        loss: with `return_loss=True`, the objective `config.objective` names; with only `pixel_values` and
            `input_ids` it is the single-level softened contrastive loss between them.
        loss_global_summary, loss_local_text: peer-level terms L_GS and L_LT.
        loss_global_attribute, loss_region_summary: global cross-level terms L_GA and L_RS.
        loss_local_attribute, loss_region_text: local cross-level terms L_LA and L_RT.
        loss_global_text: L_GT, global view against the caption (the `"multi_caption"` objective only, which also
            sets `loss_global_summary` and `loss_global_attribute`).
        logits_per_image: `(num_images, num_texts)` scaled cosine similarities of `pixel_values` and `input_ids`.
        logits_per_text: its transpose.
        text_embeds, image_embeds: L2-normalised projected embeddings of `input_ids` and `pixel_values`.
        text_model_output, vision_model_output: outputs of the two towers.
    """

    loss: torch.FloatTensor | None = None
    loss_global_summary: torch.FloatTensor | None = None
    loss_local_text: torch.FloatTensor | None = None
    loss_global_attribute: torch.FloatTensor | None = None
    loss_region_summary: torch.FloatTensor | None = None
    loss_local_attribute: torch.FloatTensor | None = None
    loss_region_text: torch.FloatTensor | None = None
    loss_global_text: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(value.to_tuple() if isinstance(value, ModelOutput) else value for value in self.values())


class PyramidClipLeFF(nn.Module):
    """Locally-enhanced feed-forward (CeiT; official PyramidCLIP code) applied to patch tokens only.

    Linear d->4d, BN, act; depthwise 3x3 conv over the patch grid, BN, act; Linear 4d->d, BN, act. The CLS token is
    passed through unchanged, as in the official code.
    """

    def __init__(self, config: PyramidClipVisionConfig):
        super().__init__()
        self.config = config
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.norm1 = nn.BatchNorm1d(config.intermediate_size)
        self.depthwise_conv = nn.Conv2d(
            config.intermediate_size,
            config.intermediate_size,
            kernel_size=3,
            padding=1,
            groups=config.intermediate_size,
            bias=False,
        )
        self.norm2 = nn.BatchNorm2d(config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.norm3 = nn.BatchNorm1d(config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        cls_token, patch_tokens = hidden_states[:, :1], hidden_states[:, 1:]  # (B, 1, D), (B, N, D)
        batch_size, num_patches, _ = patch_tokens.shape
        grid = int(num_patches**0.5)
        if grid * grid != num_patches:
            raise ValueError(f"LeFF needs a square patch grid, got {num_patches} patches.")
        # Channels-last throughout: BatchNorm1d over the rows of (B * N, C) takes the statistics it takes over
        # (B, C, N), on a contiguous input (a transposed one gives eager and compiled kernels different strides).
        patch_tokens = self.activation_fn(self.norm1(self.fc1(patch_tokens).flatten(0, 1)))  # (B * N, 4D)
        patch_tokens = patch_tokens.view(batch_size, grid, grid, -1).permute(0, 3, 1, 2)  # (B, 4D, grid, grid) view
        patch_tokens = self.activation_fn(self.norm2(self.depthwise_conv(patch_tokens)))  # channels-last memory
        patch_tokens = patch_tokens.permute(0, 2, 3, 1).reshape(batch_size * num_patches, -1)  # (B * N, 4D)
        patch_tokens = self.activation_fn(self.norm3(self.fc2(patch_tokens)))  # (B * N, D)
        return torch.cat([cls_token, patch_tokens.view(batch_size, num_patches, -1)], dim=1)


class PyramidClipEncoderLayer(CLIPEncoderLayer):
    """CLIP's pre-LN transformer block; the MLP becomes a LeFF in the first `num_leff_layers` vision blocks."""

    def __init__(self, config: PyramidClipTextConfig | PyramidClipVisionConfig, use_leff: bool = False):
        super().__init__(config)
        if use_leff:
            self.mlp = PyramidClipLeFF(config)


class PyramidClipEncoder(nn.Module):
    """A stack of [`PyramidClipEncoderLayer`]; `layers[-k:]` can be run alone (the ROI branch does)."""

    def __init__(self, config: PyramidClipTextConfig | PyramidClipVisionConfig, num_leff_layers: int = 0):
        super().__init__()
        self.layers = nn.ModuleList(
            [PyramidClipEncoderLayer(config, use_leff=i < num_leff_layers) for i in range(config.num_hidden_layers)]
        )
        self.gradient_checkpointing = False

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        first_layer: int = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        hidden_states = inputs_embeds
        for layer in self.layers[first_layer:]:
            hidden_states = layer(hidden_states, attention_mask, **kwargs)
        return BaseModelOutput(last_hidden_state=hidden_states)


def softened_contrastive_loss(logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """Symmetric InfoNCE with softened negatives (PyramidCLIP Sec. 3.3).

    The target of row i puts `1 - alpha` on the positive i and `alpha / (N - 1)` on every negative; `alpha = 0` is
    CLIP's InfoNCE.

    Args:
        logits: `(N, N)` scaled similarities, positives on the diagonal.
        alpha: softening factor in [0, 1).

    Returns:
        Scalar: the mean of the X->Y and Y->X cross-entropies with the softened targets.
    """
    num = logits.shape[0]
    if num == 1:
        targets = torch.ones_like(logits)
    else:
        targets = torch.full_like(logits, alpha / (num - 1))
        targets.fill_diagonal_(1.0 - alpha)
    loss_x_to_y = -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
    loss_y_to_x = -(targets * logits.t().log_softmax(dim=1)).sum(dim=1).mean()
    return (loss_x_to_y + loss_y_to_x) / 2


def gather_across_processes(embeds: torch.Tensor) -> torch.Tensor:
    """Concatenate `(B, D)` embeddings of every process (with gradients), so the loss sees the global batch.

    Every rank then computes the same full loss; the all-gather backward sums the gradients of all ranks, which DDP's
    gradient averaging turns back into the gradient of the global loss (open_clip's `gather_with_grad`).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return embeds
    return torch.cat(dist_fn.all_gather(embeds), dim=0)


def _pair_loss(
    embeds: dict[str, torch.Tensor], visual: str, textual: str, logit_scale: torch.Tensor, alpha: float
) -> torch.Tensor:
    """Softened contrastive loss L_XY between the visual level `visual` and the text level `textual`."""
    return softened_contrastive_loss(logit_scale * embeds[visual] @ embeds[textual].t(), alpha)


class PyramidClipLoss(nn.Module):
    """The PyramidCLIP objective over the six normalised embeddings of a batch; returns the named terms.

    L = (1 - lambda - mu) (L_GS + L_LT) / 2 + lambda (L_GA + L_RS) / 2 + mu (L_LA + L_RT) / 2   (paper Eq. 5-7)
    """

    def __init__(self, config: PyramidClipConfig):
        super().__init__()
        self.alpha = config.softening_alpha
        self.peer_weight = config.peer_level_weight
        self.global_weight = config.cross_level_global_weight
        self.local_weight = config.cross_level_local_weight

    def forward(self, embeds: dict[str, torch.Tensor], logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
        """`embeds` maps global/local/region/text/summary/attribute to `(B, D)` normalised embeddings."""
        embeds = {name: gather_across_processes(value) for name, value in embeds.items()}

        def term(visual: str, textual: str) -> torch.Tensor:
            return _pair_loss(embeds, visual, textual, logit_scale, self.alpha)

        terms = {
            "loss_global_summary": term("global", "summary"),  # peer level
            "loss_local_text": term("local", "text"),
            "loss_global_attribute": term("global", "attribute"),  # cross level, global
            "loss_region_summary": term("region", "summary"),
            "loss_local_attribute": term("local", "attribute"),  # cross level, local
            "loss_region_text": term("region", "text"),
        }
        terms["loss"] = (
            self.peer_weight * (terms["loss_global_summary"] + terms["loss_local_text"]) / 2
            + self.global_weight * (terms["loss_global_attribute"] + terms["loss_region_summary"]) / 2
            + self.local_weight * (terms["loss_local_attribute"] + terms["loss_region_text"]) / 2
        )
        return terms


class PyramidClipMultiCaptionLoss(nn.Module):
    """Ablation, not the paper's objective: CLIP trained with the summary and attribute text as extra captions.

    The global view is paired with each text view T, S, A by the same (softened) InfoNCE, and the three are averaged:
    L = (L_GT + L_GS + L_GA) / 3. The texts are the pyramid's, the visual side is CLIP's single view; with three
    identical texts it is the single-pair loss.
    """

    def __init__(self, config: PyramidClipConfig):
        super().__init__()
        self.alpha = config.softening_alpha

    def forward(self, embeds: dict[str, torch.Tensor], logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
        """`embeds` maps global/text/summary/attribute to `(B, D)` normalised embeddings."""
        embeds = {name: gather_across_processes(value) for name, value in embeds.items()}
        terms = {
            name: _pair_loss(embeds, "global", textual, logit_scale, self.alpha)
            for name, textual in zip(MULTI_CAPTION_LOSS_TERMS, ("text", "summary", "attribute"), strict=True)
        }
        terms["loss"] = sum(terms.values()) / len(terms)
        return terms


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


def _check_input_ids(input_ids: torch.Tensor | None, vocab_size: int, max_length: int, name: str = "input_ids") -> None:
    """Raise a `ValueError` naming the argument unless `input_ids` is a non-empty `(B, T)` integer tensor of token ids
    in `[0, vocab_size)` with `0 < T <= max_length` (torch would fail inside the embedding lookup instead)."""
    if not isinstance(input_ids, torch.Tensor):
        raise ValueError(f"`{name}` is required: tokenized text of shape (batch, sequence), got {type(input_ids)}.")
    if input_ids.ndim != 2 or 0 in input_ids.shape:
        raise ValueError(f"`{name}` must have shape (batch >= 1, sequence >= 1), got {tuple(input_ids.shape)}.")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise ValueError(f"`{name}` must hold integer token ids (torch.long), got {input_ids.dtype}.")
    if input_ids.shape[1] > max_length:
        raise ValueError(
            f"`{name}` has {input_ids.shape[1]} tokens but the model takes at most {max_length}; tokenize with "
            "truncation=True."
        )
    if input_ids.device.type == "meta" or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return
    low, high = (int(value) for value in torch.aminmax(input_ids))
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"`{name}` must hold token ids in [0, {vocab_size}) (the model's vocab_size), got ids in [{low}, {high}]; "
            "was the text tokenized with this model's tokenizer?"
        )


class PyramidClipPreTrainedModel(PreTrainedModel):
    config_class = PyramidClipConfig
    base_model_prefix = "pyramidclip"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPVisionEmbeddings", "PyramidClipEncoderLayer"]
    _can_record_outputs = {"hidden_states": PyramidClipEncoderLayer, "attentions": CLIPAttention}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """CLIP's initialisation (scaled normals), plus the LeFF, ROI projection and classifier layers."""
        super()._init_weights(module)
        factor = self.config.initializer_factor
        if isinstance(module, CLIPTextEmbeddings):
            init.normal_(module.token_embedding.weight, std=factor * 0.02)
            init.normal_(module.position_embedding.weight, std=factor * 0.02)
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
        elif isinstance(module, CLIPVisionEmbeddings):
            init.normal_(module.class_embedding, std=module.embed_dim**-0.5 * factor)
            init.normal_(module.patch_embedding.weight, std=module.config.initializer_range * factor)
            init.normal_(module.position_embedding.weight, std=module.config.initializer_range * factor)
            init.copy_(module.position_ids, torch.arange(module.num_positions).expand((1, -1)))
        elif isinstance(module, CLIPAttention):
            in_proj_std = (module.embed_dim**-0.5) * ((2 * module.config.num_hidden_layers) ** -0.5) * factor
            for proj in (module.q_proj, module.k_proj, module.v_proj):
                init.normal_(proj.weight, std=in_proj_std)
            init.normal_(module.out_proj.weight, std=module.embed_dim**-0.5 * factor)
        elif isinstance(module, (CLIPMLP, PyramidClipLeFF)):
            hidden_size, num_layers = module.config.hidden_size, module.config.num_hidden_layers
            init.normal_(module.fc1.weight, std=(2 * hidden_size) ** -0.5 * factor)
            init.normal_(module.fc2.weight, std=hidden_size**-0.5 * (2 * num_layers) ** -0.5 * factor)
        elif isinstance(module, PyramidClipVisionModel):
            init.normal_(module.roi_projection.weight, std=module.config.hidden_size**-0.5 * factor)
        elif isinstance(module, PyramidClipModel):
            init.normal_(module.text_projection.weight, std=module.text_embed_dim**-0.5 * factor)
            init.normal_(module.visual_projection.weight, std=module.vision_embed_dim**-0.5 * factor)
            init.constant_(module.logit_scale, module.config.logit_scale_init_value)
        elif isinstance(module, PyramidClipForImageClassification):
            init.normal_(module.visual_projection.weight, std=module.config.vision_config.hidden_size**-0.5 * factor)
            init.normal_(module.classifier.weight, std=module.config.projection_dim**-0.5 * factor)
            init.zeros_(module.classifier.bias)


class PyramidClipTextModel(PyramidClipPreTrainedModel):
    """The text tower: CLIP's causal transformer; `pooler_output` is the max over real tokens after the final LN."""

    config_class = PyramidClipTextConfig
    main_input_name = "input_ids"
    input_modalities = ("text",)
    _input_embed_layer = "token_embedding"

    def __init__(self, config: PyramidClipTextConfig):
        super().__init__(config)
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = PyramidClipEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.token_embedding = value

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Encode `input_ids` `(B, T)`; returns `last_hidden_state` `(B, T, D)` and `pooler_output` `(B, D)`."""
        _check_input_ids(input_ids, self.config.vocab_size, self.config.max_position_embeddings)
        hidden_states = self.embeddings(input_ids=input_ids, position_ids=position_ids)
        causal_mask = create_causal_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask, cache=None
        )
        kwargs.pop("is_causal", None)
        encoder_outputs = self.encoder(hidden_states, causal_mask, is_causal=True, **kwargs)
        last_hidden_state = self.final_layer_norm(encoder_outputs.last_hidden_state)  # (B, T, D)

        # Max-pool over tokens (official code), excluding padding so features do not depend on the pad length.
        pooling_input = last_hidden_state
        if attention_mask is not None:
            padding = ~attention_mask.bool()[..., None]
            pooling_input = last_hidden_state.masked_fill(padding, torch.finfo(last_hidden_state.dtype).min)
        pooled_output = pooling_input.max(dim=1).values  # (B, D)
        return BaseModelOutputWithPooling(last_hidden_state=last_hidden_state, pooler_output=pooled_output)


class PyramidClipVisionModel(PyramidClipPreTrainedModel):
    """The vision tower: CLIP ViT with LeFF blocks and a frozen patch embedding, plus the ROI branch."""

    config_class = PyramidClipVisionConfig
    input_modalities = ("image",)
    _input_embed_layer = "patch_embedding"

    def __init__(self, config: PyramidClipVisionConfig):
        super().__init__(config)
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = PyramidClipEncoder(config, num_leff_layers=config.num_leff_layers)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # proj_pre of the official code: region features -> transformer width.
        self.roi_projection = nn.Linear(config.roi_feature_dim, config.hidden_size, bias=False)
        self.post_init()
        self.train(self.training)

    def train(self, mode: bool = True) -> PyramidClipVisionModel:
        """Set the mode and (re)freeze the patch embedding, as the official code does in `train()`: loading replaces
        parameters (so a flag set in `__init__` would be lost) and `from_pretrained` ends with `eval()`."""
        super().train(mode)
        if self.config.freeze_patch_embedding:
            self.embeddings.patch_embedding.requires_grad_(False)
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Encode `pixel_values` `(B, C, H, W)`; `pooler_output` is the post-LN CLS token `(B, D)`."""
        _check_pixel_values(pixel_values, self.config.num_channels, self.dtype)
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        hidden_states = self.pre_layernorm(hidden_states)  # (B, 1 + N, D)
        last_hidden_state = self.encoder(hidden_states, **kwargs).last_hidden_state
        pooled_output = self.post_layernorm(last_hidden_state[:, 0])
        return BaseModelOutputWithPooling(last_hidden_state=last_hidden_state, pooler_output=pooled_output)

    def encode_regions(self, roi_features: torch.Tensor, roi_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ROI branch (paper Sec. 3.1): region features through the last `num_roi_layers` blocks.

        Args:
            roi_features: `(B, M, roi_feature_dim)` region features.
            roi_mask: `(B, M)`, 1 for real regions and 0 for padding; `None` means all real.

        Returns:
            `(B, D)` post-LN CLS token of the region sequence.
        """
        if roi_features.ndim != 3 or roi_features.shape[-1] != self.config.roi_feature_dim:
            raise ValueError(
                f"`roi_features` must have shape (batch, regions, {self.config.roi_feature_dim}), "
                f"got {tuple(roi_features.shape)}."
            )
        batch_size = roi_features.shape[0]
        region_tokens = self.roi_projection(roi_features.to(self.roi_projection.weight.dtype))  # (B, M, D)
        cls_token = self.embeddings.class_embedding.expand(batch_size, 1, -1)
        hidden_states = self.pre_layernorm(torch.cat([cls_token, region_tokens], dim=1))  # no position embedding
        attention_mask = None
        if roi_mask is not None:
            key_mask = torch.cat([roi_mask.new_ones(batch_size, 1), roi_mask], dim=1)  # the CLS token is always kept
            attention_mask = create_bidirectional_mask(self.config, hidden_states, key_mask)  # key-padding mask
        first_layer = self.config.num_hidden_layers - self.config.num_roi_layers
        last_hidden_state = self.encoder(hidden_states, attention_mask, first_layer=first_layer).last_hidden_state
        return self.post_layernorm(last_hidden_state[:, 0])


class PyramidClipModel(PyramidClipPreTrainedModel):
    """PyramidCLIP dual encoder: features, image-text logits and, with `return_loss=True`, the PyramidCLIP loss (or
    the ablation `config.objective` names)."""

    config_class = PyramidClipConfig
    main_input_name = "input_ids"  # the first forward argument, as CLIPModel's

    def __init__(self, config: PyramidClipConfig):
        super().__init__(config)
        self.text_embed_dim = config.text_config.hidden_size
        self.vision_embed_dim = config.vision_config.hidden_size
        self.text_model = PyramidClipTextModel._from_config(config.text_config)
        self.vision_model = PyramidClipVisionModel._from_config(config.vision_config)
        self.visual_projection = nn.Linear(self.vision_embed_dim, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(self.text_embed_dim, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        # The objective over the inputs beyond the image-caption pair: the paper's, or the multi-caption ablation.
        loss_class = PyramidClipMultiCaptionLoss if config.objective == "multi_caption" else PyramidClipLoss
        self.pyramid_loss = loss_class(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Text tower output whose `pooler_output` is the projected (unnormalised) text embedding `(B, P)`."""
        text_outputs = self.text_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, return_dict=True, **kwargs
        )
        text_outputs.pooler_output = self.text_projection(text_outputs.pooler_output)
        return text_outputs

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """Vision tower output whose `pooler_output` is the projected (unnormalised) image embedding `(B, P)`."""
        vision_outputs = self.vision_model(
            pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs
        )
        vision_outputs.pooler_output = self.visual_projection(vision_outputs.pooler_output)
        return vision_outputs

    def get_region_features(self, roi_features: torch.Tensor, roi_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Projected (unnormalised) embedding `(B, P)` of a region sequence `(B, M, roi_feature_dim)`."""
        return self.visual_projection(self.vision_model.encode_regions(roi_features, roi_mask))

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values_local: torch.FloatTensor | None = None,
        summary_input_ids: torch.LongTensor | None = None,
        summary_attention_mask: torch.Tensor | None = None,
        attribute_input_ids: torch.LongTensor | None = None,
        attribute_attention_mask: torch.Tensor | None = None,
        roi_features: torch.FloatTensor | None = None,
        roi_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> PyramidClipOutput:
        r"""Image-text logits, embeddings and (with `return_loss=True`) the PyramidCLIP loss.

        Args:
            input_ids, attention_mask, position_ids: the original caption T, `(B_t, L)`.
            pixel_values: the global view G, `(B_i, C, H, W)`.
            pixel_values_local: the local view L, `(B, C, H, W)`.
            summary_input_ids, summary_attention_mask: the summary S, `(B, L)`.
            attribute_input_ids, attribute_attention_mask: the object-attribute text A, `(B, L)`.
            roi_features, roi_mask: the region sequence R, `(B, M, roi_feature_dim)` and `(B, M)`.
            return_loss: compute the loss. With the inputs `config.objective` trains on, that objective with each
                term: `"pyramid"` reads the whole pyramid, `"multi_caption"` the summary and attribute texts only;
                with only `pixel_values` and `input_ids` (pairs on the diagonal), the softened contrastive loss.
        """
        if input_ids is None or pixel_values is None:
            inputs = {"input_ids": input_ids, "pixel_values": pixel_values}
            missing = [name for name, value in inputs.items() if value is None]
            raise ValueError(
                f"PyramidClipModel.forward needs both `input_ids` and `pixel_values`; missing {missing}. "
                "Use `get_text_features` or `get_image_features` to embed a single modality."
            )
        pyramid = {
            "pixel_values_local": pixel_values_local,
            "summary_input_ids": summary_input_ids,
            "attribute_input_ids": attribute_input_ids,
            "roi_features": roi_features,
        }
        objective, used = self.config.objective, OBJECTIVE_INPUTS[self.config.objective]
        given = [name for name, value in pyramid.items() if value is not None]
        unused = [name for name in given if name not in used]
        if unused:
            raise ValueError(
                f"{unused} are not read by the objective {objective!r} (config.objective), which trains on {list(used)}"
                " beside the image-caption pair; leave them out."
            )
        if given and len(given) != len(used):
            raise ValueError(
                f"Pyramid inputs must be given together; got {given}, missing "
                f"{[name for name in used if name not in given]}. PyramidClipProcessor(..., return_pyramid=True) "
                "builds all of them."
            )
        if given:  # named here: the towers' own checks would call them `input_ids` / `pixel_values`
            text_config, vision_config = self.config.text_config, self.config.vision_config
            if pixel_values_local is not None:
                _check_pixel_values(pixel_values_local, vision_config.num_channels, self.dtype, "pixel_values_local")
            for name in ("summary_input_ids", "attribute_input_ids"):
                _check_input_ids(pyramid[name], text_config.vocab_size, text_config.max_position_embeddings, name)

        vision_outputs = self.get_image_features(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )
        text_outputs = self.get_text_features(input_ids, attention_mask, position_ids, **kwargs)
        image_embeds = nn.functional.normalize(vision_outputs.pooler_output, dim=-1)
        text_embeds = nn.functional.normalize(text_outputs.pooler_output, dim=-1)
        logit_scale = self.logit_scale.exp().clamp(max=100)
        logits_per_text = logit_scale * text_embeds @ image_embeds.t()  # (B_t, B_i)

        terms: dict[str, torch.Tensor] = {}
        if return_loss and given:
            embeds = {
                "global": image_embeds,
                "text": text_embeds,
                "summary": self.get_text_features(summary_input_ids, summary_attention_mask).pooler_output,
                "attribute": self.get_text_features(attribute_input_ids, attribute_attention_mask).pooler_output,
            }
            if objective == "pyramid":  # the visual pyramid; the multi-caption ablation keeps CLIP's single view
                embeds["local"] = self.get_image_features(pixel_values_local, interpolate_pos_encoding).pooler_output
                embeds["region"] = self.get_region_features(roi_features, roi_mask)
            embeds = {name: nn.functional.normalize(value, dim=-1) for name, value in embeds.items()}
            terms = self.pyramid_loss(embeds, logit_scale)
        elif return_loss:
            if logits_per_text.shape[0] != logits_per_text.shape[1]:
                raise ValueError(
                    f"`return_loss=True` needs one caption per image, got {logits_per_text.shape[0]} texts for "
                    f"{logits_per_text.shape[1]} images."
                )
            gathered_image, gathered_text = gather_across_processes(image_embeds), gather_across_processes(text_embeds)
            terms["loss"] = softened_contrastive_loss(
                logit_scale * gathered_text @ gathered_image.t(), self.config.softening_alpha
            )

        return PyramidClipOutput(
            **terms,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )


class PyramidClipForImageClassification(PyramidClipPreTrainedModel):
    """PyramidCLIP's image side with a linear classifier on the normalised image embedding.

    As `CLIPForImageClassification`, it holds the vision tower only (and the visual projection its classifier reads):
    a [`PyramidClipModel`] checkpoint loads into it as it is, its text tower, text projection and temperature left out
    (one log line says so, instead of a load report listing every text weight). The ROI projection of the vision tower
    is not used here and stays frozen. The classifier can be initialised from class-name prompts embedded by a dual
    model's text tower (`init_classifier_from_text`), so the untrained head already is the zero-shot classifier.
    """

    def __init__(self, config: PyramidClipConfig):
        super().__init__(config)
        self.vision_model = PyramidClipVisionModel._from_config(config.vision_config)
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.classifier = nn.Linear(config.projection_dim, config.num_labels)
        self.post_init()
        self.train(self.training)

    def train(self, mode: bool = True) -> PyramidClipForImageClassification:
        """Set the mode and (re)freeze the ROI projection, which classification does not use (kept across loading)."""
        super().train(mode)
        self.vision_model.roi_projection.requires_grad_(False)
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.vision_model.get_input_embeddings()

    def _adjust_missing_and_unexpected_keys(self, loading_info: Any) -> None:
        """Leave a dual checkpoint's text side out of the load report and say so once (transformers' loading hook)."""
        text_keys = {key for key in loading_info.unexpected_keys if TEXT_SIDE_KEYS.match(key)}
        loading_info.unexpected_keys -= text_keys
        super()._adjust_missing_and_unexpected_keys(loading_info)
        if text_keys:
            logger.info(
                "%s holds the vision tower only: the checkpoint's text side (%d tensors: text_model, text_projection, "
                "logit_scale) was not loaded.",
                type(self).__name__,
                len(text_keys),
            )

    @torch.no_grad()
    def init_classifier_from_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        num_templates: int = 1,
        dual_model: PyramidClipModel | None = None,
    ) -> None:
        """Set the classifier to the zero-shot head: scaled, normalised mean of each class's prompt embeddings.

        Args:
            input_ids: `(num_labels * num_templates, L)` prompts, class-major (all templates of class 0 first).
            attention_mask: matching mask.
            num_templates: prompts per class; their normalised embeddings are averaged then re-normalised.
            dual_model: the [`PyramidClipModel`] whose text tower and temperature embed the prompts; by default the
                one this head was loaded from (`self.name_or_path`, which must then be a dual-model checkpoint).
        """
        if input_ids.shape[0] != self.config.num_labels * num_templates:
            raise ValueError(
                f"`input_ids` must hold num_labels * num_templates = {self.config.num_labels * num_templates} "
                f"prompts, got {input_ids.shape[0]}."
            )
        if dual_model is None:
            dual_model = self._dual_model_of_checkpoint()
        text_embeds = dual_model.get_text_features(input_ids, attention_mask).pooler_output
        text_embeds = nn.functional.normalize(text_embeds, dim=-1).view(self.config.num_labels, num_templates, -1)
        class_embeds = nn.functional.normalize(text_embeds.mean(dim=1), dim=-1)
        scale = dual_model.logit_scale.exp().clamp(max=100)
        self.classifier.weight.copy_((class_embeds * scale).to(self.classifier.weight))
        self.classifier.bias.zero_()

    def _dual_model_of_checkpoint(self) -> PyramidClipModel:
        """The [`PyramidClipModel`] of the checkpoint this head was loaded from (for its text tower)."""
        try:
            dual_model, info = PyramidClipModel.from_pretrained(self.name_or_path, output_loading_info=True)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"`dual_model` is needed: {self.name_or_path!r} cannot be loaded as a PyramidClipModel ({error})."
            ) from error
        if any(key.startswith("text_model.") for key in info["missing_keys"]):
            raise ValueError(
                f"`dual_model` is needed: the checkpoint {self.name_or_path!r} has no text tower (a classification "
                "checkpoint); pass the PyramidClipModel whose text tower embeds the prompts."
            )
        return dual_model.to(self.device).eval()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        """Class logits `(B, num_labels)`; `loss` from `labels` following `config.problem_type`."""
        vision_outputs = self.vision_model(
            pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs
        )
        image_embeds = self.visual_projection(vision_outputs.pooler_output)  # (B, P)
        logits = self.classifier(nn.functional.normalize(image_embeds, dim=-1))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=vision_outputs.hidden_states,
            attentions=vision_outputs.attentions,
        )


__all__ = [
    "LOSS_TERMS",
    "MULTI_CAPTION_LOSS_TERMS",
    "PyramidClipForImageClassification",
    "PyramidClipLoss",
    "PyramidClipModel",
    "PyramidClipMultiCaptionLoss",
    "PyramidClipOutput",
    "PyramidClipPreTrainedModel",
    "PyramidClipTextModel",
    "PyramidClipVisionModel",
    "softened_contrastive_loss",
]
