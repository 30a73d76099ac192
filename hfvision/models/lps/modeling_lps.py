"""LPS-ResNet: ResNets with learnable polyphase down- and upsampling.

Learnable Polyphase Sampling for Shift Invariant and Equivariant Convolutional Networks (Rojas-Gomez, Lim, Schwing,
Do, Yeh; NeurIPS 2022, arXiv 2210.08001). Official code: https://github.com/raymondyeh07/learnable_polyphase_sampling.

A stride-2 subsampling keeps one of the 4 polyphase components x^(k) = x[..., k // 2 :: 2, k % 2 :: 2] of a feature
map. The learnable downsampler (LPD) scores every component with a small circular CNN shared across components and
keeps one: in training through a Gumbel-softmax relaxation, p = GumbelSoftmax(f(x^(0..3)) / tau), output
sum_k p_k x^(k); in evaluation p = onehot(argmax f). A circular shift of the input only permutes the scores, so the
kept component holds the same samples, shifted: the network is exactly invariant to circular shifts. The paired
upsampler (LPU) puts features back at the phase its downsampler chose, which makes an encoder-decoder exactly
shift-equivariant.

The ResNets follow the official `resnet_custom.py`: every stride-2 conv becomes a stride-1 conv whose output is
subsampled (in the first block of a stage: LPD before the block's last conv); the shortcut reuses the main branch's
phase; the ImageNet stem is conv7x7 stride 1, LPD, max-pool 2 stride 1 with circular padding, LPD. The same class
runs the paper's baselines: APS (largest-norm component), plain striding (component 0), BlurPool and DDAC (a
content-adaptive low-pass filter, `antialias="ddac"`, which also gives the paper's LPS + DDAC). Plain striding
needs no selection, so `downsample="stride"` strides the convolution (and max-pool) itself: the same samples as
component 0 of the stride-1 output, for a quarter of the work (the strided ResNet baseline, as torchvision builds it).

Where we deviate from the official code:
- the second scoring conv has no bias (a constant added to every component's score cancels in the softmax, so the
  bias would get a zero gradient);
- the segmentation model is a small U-Net-like decoder (1x1 projections, LPU, skip connections, 3x3 convs), not
  DeepLabV3+; it keeps the paper's property that every upsampling is the LPU of a stored downsampling decision;
- the LPU's optional post-filter is not implemented;
- DDAC (`antialias="ddac"`) is the official layer (joint softmax over groups and taps, its own BatchNorm) written
  as k * k shifted multiply-adds instead of an `unfold`; only odd filter sizes, and no `--selection_noantialias`
  (the LPS scores are computed on the filtered components, the official default);
- the Gumbel noise can be drawn from a `generator`, so training steps are reproducible;
- `downsample="stride"` runs true stride-2 convolutions instead of the official stride-1-then-subsample form: in eval
  the outputs are the same, in training the BatchNorm after a strided conv takes its batch statistics over the kept
  positions only (as a standard strided ResNet does) rather than over the full-resolution map.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.dynamic_module_utils import custom_object_save
from transformers.modeling_outputs import (
    BaseModelOutputWithPoolingAndNoAttention,
    ImageClassifierOutputWithNoAttention,
    SemanticSegmenterOutput,
)
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .configuration_lps import LpsResNetConfig

NUM_PHASES = 4  # stride 2 in both axes: 2 x 2 polyphase components


@dataclass
class PolyphaseDownsampleOutput(ModelOutput):
    """Output of a polyphase downsampling layer.

    Args:
        hidden_states: `(B, C, H / 2, W / 2)` the selected (train: mixed) component.
        phase_probs: `(B, 4)` weights given to each component: one-hot in eval, the Gumbel-softmax sample in training.
            The paired shortcut and upsampler reuse them.
        phase_logits: `(B, 4)` component scores (LPS: the scoring CNN's; APS: the l2 norms); `None` for a fixed phase.
        phase: `(B,)` index of the chosen component, `k = 2 * row_offset + column_offset`.
    """

    hidden_states: torch.FloatTensor | None = None
    phase_probs: torch.FloatTensor | None = None
    phase_logits: torch.FloatTensor | None = None
    phase: torch.LongTensor | None = None


@dataclass
class LpsResNetModelOutput(BaseModelOutputWithPoolingAndNoAttention):
    """Output of [`LpsResNetModel`].

    Args:
        last_hidden_state: `(B, C, H / total_stride, W / total_stride)` last stage features.
        pooler_output: `(B, C)` global average pool of `last_hidden_state`.
        hidden_states: with `output_hidden_states`, the stem output and every stage's output.
        phase_probs: `(B, 4)` per downsampling layer, in forward order (stem first): the decisions an LPU decoder
            consumes in reverse order.
        phase_logits: `(B, 4)` scores per downsampling layer (`None` for the `stride` and `blurpool` baselines).
    """

    phase_probs: tuple[torch.FloatTensor, ...] | None = None
    phase_logits: tuple[torch.FloatTensor, ...] | None = None


def _pad_mode(padding_mode: str) -> str:
    """`nn.Conv2d` padding names -> `F.pad` modes."""
    return "constant" if padding_mode == "zeros" else padding_mode


def polyphase_components(hidden_states: torch.Tensor) -> torch.Tensor:
    """Split a feature map into its 4 polyphase components (vectorised, no loops over pixels).

    Args:
        hidden_states: `(B, C, H, W)`; odd H or W are zero-padded at the bottom/right (as the official code does,
            which breaks exact invariance: feed sizes divisible by the total stride).

    Returns:
        `(B, 4, C, H / 2, W / 2)` where component `k` is `hidden_states[..., k // 2 :: 2, k % 2 :: 2]`.
    """
    height, width = hidden_states.shape[-2:]
    if height % 2 or width % 2:
        hidden_states = F.pad(hidden_states, (0, width % 2, 0, height % 2))
    batch_size, channels, height, width = hidden_states.shape
    # (B, C, h, i, w, j) -> (B, i, j, C, h, w): component 2 * i + j, in one contiguous copy that the scoring CNN
    # takes as a batch of B * 4 maps without another copy
    components = hidden_states.view(batch_size, channels, height // 2, 2, width // 2, 2).permute(0, 3, 5, 1, 2, 4)
    return components.reshape(batch_size, NUM_PHASES, channels, height // 2, width // 2)


def select_phase(components: torch.Tensor, phase_probs: torch.Tensor) -> torch.Tensor:
    """sum_k p_k x^(k): `(B, 4, C, h, w)` components and `(B, 4)` weights -> `(B, C, h, w)`.

    With one-hot weights the result is the chosen component, bit for bit (1 * x + 0 * y = x).
    """
    return torch.einsum("bk,bkchw->bchw", phase_probs.to(components.dtype), components)


def gumbel_softmax_sample(
    logits: torch.Tensor, tau: torch.Tensor | float, hard: bool = False, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gumbel-softmax relaxation of a categorical sample, with injectable randomness.

    Args:
        logits: `(B, K)` unnormalised log-probabilities.
        tau: temperature.
        hard: return the one-hot sample with the soft sample's gradient (straight-through).
        generator: source of the Gumbel noise.

    Returns:
        `(B, K)` weights summing to 1.
    """
    gumbels = -torch.empty_like(logits).exponential_(generator=generator).log()  # Gumbel(0, 1)
    soft = ((logits + gumbels) / tau).softmax(dim=-1)
    if not hard:
        return soft
    one_hot = F.one_hot(soft.argmax(dim=-1), logits.shape[-1]).to(soft.dtype)
    return one_hot - soft.detach() + soft


class PolyphaseLowPassFilter(nn.Module):
    """Depthwise binomial low-pass filter (the LPF of "LPS + LPF" and of BlurPool), padded with `padding_mode`."""

    def __init__(self, filter_size: int, padding_mode: str = "circular", scale: float = 1.0):
        super().__init__()
        if not 1 <= filter_size <= 7:
            raise ValueError(f"the binomial filter size must be in [1, 7], got {filter_size}.")
        self.filter_size = filter_size
        self.pad_mode = _pad_mode(padding_mode)
        self.scale = scale

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        size, channels = self.filter_size, hidden_states.shape[1]
        taps = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=hidden_states.dtype)
        kernel = torch.outer(taps, taps)
        kernel = (kernel * self.scale / kernel.sum()).to(hidden_states.device)
        pad = ((size - 1) // 2, size // 2)
        padded = F.pad(hidden_states, (*pad, *pad), mode=self.pad_mode)
        return F.conv2d(padded, kernel.expand(channels, 1, size, size), groups=channels)


class DdacLowPassFilter(nn.Module):
    """DDAC, the content-adaptive low-pass filter of Zou et al. ("Delving Deeper into Anti-aliasing in ConvNets",
    BMVC 2020), as the official LPS code uses it for its "+ DDAC" variants.

    A `k x k` convolution (no bias) of the input, BatchNorm and a softmax over its `groups * k * k` output channels
    give, at every pixel, `groups` filters of `k * k` non-negative taps; channel group `g` (contiguous channels
    `g * C / groups ...`) is filtered with filter `g`. As in the official layer the softmax runs over all
    `groups * k * k` values at once, so at every pixel the taps of all groups together sum to 1 (each group's filter
    sums to its share). Every operation is a circular convolution or per pixel, so with `padding_mode="circular"`
    the filter commutes with circular shifts and LPS + DDAC stays exactly shift-invariant.

    Args:
        channels: channels of the filtered map (divisible by `groups`).
        filter_size: odd `k`.
        groups: channel groups, one predicted filter each.
        padding_mode: padding of the prediction conv and of the filtered neighbourhoods.
    """

    def __init__(self, channels: int, filter_size: int, groups: int = 8, padding_mode: str = "circular"):
        super().__init__()
        if filter_size < 3 or filter_size % 2 == 0:
            raise ValueError(f"`filter_size` of a DDAC filter must be odd and >= 3, got {filter_size}.")
        if groups < 1 or channels % groups:
            raise ValueError(f"`antialias_groups` ({groups}) must divide the filtered map's {channels} channels.")
        self.filter_size = filter_size
        self.groups = groups
        self.pad_mode = _pad_mode(padding_mode)
        self.convolution = nn.Conv2d(channels, groups * filter_size**2, filter_size, bias=False)
        self.normalization = nn.BatchNorm2d(groups * filter_size**2)

    def filter_weights(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, groups, k * k, H, W)` taps, non-negative, summing to 1 over groups and taps."""
        batch_size, _, height, width = hidden_states.shape
        weights = self.normalization(self.convolution(self._pad(hidden_states))).softmax(dim=1)  # (B, G*k*k, H, W)
        return weights.view(batch_size, self.groups, self.filter_size**2, height, width)

    def _pad(self, hidden_states: torch.Tensor) -> torch.Tensor:
        pad = self.filter_size // 2
        return F.pad(hidden_states, (pad, pad, pad, pad), mode=self.pad_mode)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch_size, channels, height, width = hidden_states.shape
        weights = self.filter_weights(hidden_states).unsqueeze(2)  # (B, G, 1, k * k, H, W)
        padded = self._pad(hidden_states)
        padded = padded.view(batch_size, self.groups, channels // self.groups, *padded.shape[-2:])
        # one multiply-add per tap over the whole map (k * k of them), instead of unfolding k * k copies of it
        filtered = None
        for tap in range(self.filter_size**2):
            row, column = divmod(tap, self.filter_size)
            term = padded[..., row : row + height, column : column + width] * weights[:, :, :, tap]
            filtered = term if filtered is None else filtered + term
        return filtered.view(batch_size, channels, height, width)


def build_lowpass(config: LpsResNetConfig, channels: int, filter_size: int) -> nn.Module | None:
    """The anti-aliasing filter `config.antialias` names for a `channels`-wide map; `None` when `filter_size` <= 1."""
    if filter_size <= 1:
        return None
    if config.antialias == "ddac":
        return DdacLowPassFilter(channels, filter_size, config.antialias_groups, config.padding_mode)
    return PolyphaseLowPassFilter(filter_size, config.padding_mode)


class PolyphaseLogits(nn.Module):
    """The LPS scoring network (official `LPSLogitLayersV2`), shared across the 4 components.

    conv3x3 (C -> h), ReLU, conv3x3 (h -> h), both with `padding_mode`; the mean over (channels, height, width) is one
    logit per component. Circular convolutions and a global mean make the logits permute with a circular shift.
    """

    def __init__(self, channels: int, hidden_size: int, padding_mode: str):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden_size, 3, padding=1, padding_mode=padding_mode)
        self.activation = nn.ReLU()
        self.conv2 = nn.Conv2d(hidden_size, hidden_size, 3, padding=1, padding_mode=padding_mode, bias=False)

    def forward(self, components: torch.Tensor) -> torch.Tensor:
        """`(B, 4, C, h, w)` components -> `(B, 4)` logits."""
        batch_size, num_phases = components.shape[:2]
        scores = self.conv2(self.activation(self.conv1(components.flatten(0, 1))))  # (B * 4, h, h', w')
        return scores.mean(dim=(1, 2, 3)).view(batch_size, num_phases)


class PolyphaseDownsample(nn.Module):
    """Base of the downsampling layers: optional low-pass filter, polyphase split, choice of a component.

    Subclasses implement `choose(components, generator) -> (phase_logits or None, phase_probs)`. Passing
    `phase_probs` skips the choice and reuses a decision (the residual shortcut does).
    """

    def __init__(self, lowpass: nn.Module | None = None):
        super().__init__()
        self.lowpass = nn.Identity() if lowpass is None else lowpass

    def choose(
        self, components: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        raise ValueError(
            f"{type(self).__name__} reuses another layer's decision (a residual shortcut): pass `phase_probs`."
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        phase_probs: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PolyphaseDownsampleOutput:
        """Downsample `(B, C, H, W)` by 2; see [`PolyphaseDownsampleOutput`]."""
        components = polyphase_components(self.lowpass(hidden_states))  # (B, 4, C, H / 2, W / 2)
        phase_logits = None
        if phase_probs is None:
            phase_logits, phase_probs = self.choose(components, generator)
        return PolyphaseDownsampleOutput(
            hidden_states=select_phase(components, phase_probs),
            phase_probs=phase_probs,
            phase_logits=phase_logits,
            phase=phase_probs.argmax(dim=-1),
        )


class LearnablePolyphaseDownsample(PolyphaseDownsample):
    """LPD, the paper's learnable polyphase downsampling: keep the polyphase component a learned CNN scores highest.

    Training: p = GumbelSoftmax(logits / tau) (soft, or straight-through with `straight_through=True`), output
    sum_k p_k x^(k). Eval: p = onehot(argmax logits) (ties go to the lowest index). `gumbel_tau` is a buffer so that
    an annealing schedule can rewrite it and checkpoints keep it.

    Args:
        channels: channels of the scored feature map.
        logits_hidden_size: width of the scoring CNN (`None`: `channels`).
        gumbel_tau: initial temperature.
        straight_through: hard samples with soft gradients in training.
        lowpass: anti-aliasing filter before the split (LPS + LPF, LPS + DDAC); `None` for none.
        padding_mode: padding of the scoring CNN.
    """

    def __init__(
        self,
        channels: int,
        logits_hidden_size: int | None = None,
        gumbel_tau: float = 1.0,
        straight_through: bool = False,
        lowpass: nn.Module | None = None,
        padding_mode: str = "circular",
    ):
        super().__init__(lowpass)
        self.initial_gumbel_tau = gumbel_tau
        self.straight_through = straight_through
        self.logits_model = PolyphaseLogits(channels, logits_hidden_size or channels, padding_mode)
        self.register_buffer("gumbel_tau", torch.tensor(float(gumbel_tau)))

    def choose(self, components: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        phase_logits = self.logits_model(components)  # (B, 4)
        if self.training:
            phase_probs = gumbel_softmax_sample(phase_logits, self.gumbel_tau, self.straight_through, generator)
        else:
            phase_probs = F.one_hot(phase_logits.argmax(dim=-1), NUM_PHASES).to(phase_logits.dtype)
        return phase_logits, phase_probs


class AdaptivePolyphaseDownsample(PolyphaseDownsample):
    """APS (Chaman & Dokmanic 2021): keep the component of largest l2 norm, in training and eval alike."""

    def choose(self, components: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        phase_logits = components.flatten(2).norm(dim=-1)  # (B, 4)
        return phase_logits, F.one_hot(phase_logits.argmax(dim=-1), NUM_PHASES).to(components.dtype)


class FixedPolyphaseDownsample(PolyphaseDownsample):
    """Always component 0 of the (filtered) map: BlurPool (`blurpool`), DDAC (`blurpool` with `antialias="ddac"`);
    without a filter, the official code's stride-1-then-subsample form of plain striding."""

    def choose(self, components: torch.Tensor, generator: torch.Generator | None) -> tuple[None, torch.Tensor]:
        index = torch.zeros(components.shape[0], dtype=torch.long, device=components.device)
        return None, F.one_hot(index, NUM_PHASES).to(components.dtype)


class StridedDownsample(PolyphaseDownsample):
    """`downsample="stride"`: the convolution (or max-pool) before this layer already strides by 2, which keeps
    component 0 of its stride-1 output at a quarter of the cost; this layer reports the fixed phase 0 for the paired
    upsampler. No parameters."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        phase_probs: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PolyphaseDownsampleOutput:
        """Pass the already strided `(B, C, H / 2, W / 2)` map through with phase 0."""
        phase = torch.zeros(hidden_states.shape[0], dtype=torch.long, device=hidden_states.device)
        return PolyphaseDownsampleOutput(
            hidden_states=hidden_states,
            phase_probs=F.one_hot(phase, NUM_PHASES).to(hidden_states.dtype),
            phase_logits=None,
            phase=phase,
        )


class LearnablePolyphaseUpsample(nn.Module):
    """LPU, the paper's learnable polyphase upsampling: put each value back at the phase its paired downsampler
    chose; the 3 other positions of every 2 x 2 cell are 0. In training the weights are the paired LPD's Gumbel
    sample. No parameters.
    """

    def forward(self, hidden_states: torch.Tensor, phase_probs: torch.Tensor) -> torch.Tensor:
        """`(B, C, h, w)` features and `(B, 4)` weights -> `(B, C, 2h, 2w)`."""
        batch_size, channels, height, width = hidden_states.shape
        placed = hidden_states[:, None] * phase_probs[:, :, None, None, None].to(hidden_states.dtype)  # (B,4,C,h,w)
        placed = placed.transpose(1, 2).reshape(batch_size, channels * NUM_PHASES, height, width)
        return F.pixel_shuffle(placed, 2)  # channel c * 4 + k goes to row offset k // 2, column offset k % 2


def build_downsample(config: LpsResNetConfig, channels: int, antialias: bool = True) -> PolyphaseDownsample:
    """The stride-2 layer `config.downsample` names, for a `channels`-wide map."""
    lowpass = build_lowpass(config, channels, config.lowpass_filter_size if antialias else 0)
    if config.downsample == "lps":
        return LearnablePolyphaseDownsample(
            channels,
            config.logits_hidden_size,
            config.gumbel_tau,
            config.straight_through,
            lowpass,
            config.padding_mode,
        )
    if config.downsample == "aps":
        return AdaptivePolyphaseDownsample(lowpass)
    if config.downsample == "blurpool":
        return FixedPolyphaseDownsample(build_lowpass(config, channels, config.blurpool_filter_size))
    return StridedDownsample()


def strides_convolutions(config: LpsResNetConfig) -> bool:
    """Whether the layer before each downsampling strides itself (`downsample="stride"`: no selection to make)."""
    return config.downsample == "stride"


class LpsResNetConvLayer(nn.Module):
    """Conv (`padding_mode`; stride 1 unless `downsample="stride"` strides it) + BatchNorm + optional activation."""

    def __init__(
        self,
        config: LpsResNetConfig,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        activation: bool = True,
        stride: int = 1,
    ):
        super().__init__()
        self.convolution = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            # a 1x1 conv has no padding: "zeros" skips the (empty) F.pad copy nn.Conv2d makes for other modes
            padding_mode=config.padding_mode if kernel_size > 1 else "zeros",
            bias=False,
        )
        self.normalization = nn.BatchNorm2d(out_channels)
        self.activation = ACT2FN[config.hidden_act] if activation else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.normalization(self.convolution(hidden_states)))


class LpsResNetShortcut(nn.Module):
    """Residual shortcut: downsampled with the main branch's phase (the official LPD without scorer), conv1x1, BN."""

    def __init__(self, config: LpsResNetConfig, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        # reuses the main branch's decision: a filter of its own (if any: a DDAC filter is learned on this branch's
        # input) and the split, no scorer
        filter_size = config.blurpool_filter_size if config.downsample == "blurpool" else config.lowpass_filter_size
        strided = downsample and strides_convolutions(config)  # then the 1x1 conv strides: component 0
        self.downsample = (
            PolyphaseDownsample(build_lowpass(config, in_channels, filter_size)) if downsample and not strided else None
        )
        self.projection = LpsResNetConvLayer(
            config, in_channels, out_channels, 1, activation=False, stride=2 if strided else 1
        )

    def forward(self, hidden_states: torch.Tensor, phase_probs: torch.Tensor | None) -> torch.Tensor:
        if self.downsample is not None:
            hidden_states = self.downsample(hidden_states, phase_probs=phase_probs).hidden_states
        return self.projection(hidden_states)


class LpsResNetBasicLayer(nn.Module):
    """ResNet-18/34 block; when downsampling, conv2 := (downsample, conv3x3) as in the official code."""

    def __init__(self, config: LpsResNetConfig, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample and strides_convolutions(config) else 1
        self.conv1 = LpsResNetConvLayer(config, in_channels, out_channels, 3, stride=stride)
        self.downsample = build_downsample(config, out_channels) if downsample else None
        self.conv2 = LpsResNetConvLayer(config, out_channels, out_channels, 3, activation=False)
        needs_shortcut = downsample or in_channels != out_channels
        self.shortcut = LpsResNetShortcut(config, in_channels, out_channels, downsample) if needs_shortcut else None
        self.activation = ACT2FN[config.hidden_act]

    def forward(
        self, hidden_states: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, PolyphaseDownsampleOutput | None]:
        residual = hidden_states
        hidden_states = self.conv1(hidden_states)
        sample = None
        if self.downsample is not None:
            sample = self.downsample(hidden_states, generator=generator)
            hidden_states = sample.hidden_states
        hidden_states = self.conv2(hidden_states)
        if self.shortcut is not None:
            residual = self.shortcut(residual, None if sample is None else sample.phase_probs)
        return self.activation(hidden_states + residual), sample


class LpsResNetBottleneckLayer(nn.Module):
    """ResNet-50 block (expansion 4); when downsampling, conv3 := (downsample, conv1x1) as in the official code."""

    def __init__(self, config: LpsResNetConfig, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        width = out_channels // 4
        self.conv1 = LpsResNetConvLayer(config, in_channels, width, 1)
        stride = 2 if downsample and strides_convolutions(config) else 1
        self.conv2 = LpsResNetConvLayer(config, width, width, 3, stride=stride)
        self.downsample = build_downsample(config, width) if downsample else None
        self.conv3 = LpsResNetConvLayer(config, width, out_channels, 1, activation=False)
        needs_shortcut = downsample or in_channels != out_channels
        self.shortcut = LpsResNetShortcut(config, in_channels, out_channels, downsample) if needs_shortcut else None
        self.activation = ACT2FN[config.hidden_act]

    def forward(
        self, hidden_states: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, PolyphaseDownsampleOutput | None]:
        residual = hidden_states
        hidden_states = self.conv2(self.conv1(hidden_states))
        sample = None
        if self.downsample is not None:
            sample = self.downsample(hidden_states, generator=generator)
            hidden_states = sample.hidden_states
        hidden_states = self.conv3(hidden_states)
        if self.shortcut is not None:
            residual = self.shortcut(residual, None if sample is None else sample.phase_probs)
        return self.activation(hidden_states + residual), sample


class LpsResNetEmbeddings(nn.Module):
    """The stem. ImageNet: conv7x7 stride 1, BN, ReLU, downsample (no low-pass), max-pool 2 stride 1 on a (0, 1, 0, 1)
    padded map, downsample (stride 4 in all). CIFAR: conv3x3, BN, ReLU (stride 1)."""

    def __init__(self, config: LpsResNetConfig):
        super().__init__()
        self.pad_mode = _pad_mode(config.padding_mode)
        kernel_size = 7 if config.stem == "imagenet" else 3
        self.strided = config.stem == "imagenet" and strides_convolutions(config)
        stride = 2 if self.strided else 1
        self.embedder = LpsResNetConvLayer(
            config, config.num_channels, config.embedding_size, kernel_size, stride=stride
        )
        self.downsamplers = nn.ModuleList()
        if config.stem == "imagenet":
            self.downsamplers.append(build_downsample(config, config.embedding_size, antialias=False))
            # max-pool 2 stride 2 keeps component 0 of the padded max-pool 2 stride 1
            self.pooler = nn.MaxPool2d(kernel_size=2, stride=stride)
            self.downsamplers.append(build_downsample(config, config.embedding_size))

    def forward(
        self, pixel_values: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, list[PolyphaseDownsampleOutput]]:
        hidden_states = self.embedder(pixel_values)  # (B, E, H, W)
        samples = []
        for index, downsample in enumerate(self.downsamplers):
            if index == 1 and self.strided:
                hidden_states = self.pooler(hidden_states)
            elif index == 1:  # max-pool 2 with stride 1 keeps the size: pad one row and column circularly
                hidden_states = self.pooler(F.pad(hidden_states, (0, 1, 0, 1), mode=self.pad_mode))
            samples.append(downsample(hidden_states, generator=generator))
            hidden_states = samples[-1].hidden_states
        return hidden_states, samples


class LpsResNetStage(nn.Module):
    """`depth` blocks; the first one downsamples (every stage but the first)."""

    def __init__(self, config: LpsResNetConfig, in_channels: int, out_channels: int, depth: int, downsample: bool):
        super().__init__()
        layer_class = LpsResNetBasicLayer if config.layer_type == "basic" else LpsResNetBottleneckLayer
        self.layers = nn.ModuleList(
            [
                layer_class(config, in_channels if i == 0 else out_channels, out_channels, downsample and i == 0)
                for i in range(depth)
            ]
        )

    def forward(
        self, hidden_states: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, PolyphaseDownsampleOutput | None]:
        first_sample = None
        for index, layer in enumerate(self.layers):
            hidden_states, sample = layer(hidden_states, generator=generator)
            if index == 0:
                first_sample = sample
        return hidden_states, first_sample


class LpsResNetEncoder(nn.Module):
    def __init__(self, config: LpsResNetConfig):
        super().__init__()
        in_sizes = [config.embedding_size, *config.hidden_sizes[:-1]]
        self.stages = nn.ModuleList(
            [
                LpsResNetStage(config, in_size, out_size, depth, downsample=index > 0)
                for index, (in_size, out_size, depth) in enumerate(
                    zip(in_sizes, config.hidden_sizes, config.depths, strict=True)
                )
            ]
        )

    def forward(
        self, hidden_states: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[tuple[torch.Tensor, ...], list[PolyphaseDownsampleOutput]]:
        """Returns every stage's output and the downsampling decisions, in order."""
        stage_outputs, samples = [], []
        for stage in self.stages:
            hidden_states, sample = stage(hidden_states, generator=generator)
            stage_outputs.append(hidden_states)
            if sample is not None:
                samples.append(sample)
        return tuple(stage_outputs), samples


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


class LpsResNetPreTrainedModel(PreTrainedModel):
    config_class = LpsResNetConfig
    base_model_prefix = "lps_resnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False  # BatchNorm statistics would be updated twice by the recomputation
    _no_split_modules = ["LpsResNetEmbeddings", "LpsResNetBasicLayer", "LpsResNetBottleneckLayer"]

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.save_pretrained`, shipping the Gumbel-temperature schedule with every checkpoint.

        `trainer_callback_lps.py` (`GumbelTemperatureCallback`, torch and transformers only) is written beside the
        model's code; the import below is relative, so transformers also fetches it with this file when the model is
        loaded as remote code. Someone fine-tuning a published checkpoint with plain `Trainer`, without hfvision, then
        gets the callback from the checkpoint itself:
        `get_class_from_dynamic_module("trainer_callback_lps.GumbelTemperatureCallback", repo_id)`
        (`transformers.dynamic_module_utils`).
        """
        from .trainer_callback_lps import GumbelTemperatureCallback

        saved = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True) and os.path.isdir(save_directory):
            custom_object_save(GumbelTemperatureCallback, save_directory)
        return saved

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """He initialisation of convolutions (as torchvision's ResNet), unit BatchNorm, the configured temperature."""
        super()._init_weights(module)
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            if module.num_batches_tracked is not None:
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, LearnablePolyphaseDownsample):
            init.constant_(module.gumbel_tau, module.initial_gumbel_tau)

    def set_gumbel_tau(self, tau: float) -> None:
        """Set the Gumbel-softmax temperature of every LPS layer (the paper anneals it during training)."""
        if tau <= 0:
            raise ValueError(f"`tau` must be > 0, got {tau}.")
        for module in self.modules():
            if isinstance(module, LearnablePolyphaseDownsample):
                module.gumbel_tau.fill_(tau)


class LpsResNetModel(LpsResNetPreTrainedModel):
    """The LPS-ResNet backbone: stem, stages, global average pool."""

    def __init__(self, config: LpsResNetConfig):
        super().__init__(config)
        self.embeddings = LpsResNetEmbeddings(config)
        self.encoder = LpsResNetEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.embedder.convolution

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> LpsResNetModelOutput:
        r"""Encode `pixel_values` `(B, C, H, W)`.

        H and W must be multiples of `config.total_stride`, else a `ValueError`: other sizes would run but void the
        exact circular-shift invariance (the image processor resizes, or pads circularly with `do_circular_pad=True`).

        Args:
            output_hidden_states: also return the stem output and every stage output.
            generator: source of the Gumbel noise in training mode (LPS layers only).
        """
        _check_pixel_values(pixel_values, self.config.num_channels, self.dtype)
        if pixel_values.shape[-2] % self.config.total_stride or pixel_values.shape[-1] % self.config.total_stride:
            raise ValueError(
                f"`pixel_values` height and width must be multiples of `config.total_stride` = "
                f"{self.config.total_stride} for exact shift invariance, got {tuple(pixel_values.shape[-2:])}; use "
                "the image processor (it resizes to multiples, or pads circularly with `do_circular_pad=True`)."
            )
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        embedding_output, stem_samples = self.embeddings(pixel_values, generator=generator)  # (B, E, H/s, W/s)
        stage_outputs, stage_samples = self.encoder(embedding_output, generator=generator)
        samples = stem_samples + stage_samples
        last_hidden_state = stage_outputs[-1]  # (B, C, H / total_stride, W / total_stride)
        phase_logits = tuple(sample.phase_logits for sample in samples)
        return LpsResNetModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=last_hidden_state.mean(dim=(2, 3)),  # GAP: invariant to circular shifts of the map
            hidden_states=(embedding_output, *stage_outputs) if output_hidden_states else None,
            phase_probs=tuple(sample.phase_probs for sample in samples),
            phase_logits=None if any(logits is None for logits in phase_logits) else phase_logits,
        )


class LpsResNetForImageClassification(LpsResNetPreTrainedModel):
    """LPS-ResNet with a linear classifier on the pooled features (GAP, FC)."""

    def __init__(self, config: LpsResNetConfig):
        super().__init__(config)
        self.lps_resnet = LpsResNetModel(config)
        self.classifier = nn.Linear(config.hidden_sizes[-1], config.num_labels) if config.num_labels else nn.Identity()
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.lps_resnet.get_input_embeddings()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutputWithNoAttention:
        """Class logits `(B, num_labels)`; `loss` from `labels` following `config.problem_type`."""
        outputs = self.lps_resnet(
            pixel_values, output_hidden_states=output_hidden_states, generator=generator, return_dict=True
        )
        logits = self.classifier(outputs.pooler_output)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class LpsSegmentationDecoder(nn.Module):
    """Decoder that undoes each downsampling, deepest first, with the paired upsampler.

    Step for the downsampling of stage i: upsample (LPU with that layer's phase, or bilinear), add a 1x1 projection of
    the encoder map at the new resolution (output of stage i - 1), conv3x3-BN-ReLU. The ImageNet stem's two steps have
    no skip. A 1x1 conv gives `num_labels` scores per input pixel.
    """

    def __init__(self, config: LpsResNetConfig):
        super().__init__()
        hidden = config.decoder_hidden_size
        self.upsample_mode = config.decoder_upsample
        self.projection = LpsResNetConvLayer(config, config.hidden_sizes[-1], hidden, 1)
        skip_channels = [config.hidden_sizes[i - 1] for i in reversed(range(1, len(config.hidden_sizes)))]
        skip_channels += [None] * (config.num_downsampling_layers - len(skip_channels))  # the stem's steps
        self.skip_projections = nn.ModuleList(
            [
                LpsResNetConvLayer(config, channels, hidden, 1, activation=False) if channels else nn.Identity()
                for channels in skip_channels
            ]
        )
        self.has_skip = [channels is not None for channels in skip_channels]
        self.fuse = nn.ModuleList([LpsResNetConvLayer(config, hidden, hidden, 3) for _ in skip_channels])
        self.upsample = LearnablePolyphaseUpsample()
        self.classifier = nn.Conv2d(hidden, config.num_labels, 1)

    def forward(self, stage_outputs: tuple[torch.Tensor, ...], phase_probs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """`stage_outputs` of the encoder, `phase_probs` in forward order -> `(B, num_labels, H, W)` logits."""
        hidden_states = self.projection(stage_outputs[-1])
        skips = list(reversed(stage_outputs[:-1]))  # the map at each step's output resolution, deepest first
        for step, probs in enumerate(reversed(phase_probs)):
            if self.upsample_mode == "lpu":
                hidden_states = self.upsample(hidden_states, probs)
            else:
                hidden_states = F.interpolate(hidden_states, scale_factor=2, mode="bilinear", align_corners=False)
            if self.has_skip[step]:
                hidden_states = hidden_states + self.skip_projections[step](skips[step])
            hidden_states = self.fuse[step](hidden_states)
        return self.classifier(hidden_states)


class LpsForSemanticSegmentation(LpsResNetPreTrainedModel):
    """LPS-ResNet encoder and an LPU decoder: per-pixel logits, exactly equivariant to circular shifts."""

    def __init__(self, config: LpsResNetConfig):
        super().__init__(config)
        self.lps_resnet = LpsResNetModel(config)
        self.decoder = LpsSegmentationDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.lps_resnet.get_input_embeddings()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SemanticSegmenterOutput:
        """Logits `(B, num_labels, H, W)` at input resolution; `loss` is the per-pixel cross-entropy with `labels`
        `(B, H, W)`, ignoring `config.semantic_loss_ignore_index`."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        outputs = self.lps_resnet(pixel_values, output_hidden_states=True, generator=generator, return_dict=True)
        logits = self.decoder(outputs.hidden_states[1:], outputs.phase_probs)
        loss = None
        if labels is not None:
            if labels.shape[-2:] != logits.shape[-2:]:
                raise ValueError(f"`labels` must have shape (batch, {logits.shape[-2]}, {logits.shape[-1]}).")
            loss = F.cross_entropy(logits, labels.long(), ignore_index=self.config.semantic_loss_ignore_index)
        return SemanticSegmenterOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states if output_hidden_states else None
        )


__all__ = [
    "AdaptivePolyphaseDownsample",
    "DdacLowPassFilter",
    "FixedPolyphaseDownsample",
    "LearnablePolyphaseDownsample",
    "LearnablePolyphaseUpsample",
    "LpsForSemanticSegmentation",
    "LpsResNetForImageClassification",
    "LpsResNetModel",
    "LpsResNetModelOutput",
    "LpsResNetPreTrainedModel",
    "PolyphaseDownsampleOutput",
    "PolyphaseLowPassFilter",
    "StridedDownsample",
    "gumbel_softmax_sample",
    "polyphase_components",
]
