"""Learning to Scaffold (SMaT): a ViT that exposes its pre-softmax attention scores, and the explainers of the paper.

Learning to Scaffold: Optimizing Model Explanations for Teaching (Fernandes, Treviso, Pruthi, Martins, Neubig;
NeurIPS 2022, arXiv 2204.10810). Official code (JAX/Flax): https://github.com/CoderPat/learning-scaffold.

Contents, in the paper's order:
- `ScaffoldVitModel` / `ScaffoldVitForImageClassification`: transformers' ViT layers (loads plain ViT checkpoints; the
  classifier pooling is new) that return every layer's pre-softmax attention scores `Q K^T / sqrt(d)` `(B, H, T, T)`
  with `output_attention_scores=True`, under any attention implementation (the scores are computed from the
  layer's own queries and keys, so SDPA keeps running the attention itself). The classifier reads a ScalarMix of the
  token-mean of every hidden state, as the official code (`pooling="scalar_mix_mean"`; `"cls"` is plain ViT's).
- `AttentionExplainer`: the parameterised explainer (Sec. 3 of the paper): head weights `lambda = sparsemax(w)`
  over the `L * H` heads, scores averaged over query rows, softmax over tokens. Its one parameter `head_coeffs` is
  what SMaT meta-learns; a trained teacher explainer is a Hub repo of its own. With frozen uniform coefficients it is
  the "attention, all layers" baseline, with `layer_idx=-1` the "last layer" baseline.
- `GradientExplainer`: the static gradient baselines (gradient norm, gradient x input, integrated gradients w.r.t.
  the embedding output), with the same `explain(model, pixel_values)` interface.
- `sparsemax`, `entmax15`, `explanation_kl`: the head normalisers and the explanation loss KL(teacher || student).

Deviations from the official code (also in the model card):
- Integrated gradients uses the textbook path point `baseline + alpha (x - baseline)` with a midpoint rule; the
  official code also multiplies the path point by the Riemann weight (a quirk; see the digest, A3.5) and uses a
  trapezoid rule whose alpha = 0 point meets the 1/sqrt(eps) LayerNorm gradient at a zero embedding.
- The official ViT fork exposes raw scores by editing the attention; here they are computed from the same queries
  and keys beside whatever attention kernel runs (identical values, checked against log of eager probabilities).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.vit.modeling_vit import (
    ViTAttention,
    ViTEmbeddings,
    ViTLayer,
    ViTPreTrainedModel,
    eager_attention_forward,
)
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_scaffold import GRADIENT_METHODS, AttentionExplainerConfig, ScaffoldVitConfig

# Plain ViT checkpoints (`google/vit-base-patch16-224-in21k`, `ViTForImageClassification.save_pretrained`) store the
# blocks under their historical names (`encoder.layer.N.attention.attention.query`); transformers renames them for its
# `ViTModel` by class name. The same renaming, registered for the encoder here, loads them into `ScaffoldVitModel`
# (our own checkpoints are saved with the module names, see `ScaffoldVitPreTrainedModel.save_pretrained`).
register_checkpoint_conversion_mapping(
    "ScaffoldVitModel", get_checkpoint_conversion_mapping("ViTModel"), overwrite=True
)

# Probabilities are clamped to [EPS, 1 - EPS] before logs in the explanation loss (official `kl_div` losses).
PROBABILITY_EPS = 1e-7


@dataclass
class ScaffoldVitModelOutput(ModelOutput):
    """Output of [`ScaffoldVitModel`].

    Args:
        last_hidden_state: `(B, T, D)` tokens of the last layer (T = 1 + patches), after the final LayerNorm with
            `pooling="cls"` (the ScalarMix pooling, as the official code, reads pre-LayerNorm states and has none).
        pooler_output: `(B, D)` what the classifier reads: the ScalarMix of token means, or the CLS token.
        hidden_states: embedding output + every layer's output, each `(B, T, D)` (with `output_hidden_states`).
        attentions: per layer `(B, H, T, T)` attention probabilities (with `output_attentions`, eager only).
        attention_scores: per layer `(B, H, T, T)` pre-softmax scores `Q K^T / sqrt(d)` (with
            `output_attention_scores`).
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    attention_scores: tuple[torch.Tensor, ...] | None = None


@dataclass
class ScaffoldVitImageClassifierOutput(ModelOutput):
    """Output of [`ScaffoldVitForImageClassification`].

    Args:
        loss: classification loss (`config.problem_type`) when `labels` are given.
        logits: `(B, num_labels)`.
        hidden_states, attentions, attention_scores: as [`ScaffoldVitModelOutput`].
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    attention_scores: tuple[torch.Tensor, ...] | None = None


@dataclass
class AttentionExplainerOutput(ModelOutput):
    """Output of the explainers.

    Args:
        explanation: `(B, T)` distribution over tokens (CLS included), rows sum to 1.
        token_logits: `(B, T)` the pre-softmax saliency energies (-inf at masked tokens).
        head_weights: `(num_coefficients,)` the normalised head weights (attention explainer only).
        saliency_map: `(B, rows, cols)` the patch part of `explanation`, renormalised, on the patch grid.
    """

    explanation: torch.Tensor | None = None
    token_logits: torch.Tensor | None = None
    head_weights: torch.Tensor | None = None
    saliency_map: torch.Tensor | None = None


# --- normalisers and loss (paper Sec. 3, Eq. for the parameterised explainer) -----------------------------------
def sparsemax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sparsemax (Martins & Astudillo 2016): the Euclidean projection of `logits` onto the simplex along `dim`.

    Sort-based closed form; differentiable by autograd (its Jacobian is the sparsemax Jacobian almost everywhere).

    Args:
        logits: any shape.
        dim: the dimension normalised.

    Returns:
        Same shape, non-negative, summing to 1 along `dim`, exactly 0 outside the support.
    """
    logits = logits.transpose(dim, -1)
    sorted_logits = logits.sort(dim=-1, descending=True).values
    ranks = torch.arange(1, logits.shape[-1] + 1, device=logits.device, dtype=logits.dtype)
    cumulative = sorted_logits.cumsum(-1) - 1.0
    support_size = (ranks * sorted_logits > cumulative).sum(-1, keepdim=True)  # k(z) >= 1
    threshold = cumulative.gather(-1, support_size - 1) / support_size.to(logits.dtype)
    return (logits - threshold).clamp_min(0.0).transpose(dim, -1)


def entmax15(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """1.5-entmax (Peters, Niculae, Martins 2019), exact sort-based algorithm, along `dim`.

    Args:
        logits: any shape.
        dim: the dimension normalised.

    Returns:
        Same shape, a sparse distribution along `dim`.
    """
    logits = logits.transpose(dim, -1) / 2
    logits = logits - logits.amax(-1, keepdim=True)
    sorted_logits = logits.sort(dim=-1, descending=True).values
    ranks = torch.arange(1, logits.shape[-1] + 1, device=logits.device, dtype=logits.dtype)
    mean = sorted_logits.cumsum(-1) / ranks
    mean_of_squares = (sorted_logits**2).cumsum(-1) / ranks
    delta = (1 - ranks * (mean_of_squares - mean**2)) / ranks
    tau = mean - delta.clamp_min(0).sqrt()
    support_size = (tau <= sorted_logits).sum(-1, keepdim=True)
    tau_star = tau.gather(-1, support_size - 1)
    return ((logits - tau_star).clamp_min(0) ** 2).transpose(dim, -1)


def normalize_head_coefficients(coefficients: torch.Tensor, normalizer: str) -> torch.Tensor:
    """Head weights from coefficients: `sparsemax` (paper), `softmax`, `entmax15` or `none` (identity)."""
    if normalizer == "sparsemax":
        return sparsemax(coefficients)
    if normalizer == "softmax":
        return coefficients.softmax(-1)
    if normalizer == "entmax15":
        return entmax15(coefficients)
    if normalizer == "none":
        return coefficients
    raise ValueError(f"`normalizer` must be 'sparsemax', 'softmax', 'entmax15' or 'none', got {normalizer!r}.")


def explanation_kl(
    teacher_explanation: torch.Tensor, student_explanation: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The explanation loss `mean_B KL(e_T || e_S)` (teacher is the target), probabilities clamped before logs.

    Args:
        teacher_explanation: `(B, T)` teacher distributions over tokens.
        student_explanation: `(B, T)` student distributions over tokens.
        attention_mask: optional `(B, T)`, 1 for real tokens; masked tokens contribute nothing.

    Returns:
        A scalar.
    """
    if teacher_explanation.shape != student_explanation.shape or teacher_explanation.ndim != 2:
        raise ValueError(
            "`teacher_explanation` and `student_explanation` must both be (batch, tokens), got "
            f"{tuple(teacher_explanation.shape)} and {tuple(student_explanation.shape)}."
        )
    teacher = teacher_explanation.clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    student = student_explanation.clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    terms = teacher * (teacher.log() - student.log())
    if attention_mask is not None:
        terms = terms * attention_mask.to(terms.dtype)
    return terms.sum(-1).mean()


def saliency_map_from_explanation(
    explanation: torch.Tensor, patch_grid: tuple[int, int], num_prefix_tokens: int
) -> torch.Tensor:
    """The patch part of `(B, T)` explanations, renormalised, as `(B, rows, cols)` maps (prefix tokens dropped)."""
    patches = explanation[:, num_prefix_tokens:]
    rows, cols = patch_grid
    if patches.shape[1] != rows * cols:
        raise ValueError(
            f"explanations have {patches.shape[1]} patch tokens after {num_prefix_tokens} prefix token(s), but "
            f"`patch_grid` {list(patch_grid)} needs {rows * cols}."
        )
    patches = patches / patches.sum(-1, keepdim=True).clamp_min(torch.finfo(patches.dtype).tiny)
    return patches.reshape(-1, rows, cols)


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


# --- the ViT (transformers' layers; attention scores beside the attention kernel) ------------------------------
class ScaffoldVitAttention(ViTAttention):
    """transformers' ViT self-attention (`q_proj`/`k_proj`/`v_proj`/`o_proj`, any attention implementation) that can
    also return the pre-softmax scores `Q K^T * scaling` `(B, H, T, T)` the explainers read (paper Sec. 3)."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attention_scores: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, H, T, d)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = self.o_proj(attn_output.reshape(*input_shape, -1).contiguous())
        # the raw scores A = Q K^T / sqrt(d) the official Flax fork exposes (dropout never touches them)
        scores = (
            torch.matmul(query_states, key_states.transpose(2, 3)) * self.scaling if output_attention_scores else None
        )
        return attn_output, attn_weights, scores


class ScaffoldVitLayer(ViTLayer):
    """transformers' pre-LN ViT block with [`ScaffoldVitAttention`] (same parameter names, so ViT weights load)."""

    def __init__(self, config: ScaffoldVitConfig):
        super().__init__(config)
        self.attention = ScaffoldVitAttention(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attention_scores: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        attention_output, _, _ = self.attention(
            self.layernorm_before(hidden_states), attention_mask, output_attention_scores, **kwargs
        )
        hidden_states = hidden_states + self.dropout(attention_output)
        return hidden_states + self.dropout(self.mlp(self.layernorm_after(hidden_states)))


class ScaffoldVitScalarMix(nn.Module):
    """The official classifier pooling: `gamma * sum_l softmax(w)_l * mean_t h^l_t` over the L + 1 hidden states.

    `w` starts at zero (equal weights) and `gamma` at one, as the official `ScalarMix`.
    """

    def __init__(self, num_states: int):
        super().__init__()
        self.mix_logits = nn.Parameter(torch.zeros(num_states))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, hidden_states: list[torch.Tensor]) -> torch.Tensor:
        means = torch.stack([state.mean(dim=1) for state in hidden_states])  # (L + 1, B, D)
        weights = self.mix_logits.softmax(-1).to(means.dtype)
        return self.gamma * torch.einsum("l,lbd->bd", weights, means)


class ScaffoldVitPreTrainedModel(ViTPreTrainedModel):
    config_class = ScaffoldVitConfig
    config: ScaffoldVitConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False
    _no_split_modules = ["ViTEmbeddings", "ScaffoldVitLayer"]
    _can_record_outputs = {
        "hidden_states": ScaffoldVitLayer,
        "attentions": OutputRecorder(ScaffoldVitAttention, index=1),
        "attention_scores": OutputRecorder(ScaffoldVitAttention, index=2),
    }

    def save_pretrained(
        self, save_directory: Any, *args: Any, save_original_format: bool = False, **kwargs: Any
    ) -> Any:
        """`PreTrainedModel.save_pretrained`, writing the modules' own weight names by default.

        transformers would otherwise write ViT's historical names (the reverse of the conversion registered above);
        both load, but the module names keep a checkpoint's keys equal to `state_dict()`.
        """
        return super().save_pretrained(save_directory, *args, save_original_format=save_original_format, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """ViT's initialisation (normal(0, initializer_range) Linear/Conv, truncated-normal CLS and positions) plus
        the ScalarMix (zero mixing logits, unit gamma)."""
        super()._init_weights(module)
        if isinstance(module, ScaffoldVitScalarMix):
            init.zeros_(module.mix_logits)
            init.ones_(module.gamma)


class ScaffoldVitModel(ScaffoldVitPreTrainedModel):
    """The ViT encoder of SMaT: patch + position embeddings with a CLS token, pre-LN blocks and the classifier pooling
    (`config.pooling`; the final LayerNorm only with `"cls"`)."""

    def __init__(self, config: ScaffoldVitConfig):
        super().__init__(config)
        self.embeddings = ViTEmbeddings(config)
        self.layers = nn.ModuleList([ScaffoldVitLayer(config) for _ in range(config.num_hidden_layers)])
        # The official classifier reads the pre-LayerNorm hidden states, so the final LayerNorm exists only for "cls"
        # (a plain ViT checkpoint's final LayerNorm is then an unused key).
        self.layernorm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.pooling == "cls" else None
        )
        self.scalar_mix = (
            ScaffoldVitScalarMix(config.num_hidden_layers + 1) if config.pooling == "scalar_mix_mean" else None
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def check_pixel_values(self, pixel_values: torch.Tensor | None, interpolate_pos_encoding: bool) -> None:
        """Validate `pixel_values` `(B, C, H, W)` against the config (channels, dtype, size)."""
        _check_pixel_values(pixel_values, self.config.num_channels, self.dtype)
        size, patch = self.config.image_size, self.config.patch_size
        height, width = pixel_values.shape[2:]
        if interpolate_pos_encoding and (height % patch or width % patch):
            raise ValueError(f"`pixel_values` height and width must be multiples of {patch}, got {height}x{width}.")
        if not interpolate_pos_encoding and (height, width) != (size, size):
            raise ValueError(
                f"`pixel_values` must be {size}x{size} pixels, got {height}x{width}; pass "
                "`interpolate_pos_encoding=True` for other sizes (multiples of `patch_size`)."
            )

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ScaffoldVitModelOutput:
        r"""Encode images.

        Args:
            pixel_values: `(B, C, H, W)` normalised images of `config.image_size` (other multiples of the patch size
                with `interpolate_pos_encoding`).
            inputs_embeds: `(B, T, D)` an embedding output (patch + position embeddings with the CLS token) to run
                the blocks on instead of `pixel_values`; the gradient explainers differentiate with respect to it.
            interpolate_pos_encoding: resize the position table to the input's patch grid.
            kwargs: `output_attention_scores=True` records every layer's pre-softmax scores (also read from the
                config); `output_hidden_states`, `output_attentions` and attention kwargs as in transformers.
        """
        output_attention_scores = kwargs.pop("output_attention_scores", None)
        if output_attention_scores is None:
            output_attention_scores = getattr(self.config, "output_attention_scores", False)
        if (pixel_values is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `pixel_values` and `inputs_embeds`.")
        if inputs_embeds is None:
            self.check_pixel_values(pixel_values, interpolate_pos_encoding)
            embedding_output = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        else:
            if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(
                    f"`inputs_embeds` must be (batch, tokens, {self.config.hidden_size}), got "
                    f"{tuple(inputs_embeds.shape)}."
                )
            embedding_output = inputs_embeds
        hidden_states = embedding_output  # (B, T, D)
        layer_states = [hidden_states]
        for layer in self.layers:
            hidden_states = layer(hidden_states, None, output_attention_scores=output_attention_scores, **kwargs)
            layer_states.append(hidden_states)
        sequence_output = self.layernorm(hidden_states) if self.layernorm is not None else hidden_states
        # classifier input: ScalarMix of the token means of every (pre-LayerNorm) hidden state, or the CLS token
        pooled = self.scalar_mix(layer_states) if self.scalar_mix is not None else sequence_output[:, 0]
        return ScaffoldVitModelOutput(last_hidden_state=sequence_output, pooler_output=pooled)


class ScaffoldVitForImageClassification(ScaffoldVitPreTrainedModel):
    """SMaT's teacher/student classifier: [`ScaffoldVitModel`] and a linear layer on its pooled output.

    Loads plain ViT checkpoints (`ViTModel` / `ViTForImageClassification` weights, e.g.
    `google/vit-base-patch16-224-in21k`) with the ScalarMix and the classifier newly initialised.
    """

    def __init__(self, config: ScaffoldVitConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = ScaffoldVitModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.save_pretrained`, shipping the image-explanation pipeline with every checkpoint.

        config.json gets the pipeline's `custom_pipelines` entry, and `pipeline_scaffold.py` is written beside the
        model's code (transformers copies the files a modeling file imports relatively, and fetches them with it when
        the model is loaded as remote code). So a checkpoint saved any way (`save_pretrained`, `push_to_hub`,
        `Trainer`, a pipeline) runs `pipeline("image-explanation", model=path_or_repo_id, trust_remote_code=True)`
        without hfvision, also after being re-saved there.
        """
        from .pipeline_scaffold import ImageExplanationPipeline

        pipeline_class = ImageExplanationPipeline
        impl = f"{pipeline_class.__module__.rsplit('.', 1)[-1]}.{pipeline_class.__name__}"
        self.config.custom_pipelines = {
            **(getattr(self.config, "custom_pipelines", None) or {}),
            "image-explanation": {"impl": impl, "pt": ["AutoModelForImageClassification"], "type": "image"},
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        return self.vit.get_input_embeddings()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ScaffoldVitImageClassifierOutput:
        r"""Class logits `(B, num_labels)`; `loss` from `labels` following `config.problem_type`.

        Args:
            pixel_values: `(B, C, H, W)` normalised images.
            labels: `(B,)` class ids (or targets for regression / multi-label problems).
            inputs_embeds: `(B, T, D)` embedding output instead of `pixel_values` (see [`ScaffoldVitModel`]).
            interpolate_pos_encoding: resize the position table to the input's patch grid.
            kwargs: `output_attention_scores`, `output_hidden_states`, `output_attentions`, attention kwargs.
        """
        outputs = self.vit(
            pixel_values, inputs_embeds=inputs_embeds, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )
        logits = self.classifier(outputs.pooler_output)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ScaffoldVitImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            attention_scores=outputs.attention_scores,
        )


# --- the explainers (paper Sec. 3: parameterised attention explainer; Sec. 5 baselines) --------------------------
def _stack_heads(attention_scores: Any, name: str = "attention_scores") -> torch.Tensor:
    """`(B, L * H, T, T)` from a per-layer tuple of `(B, H, T, T)` tensors (or such a tensor itself)."""
    if isinstance(attention_scores, torch.Tensor):
        layers = [attention_scores]
    elif isinstance(attention_scores, (tuple, list)) and attention_scores:
        layers = list(attention_scores)
    else:
        raise ValueError(
            f"`{name}` must be a non-empty tuple of (batch, heads, tokens, tokens) tensors (one per layer), got "
            f"{type(attention_scores).__name__}."
        )
    for index, layer in enumerate(layers):
        if not isinstance(layer, torch.Tensor) or layer.ndim != 4 or layer.shape[-1] != layer.shape[-2]:
            shape = tuple(layer.shape) if isinstance(layer, torch.Tensor) else type(layer).__name__
            raise ValueError(f"`{name}[{index}]` must be a (batch, heads, tokens, tokens) tensor, got {shape}.")
    return torch.cat(layers, dim=1) if len(layers) > 1 else layers[0]


class ScaffoldExplainerPreTrainedModel(PreTrainedModel):
    config_class = AttentionExplainerConfig
    config: AttentionExplainerConfig
    base_model_prefix = "explainer"
    main_input_name = "attention_scores"
    _no_split_modules = []

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Coefficients per `config.init`: uniform `1 / n` (paper), LeCun-normal, or one head (`head_<k>`)."""
        super()._init_weights(module)
        if isinstance(module, AttentionExplainer):
            coefficients = module.head_coeffs
            size = coefficients.shape[0]
            if self.config.init == "uniform":
                init.constant_(coefficients, 1.0 / size)
            elif self.config.init == "lecun_normal":
                init.normal_(coefficients, std=1.0 / math.sqrt(size))
            else:  # "head_<k>": sparsemax / softmax of this put all the weight on head k
                init.constant_(coefficients, -1e4)
                coefficients[int(self.config.init[5:])] = 1.0


class AttentionExplainer(ScaffoldExplainerPreTrainedModel):
    """The parameterised attention explainer: `e = softmax_j( sum_{lh} lambda_{lh} * agg_i A^{lh}_{ij} )`,
    `lambda = head_normalizer(head_coeffs)`.

    Its only parameter, `head_coeffs` `(num_coefficients,)`, is what SMaT meta-learns for the teacher (and what the
    student learns jointly for its own explainer). Save and publish it with `save_pretrained` / `push_to_hub`.
    """

    def __init__(self, config: AttentionExplainerConfig):
        super().__init__(config)
        self.head_coeffs = nn.Parameter(torch.empty(config.num_coefficients))
        self.post_init()

    def head_weights(self) -> torch.Tensor:
        """The normalised head weights `(num_coefficients,)` (sparse under sparsemax)."""
        return normalize_head_coefficients(self.head_coeffs, self.config.head_normalizer)

    @can_return_tuple
    def forward(
        self,
        attention_scores: tuple[torch.Tensor, ...] | torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AttentionExplainerOutput:
        r"""Explain from pre-softmax attention scores.

        Args:
            attention_scores: per layer `(B, H, T, T)` scores (`output_attention_scores=True` of
                [`ScaffoldVitForImageClassification`]), `config.num_hidden_layers` of them; or one `(B, L * H, T, T)`
                tensor with the layers' heads concatenated.
            attention_mask: `(B, T)`, 1 for real tokens (text); masked rows are left out of the mean and masked
                tokens get probability 0.

        Returns:
            [`AttentionExplainerOutput`] with `explanation` `(B, T)`, `head_weights`, `saliency_map`.
        """
        config = self.config
        heads = _stack_heads(attention_scores)  # (B, L * H, T, T)
        expected = config.num_hidden_layers * config.num_attention_heads
        if heads.shape[1] != expected:
            raise ValueError(
                f"`attention_scores` hold {heads.shape[1]} heads in all; the explainer expects "
                f"{config.num_hidden_layers} layers x {config.num_attention_heads} heads = {expected}."
            )
        batch_size, _, num_tokens, _ = heads.shape
        if config.layer_idx is not None:  # one layer's heads only ("last layer" baseline: layer_idx = -1)
            layer = config.layer_idx % config.num_hidden_layers
            heads = heads[:, layer * config.num_attention_heads : (layer + 1) * config.num_attention_heads]
        if attention_mask is not None and attention_mask.shape != (batch_size, num_tokens):
            raise ValueError(
                f"`attention_mask` must be ({batch_size}, {num_tokens}), got {tuple(attention_mask.shape)}."
            )
        # 1. aggregate the query rows: (masked) mean, or a single row such as CLS
        if config.aggregator == "mean":
            row_weights = (
                torch.ones(batch_size, num_tokens, dtype=heads.dtype, device=heads.device)
                if attention_mask is None
                else attention_mask.to(heads.dtype)
            )
            row_weights = row_weights / row_weights.sum(-1, keepdim=True)
            per_head = torch.einsum("bhij,bi->bhj", heads, row_weights)  # (B, n, T)
        else:
            if config.aggregator >= num_tokens:
                raise ValueError(f"`aggregator` row {config.aggregator} is out of range for {num_tokens} tokens.")
            per_head = heads[:, :, config.aggregator]
        # 2. mix the heads with lambda = normaliser(coefficients), or take one head
        head_weights = self.head_weights()
        if config.head_idx is not None:
            token_logits = per_head[:, config.head_idx]
        else:
            token_logits = torch.einsum("h,bht->bt", head_weights.to(per_head.dtype), per_head)
        # 3. softmax over tokens
        if attention_mask is not None:
            token_logits = token_logits.masked_fill(attention_mask == 0, float("-inf"))
        explanation = token_logits.softmax(-1)
        saliency = saliency_map_from_explanation(explanation, tuple(config.patch_grid), config.num_prefix_tokens)
        return AttentionExplainerOutput(
            explanation=explanation, token_logits=token_logits, head_weights=head_weights, saliency_map=saliency
        )

    def explain(
        self, model: nn.Module, pixel_values: torch.Tensor, model_outputs: ModelOutput | None = None
    ) -> AttentionExplainerOutput:
        """Explain `model`'s predictions on `pixel_values` (the interface the gradient baselines share).

        Args:
            model: a [`ScaffoldVitForImageClassification`] (anything returning `attention_scores`).
            pixel_values: `(B, C, H, W)` images.
            model_outputs: outputs of `model(pixel_values, output_attention_scores=True)` if already computed.
        """
        if model_outputs is None or getattr(model_outputs, "attention_scores", None) is None:
            model_outputs = model(pixel_values=pixel_values, output_attention_scores=True)
        return self(model_outputs.attention_scores)


class GradientExplainer(nn.Module):
    """The static gradient baselines of the paper, w.r.t. the embedding output `h0` (patch + position embeddings with
    the CLS token), for the predicted class `y = argmax logits`; each map goes through a softmax over tokens.

    - `grad_norm`: `||d logit_y / d h0_t||_2` (the official code applies no temperature here);
    - `grad_x_input`: `<d logit_y / d h0_t, h0_t> / temperature` (temperature 0.1);
    - `integrated_gradients`: `<IG_t, h0_t> / temperature` (temperature 0.5), IG with a zero baseline and a
      `steps`-point midpoint rule, all path points in one batched forward pass.

    Args:
        method: one of `grad_norm`, `grad_x_input`, `integrated_gradients`.
        temperature: divides the saliency energies (`None`: the paper's value for `method`).
        steps: integration points of integrated gradients (paper: 10).
        patch_grid: `(rows, cols)` for the saliency map; `num_prefix_tokens`: leading non-patch tokens (CLS).
    """

    DEFAULT_TEMPERATURES = {"grad_norm": 1.0, "grad_x_input": 0.1, "integrated_gradients": 0.5}

    def __init__(
        self,
        method: str = "grad_x_input",
        temperature: float | None = None,
        steps: int = 10,
        patch_grid: tuple[int, int] = (14, 14),
        num_prefix_tokens: int = 1,
    ):
        super().__init__()
        if method not in GRADIENT_METHODS:
            raise ValueError(f"`method` must be one of {GRADIENT_METHODS}, got {method!r}.")
        if temperature is not None and not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        if steps < 2:
            raise ValueError(f"`steps` must be >= 2 (trapezoid rule), got {steps}.")
        self.method = method
        self.temperature = self.DEFAULT_TEMPERATURES[method] if temperature is None else temperature
        self.steps = steps
        self.patch_grid = tuple(patch_grid)
        self.num_prefix_tokens = num_prefix_tokens

    def path_points(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integration points `alpha_i = (i + 1/2) / steps` and weights `1 / steps` (midpoint rule).

        The midpoint rule keeps `alpha = 0` out: at an all-zero embedding the pre-LayerNorm blocks' gradient is
        `1 / sqrt(layer_norm_eps)` (1e6 for ViT's eps), which would swamp a rule that evaluates the baseline itself.
        """
        alphas = (torch.arange(self.steps, dtype=like.dtype, device=like.device) + 0.5) / self.steps
        return alphas, torch.full_like(alphas, 1.0 / self.steps)

    def _target_gradient(self, model: nn.Module, embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """`d logit_target / d embeddings` for a batch `(N, T, D)` (samples are independent, so sum then grad)."""
        embeddings = embeddings.detach().requires_grad_(True)
        logits = model(inputs_embeds=embeddings).logits
        chosen = logits.gather(1, targets[:, None]).sum()
        return torch.autograd.grad(chosen, embeddings)[0]

    def explain(
        self, model: nn.Module, pixel_values: torch.Tensor, model_outputs: ModelOutput | None = None
    ) -> AttentionExplainerOutput:
        """Explain `model`'s predictions on `pixel_values` `(B, C, H, W)`; the result carries no gradient.

        Args:
            model: a [`ScaffoldVitForImageClassification`] (accepts `inputs_embeds`, has `.vit.embeddings`).
            pixel_values: `(B, C, H, W)` images.
            model_outputs: unused (the interface of [`AttentionExplainer.explain`]).
        """
        with torch.enable_grad():
            embeddings = model.vit.embeddings(pixel_values).detach()  # h0: (B, T, D)
            with torch.no_grad():
                targets = model(inputs_embeds=embeddings).logits.argmax(-1)
            if self.method == "integrated_gradients":
                alphas, weights = self.path_points(embeddings)
                path = alphas[:, None, None, None] * embeddings[None]  # zero baseline: (S, B, T, D)
                grads = self._target_gradient(model, path.flatten(0, 1), targets.repeat(self.steps))
                grads = torch.einsum("s,sbtd->btd", weights, grads.view(path.shape))  # IG / (x - baseline)
            else:
                grads = self._target_gradient(model, embeddings, targets)
        if self.method == "grad_norm":
            token_logits = grads.norm(dim=-1)
        else:
            token_logits = (grads * embeddings).sum(-1) / self.temperature
        explanation = token_logits.softmax(-1)
        saliency = saliency_map_from_explanation(explanation, self.patch_grid, self.num_prefix_tokens)
        return AttentionExplainerOutput(explanation=explanation, token_logits=token_logits, saliency_map=saliency)


__all__ = [
    "AttentionExplainer",
    "AttentionExplainerOutput",
    "GradientExplainer",
    "ScaffoldExplainerPreTrainedModel",
    "ScaffoldVitForImageClassification",
    "ScaffoldVitImageClassifierOutput",
    "ScaffoldVitModel",
    "ScaffoldVitModelOutput",
    "ScaffoldVitPreTrainedModel",
    "entmax15",
    "explanation_kl",
    "normalize_head_coefficients",
    "saliency_map_from_explanation",
    "sparsemax",
]
