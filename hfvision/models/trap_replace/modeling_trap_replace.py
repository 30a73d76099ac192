"""Trap and Replace: a backdoor defence that lures the backdoor into a small, replaceable head.

Trap and Replace: Defending Backdoor Attacks by Trapping Them into an Easy-to-Replace Subnetwork (Wang, Hong, Zhang,
Zhou, Wang; NeurIPS 2022, arXiv 2210.06428). Official code: https://github.com/VITA-Group/Trap-and-Replace-Backdoor-Defense.

A shared stem feeds a small classification head (the *trap*) and an image decoder. Stage 1 ("bait and trap") trains
both on the possibly poisoned data with

    L = CE(head(stem(x)), y) + lambda * MSE(decoder(stem(x)), x) + mu * TV(decoder(stem(x)))          (Sec. 3.2)

The reconstruction term keeps the stem's features generic (they must be able to redraw the image), so the easy
trigger -> target shortcut is learned by the small head. Stage 2 ("remove and patch", `replace_head`) throws the trap
head and the decoder away, adds a freshly initialised head and trains only it on a small clean holdout while the stem
stays frozen, normalisation statistics included (BatchNorm stays in eval mode).

The WRN-16-1 follows the official `wideresnet.py`: pre-activation blocks with LeakyReLU(0.1), biased convolutions,
and its quirk that a block which changes the width feeds its first conv and its shortcut the raw input (the block's
first BatchNorm + activation is computed and discarded there).

Where we deviate from the official code:
- that discarded BatchNorm is not built (it cannot change any output; its running statistics are dead state);
- the replacement head mirrors the trap head (the blocks after `stem_end_block`, final norm, pooling, classifier)
  with `head_dropout` inside its blocks. For the paper's WRN-16-1 with `stem_end_block=5` that is exactly the
  official `*_aux` head (one 64 -> 64 block with dropout 0.5); the official ResNet-34 aux head is a whole new
  `layer4` without dropout instead. The official second dropout, gated by the root module's training flag, is
  inactive in stage 2 and omitted;
- the stage-2 checkpoint holds only stem + replacement head (the official one keeps the unused trap head too), so it
  is an ordinary image classifier;
- Linear layers of the ResNet get the WRN's Xavier-normal initialisation (the official ResNet keeps PyTorch's);
- with `image_mean` / `image_std` in the config the reconstruction target is the de-normalised input, as the
  official ImageNet code does; the CIFAR recipe feeds [0, 1] pixels and needs none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .configuration_trap_replace import TrapReplaceConfig


@dataclass
class TrapReplaceImageClassifierOutput(ModelOutput):
    """Output of [`TrapReplaceForImageClassification`].

    Args:
        loss: `()` with `labels`: stage 1 `classification_loss + lambda * reconstruction_loss + mu * tv_loss`; after
            `replace_head` the classification loss alone.
        classification_loss: `()` the head's loss (cross-entropy for single-label problems).
        reconstruction_loss: `()` mean squared error between `reconstruction` and the (de-normalised) input (stage 1).
        tv_loss: `()` total variation of `reconstruction`: summed squared vertical and horizontal differences over
            `B * C * H * W` (stage 1).
        logits: `(B, num_labels)` class scores of the trap head (stage 1) or the replacement head (stage 2).
        reconstruction: `(B, C, H, W)` the decoder's image in [0, 1] (stage 1 only).
        hidden_states: with `output_hidden_states`, the input conv's output and every stem block's output.
    """

    loss: torch.FloatTensor | None = None
    classification_loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    tv_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """The official TV term: (sum of squared vertical + horizontal neighbour differences) / (B * C * H * W).

    Args:
        images: `(B, C, H, W)`.

    Returns:
        A scalar tensor.
    """
    vertical = (images[:, :, 1:, :] - images[:, :, :-1, :]).pow(2).sum()
    horizontal = (images[:, :, :, 1:] - images[:, :, :, :-1]).pow(2).sum()
    return (vertical + horizontal) / images.numel()


# --- backbone blocks -----------------------------------------------------------------------------------------------


class TrapReplaceWideBlock(nn.Module):
    """The official WRN pre-activation BasicBlock: BN, LReLU, conv3x3, BN, LReLU, [dropout], conv3x3, + shortcut.

    A block that changes the width has a 1x1 shortcut conv, and its first conv and shortcut see the raw input (the
    official quirk), unless `activate_before_residual` (the first group of a widened WRN) activates it first.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        negative_slope: float,
        dropout: float,
        activate_before_residual: bool,
    ) -> None:
        super().__init__()
        self.equal_in_out = in_channels == out_channels
        self.activate_before_residual = activate_before_residual
        needs_first_norm = self.equal_in_out or activate_before_residual
        self.norm1 = nn.BatchNorm2d(in_channels) if needs_first_norm else None
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=True)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=True)
        self.shortcut = None if self.equal_in_out else nn.Conv2d(in_channels, out_channels, 1, stride=stride)
        self.dropout = nn.Dropout(dropout)
        self.negative_slope = negative_slope

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.equal_in_out:
            residual = hidden_states
            hidden = F.leaky_relu(self.norm1(hidden_states), self.negative_slope)
        else:
            if self.activate_before_residual:
                hidden_states = F.leaky_relu(self.norm1(hidden_states), self.negative_slope)
            residual = self.shortcut(hidden_states)
            hidden = hidden_states  # the official quirk: conv1 sees the raw input
        hidden = F.leaky_relu(self.norm2(self.conv1(hidden)), self.negative_slope)
        hidden = self.conv2(self.dropout(hidden))
        return residual + hidden


class TrapReplaceResNetBlock(nn.Module):
    """torchvision's post-activation BasicBlock (conv3x3, BN, ReLU, [dropout], conv3x3, BN, + shortcut, ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, negative_slope: float, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.dropout = nn.Dropout(dropout)
        self.negative_slope = negative_slope

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states if self.shortcut is None else self.shortcut(hidden_states)
        hidden = F.leaky_relu(self.norm1(self.conv1(hidden_states)), self.negative_slope)
        hidden = self.norm2(self.conv2(self.dropout(hidden)))
        return F.leaky_relu(hidden + residual, self.negative_slope)


def build_blocks(config: TrapReplaceConfig, first: int, last: int, dropout: float) -> nn.ModuleList:
    """Residual blocks `first..last` (1-based, inclusive) of the backbone, each with `dropout` inside."""
    blocks = nn.ModuleList()
    in_channels = config.embedding_size
    number = 0
    for group, (width, depth) in enumerate(zip(config.hidden_sizes, config.depths, strict=True)):
        for index in range(depth):
            number += 1
            stride = 2 if group > 0 and index == 0 else 1
            if first <= number <= last:
                if config.backbone == "wide_resnet":
                    block = TrapReplaceWideBlock(
                        in_channels, width, stride, config.negative_slope, dropout, activate_before_residual=group == 0
                    )
                else:
                    block = TrapReplaceResNetBlock(in_channels, width, stride, config.negative_slope, dropout)
                blocks.append(block)
            in_channels = width
    return blocks


class TrapReplaceEmbeddings(nn.Module):
    """The input layer: conv3x3 (WRN) or conv7x7 stride 2, BN, ReLU, max-pool 3 stride 2 (ResNet)."""

    def __init__(self, config: TrapReplaceConfig) -> None:
        super().__init__()
        self.is_resnet = config.backbone == "resnet"
        if self.is_resnet:
            self.convolution = nn.Conv2d(config.num_channels, config.embedding_size, 7, stride=2, padding=3, bias=False)
            self.norm = nn.BatchNorm2d(config.embedding_size)
            self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.convolution = nn.Conv2d(config.num_channels, config.embedding_size, 3, padding=1, bias=True)
        self.negative_slope = config.negative_slope

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.convolution(pixel_values)
        if self.is_resnet:
            hidden = self.pool(F.leaky_relu(self.norm(hidden), self.negative_slope))
        return hidden


class TrapReplaceHead(nn.Module):
    """The classification head on the stem output: the remaining blocks, final BN + activation (pre-activation
    networks), global average pooling, [dropout-free] linear classifier. Used as the trap head (no dropout) and as
    the replacement head (`head_dropout` inside its blocks)."""

    def __init__(self, config: TrapReplaceConfig, dropout: float) -> None:
        super().__init__()
        self.blocks = build_blocks(config, config.stem_end_block + 1, config.num_blocks, dropout)
        self.norm = nn.BatchNorm2d(config.hidden_sizes[-1]) if config.backbone == "wide_resnet" else None
        self.classifier = nn.Linear(config.hidden_sizes[-1], config.num_labels)
        self.negative_slope = config.negative_slope

    def forward(self, stem_output: torch.Tensor) -> torch.Tensor:
        """`(B, C_stem, h, w)` -> logits `(B, num_labels)`."""
        hidden = stem_output
        for block in self.blocks:
            hidden = block(hidden)
        if self.norm is not None:
            hidden = F.leaky_relu(self.norm(hidden), self.negative_slope)
        return self.classifier(hidden.mean(dim=(2, 3)))  # GAP: (B, C)


class TrapReplaceDecoder(nn.Module):
    """Transposed convolutions from the stem output back to the input size, a sigmoid at the end (Sec. 3.2)."""

    def __init__(self, config: TrapReplaceConfig) -> None:
        super().__init__()
        channels = [config.stem_hidden_size, *config.decoder_hidden_sizes, config.num_channels]
        activations = [*config.decoder_activations, "sigmoid"]
        layers: list[nn.Module] = []
        for index, stride in enumerate(config.decoder_strides):
            kernel_size = 4 if stride == 2 else 3
            layers.append(nn.ConvTranspose2d(channels[index], channels[index + 1], kernel_size, stride, padding=1))
            if activations[index] == "instance_norm_relu":
                layers += [nn.InstanceNorm2d(channels[index + 1]), nn.ReLU()]
            elif activations[index] == "relu":
                layers.append(nn.ReLU())
            elif activations[index] == "sigmoid":
                layers.append(nn.Sigmoid())
        self.layers = nn.Sequential(*layers)

    def forward(self, stem_output: torch.Tensor) -> torch.Tensor:
        """`(B, C_stem, H / s, W / s)` -> reconstruction `(B, num_channels, H, W)` in [0, 1]."""
        return self.layers(stem_output)


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


# --- models --------------------------------------------------------------------------------------------------------


class TrapReplacePreTrainedModel(PreTrainedModel):
    config_class = TrapReplaceConfig
    base_model_prefix = "trap_replace"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False  # BatchNorm statistics would be updated twice by the recomputation
    _no_split_modules = ["TrapReplaceWideBlock", "TrapReplaceResNetBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The official initialisation: Kaiming-normal (fan-out) conv weights, unit BatchNorm, Xavier-normal linear
        weights with zero bias; conv biases and the transposed convolutions keep PyTorch's default (uniform) rule."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                init.uniform_(module.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        elif isinstance(module, nn.ConvTranspose2d):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            fan_in = module.weight.shape[1] * module.weight[0, 0].numel()  # weight: (in, out, k, k)
            if module.bias is not None:
                init.uniform_(module.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        elif isinstance(module, nn.Linear):
            init.xavier_normal_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            if module.num_batches_tracked is not None:
                init.zeros_(module.num_batches_tracked)


class TrapReplaceModel(TrapReplacePreTrainedModel):
    """The shared stem: input layer and residual blocks 1..`stem_end_block`."""

    def __init__(self, config: TrapReplaceConfig) -> None:
        super().__init__(config)
        self.embeddings = TrapReplaceEmbeddings(config)
        self.blocks = build_blocks(config, 1, config.stem_end_block, dropout=0.0)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.convolution

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPoolingAndNoAttention:
        r"""Stem features of `pixel_values` `(B, C, H, W)`.

        Returns:
            `last_hidden_state` `(B, C_stem, H / s, W / s)` with `s = config.stem_stride` (WRN-16-1, stem 5:
            `(B, 64, 8, 8)` for 32x32 inputs), its global average `pooler_output` `(B, C_stem)` and, with
            `output_hidden_states`, the input layer's output followed by every block's.
        """
        _check_pixel_values(pixel_values, self.config.num_channels, self.dtype)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        hidden = self.embeddings(pixel_values)
        hidden_states = [hidden]
        for block in self.blocks:
            hidden = block(hidden)
            hidden_states.append(hidden)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=hidden,
            pooler_output=hidden.mean(dim=(2, 3)),
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
        )


class TrapReplaceForImageClassification(TrapReplacePreTrainedModel):
    """Stem + trap head + image decoder (stage 1); after [`replace_head`], stem + replacement head (stage 2).

    A stage-2 model (`config.head_replaced`) is an ordinary image classifier: `logits` only, its stem frozen.
    """

    def __init__(self, config: TrapReplaceConfig) -> None:
        super().__init__(config)
        self.trap_replace = TrapReplaceModel(config)
        if config.head_replaced:
            self.replacement_head = TrapReplaceHead(config, dropout=config.head_dropout)
            self.trap_replace.requires_grad_(False)
        else:
            self.trap_head = TrapReplaceHead(config, dropout=0.0)
            self.decoder = TrapReplaceDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.trap_replace.get_input_embeddings()

    def train(self, mode: bool = True) -> TrapReplaceForImageClassification:
        """`nn.Module.train` (and so `eval`), except that a replaced model's stem stays frozen: in eval mode (fixed BN
        statistics) and without gradients. Re-applied here because `from_pretrained` re-creates the parameters."""
        super().train(mode)
        if self.config.head_replaced:
            self.trap_replace.eval()
            self.trap_replace.requires_grad_(False)
        return self

    def replace_head(self, num_labels: int | None = None) -> TrapReplaceForImageClassification:
        """Stage 2 ("remove and patch"): drop the trap head and the decoder, add a freshly initialised head and
        freeze the stem with its normalisation statistics.

        Args:
            num_labels: classes of the new head (default: the trap head's `config.num_labels`). A different count
                resets `config.id2label` / `label2id` to generic names; set them afterwards.

        Returns:
            The model itself, with `config.head_replaced = True`.
        """
        if self.config.head_replaced:
            raise ValueError("`replace_head` was already called on this model (`config.head_replaced` is True).")
        if num_labels is not None:
            if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
                raise ValueError(f"`num_labels` must be a positive int or None, got {num_labels!r}.")
            if num_labels != self.config.num_labels:
                self.config.num_labels = num_labels
        self.config.head_replaced = True
        del self.trap_head
        del self.decoder
        reference = next(self.trap_replace.parameters())
        head = TrapReplaceHead(self.config, dropout=self.config.head_dropout)
        head.to(device=reference.device, dtype=reference.dtype)
        head.apply(self._init_weights)
        self.replacement_head = head
        self.trap_replace.requires_grad_(False)
        return self.train(self.training)

    def reconstruction_target(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The image the decoder redraws: `pixel_values` de-normalised with `config.image_mean` / `image_std`."""
        if self.config.image_mean is None:
            return pixel_values
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.config.image_mean, dtype=pixel_values.dtype, device=pixel_values.device)
        std = torch.tensor(self.config.image_std, dtype=pixel_values.dtype, device=pixel_values.device)
        return pixel_values * std.view(shape) + mean.view(shape)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TrapReplaceImageClassifierOutput:
        r"""Logits `(B, num_labels)` and, in stage 1, the reconstruction `(B, C, H, W)`.

        In stage 1, H and W must be multiples of `config.stem_stride` (the decoder upsamples by exactly that much).
        With `labels` `(B,)` the loss follows `config.problem_type`, plus the weighted reconstruction and TV terms in
        stage 1.
        """
        stem = self.trap_replace(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        features = stem.last_hidden_state  # (B, C_stem, H / s, W / s)
        reconstruction = None
        if self.config.head_replaced:
            logits = self.replacement_head(features)
        else:
            stride = self.config.stem_stride
            if pixel_values.shape[-2] % stride or pixel_values.shape[-1] % stride:
                raise ValueError(
                    f"`pixel_values` height and width must be multiples of `config.stem_stride` = {stride} for the "
                    f"decoder to redraw the image, got {tuple(pixel_values.shape[-2:])}; resize or pad the images."
                )
            logits = self.trap_head(features)
            reconstruction = self.decoder(features)  # (B, C, H, W) in [0, 1]
        loss = classification_loss = reconstruction_loss = tv_loss = None
        if labels is not None:
            classification_loss = self.loss_function(labels, logits, self.config)
            loss = classification_loss
            if reconstruction is not None:
                # Sec. 3.2: the target is the (augmented, possibly triggered) input itself
                reconstruction_loss = F.mse_loss(reconstruction, self.reconstruction_target(pixel_values))
                tv_loss = total_variation(reconstruction)
                loss = loss + self.config.reconstruction_weight * reconstruction_loss + self.config.tv_weight * tv_loss
        return TrapReplaceImageClassifierOutput(
            loss=loss,
            classification_loss=classification_loss,
            reconstruction_loss=reconstruction_loss,
            tv_loss=tv_loss,
            logits=logits,
            reconstruction=reconstruction,
            hidden_states=stem.hidden_states,
        )


__all__ = [
    "TrapReplaceDecoder",
    "TrapReplaceForImageClassification",
    "TrapReplaceHead",
    "TrapReplaceImageClassifierOutput",
    "TrapReplaceModel",
    "TrapReplacePreTrainedModel",
    "TrapReplaceResNetBlock",
    "TrapReplaceWideBlock",
    "total_variation",
]
