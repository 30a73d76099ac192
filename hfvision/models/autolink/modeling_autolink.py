"""AutoLink: self-supervised keypoints linked by a learned skeleton graph.

AutoLink: Self-supervised Learning of Human Skeletons and Object Outlines by Linking Keypoints (He, Wandt, Rhodin;
NeurIPS 2022, arXiv 2205.10636). Official code:
https://github.com/xingzhehe/AutoLink-Self-supervised-Learning-of-Human-Skeletons-and-Object-Outlines-by-Linking-Keypoints.

The model, in the order of the paper's method section:
1. **Detector**: four residual blocks that downsample by bilinear interpolation (never a stride or a pool), two
   bilinear up blocks and a conv give K heatmaps; a softmax over each map and its expectation over a [-1, 1] grid
   (soft-argmax) give K keypoints.
2. **Graph**: one K x K matrix of edge weights shared by the whole dataset, w_ij = softplus(sklr * S_ij) for i < j,
   where S is the raw parameter and sklr = 512 a fixed reparametrisation that makes Adam move the edge scores 512x
   faster than a plain parameter.
3. **Edge map**: every pair is drawn as a soft segment H_ij(p) = exp(-d(p, [k_i, k_j])^2 / thick), with d the
   distance from pixel p to the segment; E(p) = max_{i<j} w_ij H_ij(p) (a max, so each pixel's gradient goes to one
   edge).
4. **Masked-image decoder**: a UNet restores the image from concat(alpha * masked image, E), where the mask blanks
   each cell of a 16 x 16 grid with probability 0.8 and alpha is a learned scalar (init 1). The reconstruction loss
   is the only signal: edges that help inpainting keep large weights, the rest fade, and what survives is a skeleton
   or an outline.

Coordinates: the official code works in (row, col) order; hfvision's outputs are (x, y) = (col, row) everywhere, in
[-1, 1] with the align-corners convention (-1 and +1 are the centres of the outermost pixels, as
`grid_sample(align_corners=True)` reads them). The soft-argmax and the rasteriser are written directly in (x, y).

Where we deviate from the official code:
- the paper's loss is a VGG16 perceptual loss; no ImageNet weights are available offline, so `perceptual_loss="vgg"`
  takes a user-supplied backbone and the default is a weight-free fallback, multi-scale L1 + 0.2 (1 - SSIM) (see
  `AutoLinkConfig.perceptual_loss`; model cards say which one trained a checkpoint);
- inputs whose size differs from `image_size` are resized for the detector, and the decoder runs at the input's own
  resolution (any size divisible by its total stride) instead of a fixed 128 px;
- the mask noise can be passed in (`noise=`) or drawn from a `generator`, so training steps are reproducible;
- the edge map can be drawn in chunks of pairs with recomputation in the backward pass (`edge_map_chunk_size`), which
  bounds memory for large K without changing values or gradients;
- `use_edge_map=False` runs the no-graph ablation (E := 0);
- convolutions followed by BatchNorm, and the heatmap conv, have no bias (the official ones do, initialised to 0):
  BatchNorm subtracts the batch mean and the spatial softmax ignores a per-map constant, so those biases get a zero
  gradient and stay 0 anyway.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .configuration_autolink import AutoLinkConfig

# Guard of the squared segment length: a zero-length segment (i.e. k_i == k_j) is drawn as a point.
MIN_SEGMENT_LENGTH_SQ = 1e-8
# SSIM of the fallback loss: a gaussian window of 11 taps and sigma 1.5 with the usual stabilisers (Wang et al. 2004),
# on images mapped to [0, 1].
SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
# ImageNet statistics: the perceptual backbone (VGG16 in the paper) expects ImageNet-normalised RGB.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class AutoLinkModelOutput(ModelOutput):
    """Output of [`AutoLinkModel`].

    Args:
        keypoints: `(B, K, 2)` keypoints as (x, y) in [-1, 1], align-corners convention (-1 / +1 are the centres of
            the outermost pixels): directly usable with `grid_sample(align_corners=True)`.
        heatmaps: `(B, K, h, w)` softmax probabilities whose expectations are the keypoints (`h = w =
            config.heatmap_size`).
        edge_weights: `(K, K)` the shared graph: symmetric, zero diagonal, non-negative.
        edge_map: `(B, 1, S, S)` the rendered edge map at `config.edge_map_size` (with `output_edge_map=True`).
        hidden_states: with `output_hidden_states`, the detector's output after every down and up block.
    """

    keypoints: torch.FloatTensor | None = None
    heatmaps: torch.FloatTensor | None = None
    edge_weights: torch.FloatTensor | None = None
    edge_map: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class AutoLinkSelfSupervisedOutput(ModelOutput):
    """Output of [`AutoLinkForSelfSupervisedKeypoints`].

    Args:
        loss: the reconstruction loss, the sum of the terms below that the configured loss uses.
        reconstruction: `(B, C, H, W)` the decoder's image in the input's [-1, 1] scale (no output activation).
        mask: `(B, 1, H, W)` 1 where the image was kept, 0 where blanked.
        edge_map: `(B, 1, H, W)` the edge map the decoder saw (zeros with `use_edge_map=False`).
        keypoints: `(B, K, 2)` keypoints, (x, y) in [-1, 1] (see [`AutoLinkModelOutput`]).
        heatmaps: `(B, K, h, w)` the detector's softmax probabilities.
        edge_weights: `(K, K)` the shared graph.
        l1_loss: multi-scale L1 term of the `"l1_ssim"` fallback.
        ssim_loss: `ssim_weight * (1 - SSIM)` term of the `"l1_ssim"` fallback.
        perceptual_loss: the `"vgg"` loss, sum over the backbone's feature maps of their mean absolute difference.
        hidden_states: with `output_hidden_states`, the detector's output after every down and up block.
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    mask: torch.FloatTensor | None = None
    edge_map: torch.FloatTensor | None = None
    keypoints: torch.FloatTensor | None = None
    heatmaps: torch.FloatTensor | None = None
    edge_weights: torch.FloatTensor | None = None
    l1_loss: torch.FloatTensor | None = None
    ssim_loss: torch.FloatTensor | None = None
    perceptual_loss: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


# --- 1. keypoints from heatmaps ---------------------------------------------------------------------------------------
def soft_argmax(heatmap_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial softmax and its expectation over an align-corners grid.

    Args:
        heatmap_logits: `(B, K, h, w)` unnormalised scores.

    Returns:
        `keypoints` `(B, K, 2)` as (x, y) in [-1, 1] (the first column / row centre is -1, the last +1) and the
        probabilities `(B, K, h, w)`.
    """
    batch_size, num_keypoints, height, width = heatmap_logits.shape
    probs = heatmap_logits.flatten(2).softmax(dim=-1).view(batch_size, num_keypoints, height, width)
    grid_x = torch.linspace(-1.0, 1.0, width, dtype=probs.dtype, device=probs.device)
    grid_y = torch.linspace(-1.0, 1.0, height, dtype=probs.dtype, device=probs.device)
    x = (probs.sum(dim=2) * grid_x).sum(dim=-1)  # column marginal (B, K, w) against column centres
    y = (probs.sum(dim=3) * grid_y).sum(dim=-1)  # row marginal (B, K, h) against row centres
    return torch.stack([x, y], dim=-1), probs


# --- 3. the edge map -------------------------------------------------------------------------------------------------
def _draw_segments(
    starts: torch.Tensor,
    ends: torch.Tensor,
    weights: torch.Tensor,
    grid_x: torch.Tensor,
    grid_y: torch.Tensor,
    thickness: float,
) -> torch.Tensor:
    """max_p w_p exp(-d(pixel, segment_p)^2 / thickness) over a chunk of P segments.

    Args:
        starts, ends: `(B, P, 2)` segment end points, (x, y).
        weights: `(P,)` edge weights.
        grid_x, grid_y: `(W,)` and `(H,)` pixel-centre coordinates.
        thickness: `thick`, in squared normalised units.

    Returns:
        `(B, H, W)`.
    """
    direction = ends - starts  # (B, P, 2)
    length_sq = direction.pow(2).sum(dim=-1).clamp_min(MIN_SEGMENT_LENGTH_SQ)[..., None, None]  # (B, P, 1, 1)
    dir_x, dir_y = direction[..., 0, None, None], direction[..., 1, None, None]  # (B, P, 1, 1)
    rel_x = grid_x.view(1, 1, 1, -1) - starts[..., 0, None, None]  # (B, P, 1, W): pixel minus start
    rel_y = grid_y.view(1, 1, -1, 1) - starts[..., 1, None, None]  # (B, P, H, 1)
    # position of the pixel's projection along the segment, clamped to the end points
    along = ((rel_x * dir_x + rel_y * dir_y) / length_sq).clamp(0.0, 1.0)  # (B, P, H, W)
    dist_sq = (rel_x - along * dir_x).pow(2) + (rel_y - along * dir_y).pow(2)
    lines = weights.view(1, -1, 1, 1) * torch.exp(-dist_sq / thickness)
    return lines.max(dim=1).values  # a max routes each pixel's gradient to one edge


def render_edge_map(
    keypoints: torch.Tensor,
    edge_weights: torch.Tensor,
    size: tuple[int, int],
    thickness: float,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Differentiable edge map E(p) = max_{i<j} w_ij exp(-d(p, [k_i, k_j])^2 / thickness).

    d is the distance from the pixel centre p to the segment between keypoints i and j (the projection is clamped to
    the end points). Pixel centres lie on an align-corners [-1, 1] grid, like the keypoints.

    Args:
        keypoints: `(B, K, 2)` keypoints, (x, y) in [-1, 1].
        edge_weights: `(K, K)` graph; only the strict upper triangle (i < j) is read.
        size: `(height, width)` of the map.
        thickness: `thick` of the soft line, in squared normalised units.
        chunk_size: draw at most this many pairs at once; with gradients enabled, each chunk is recomputed in the
            backward pass (activation checkpointing), so memory grows with the chunk, not with K(K-1)/2. Values and
            gradients equal the unchunked ones.

    Returns:
        `(B, 1, height, width)`.
    """
    if keypoints.ndim != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"`keypoints` must have shape (batch, K, 2), got {tuple(keypoints.shape)}.")
    num_keypoints = keypoints.shape[1]
    if edge_weights.shape != (num_keypoints, num_keypoints):
        raise ValueError(
            f"`edge_weights` must have shape ({num_keypoints}, {num_keypoints}), got {tuple(edge_weights.shape)}."
        )
    if num_keypoints < 2:
        raise ValueError(f"`keypoints` needs at least 2 keypoints to draw an edge, got {num_keypoints}.")
    if thickness <= 0:
        raise ValueError(f"`thickness` must be > 0, got {thickness}.")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"`chunk_size` must be None or >= 1, got {chunk_size}.")
    height, width = size
    first, second = torch.triu_indices(num_keypoints, num_keypoints, offset=1, device=keypoints.device)
    starts, ends, weights = keypoints[:, first], keypoints[:, second], edge_weights[first, second]  # (B, P, 2), (P,)
    grid_x = torch.linspace(-1.0, 1.0, width, dtype=keypoints.dtype, device=keypoints.device)
    grid_y = torch.linspace(-1.0, 1.0, height, dtype=keypoints.dtype, device=keypoints.device)
    num_pairs = weights.shape[0]
    if chunk_size is None or chunk_size >= num_pairs:
        return _draw_segments(starts, ends, weights, grid_x, grid_y, thickness)[:, None]
    chunk_maps = []
    for begin in range(0, num_pairs, chunk_size):  # a loop over chunks of pairs, each vectorised over pixels
        chunk = slice(begin, begin + chunk_size)
        args = (starts[:, chunk], ends[:, chunk], weights[chunk], grid_x, grid_y, thickness)
        if torch.is_grad_enabled():
            chunk_maps.append(checkpoint(_draw_segments, *args, use_reentrant=False))
        else:
            chunk_maps.append(_draw_segments(*args))
    return torch.stack(chunk_maps, dim=1).max(dim=1, keepdim=True).values


# --- 4. masking and the loss -----------------------------------------------------------------------------------------
def block_mask(noise: torch.Tensor, mask_ratio: float, size: tuple[int, int]) -> torch.Tensor:
    """The paper's block mask: a grid cell is kept where its uniform noise exceeds `mask_ratio` ("missing").

    Args:
        noise: `(B, G, G)` uniform [0, 1) values, one per grid cell.
        mask_ratio: probability that a cell is blanked.
        size: `(height, width)` of the image; cells are nearest-upsampled to it (constant when G divides the size).

    Returns:
        `(B, 1, height, width)`: 1 where the image is kept, 0 where it is blanked.
    """
    kept = (noise > mask_ratio).to(noise.dtype)[:, None]  # (B, 1, G, G)
    return F.interpolate(kept, size=size, mode="nearest")


def multiscale_l1(reconstruction: torch.Tensor, target: torch.Tensor, num_scales: int) -> torch.Tensor:
    """Sum over scales (full, /2, /4, ...; 2x2 average pooling) of the mean absolute error."""
    total = (reconstruction - target).abs().mean()
    for _ in range(num_scales - 1):
        reconstruction, target = F.avg_pool2d(reconstruction, 2), F.avg_pool2d(target, 2)
        total = total + (reconstruction - target).abs().mean()
    return total


def ssim(
    images: torch.Tensor,
    targets: torch.Tensor,
    window_size: int = SSIM_WINDOW_SIZE,
    sigma: float = SSIM_SIGMA,
) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004) of images in [0, 1], gaussian window, valid positions only.

    Local means, variances and the covariance come from one separable depthwise gaussian convolution of the stacked
    maps x, y, x^2, y^2, xy (population statistics, as `skimage.metrics.structural_similarity(gaussian_weights=True,
    use_sample_covariance=False, data_range=1)`). The window shrinks to the largest odd size the image fits.

    Args:
        images, targets: `(B, C, H, W)` in [0, 1].
        window_size: taps of the gaussian window.
        sigma: its standard deviation in pixels.

    Returns:
        A scalar: the SSIM map's mean over batch, channels and valid positions.
    """
    if images.shape != targets.shape or images.ndim != 4:
        raise ValueError(
            f"`images` and `targets` must be (B, C, H, W) of one shape, got {tuple(images.shape)}, "
            f"{tuple(targets.shape)}."
        )
    channels = images.shape[1]
    size = min(window_size, *images.shape[-2:])
    size -= 1 - size % 2  # odd, so the window has a centre
    offsets = torch.arange(size, dtype=images.dtype, device=images.device) - (size - 1) / 2
    taps = torch.exp(-offsets.pow(2) / (2 * sigma**2))
    taps = taps / taps.sum()
    stacked = torch.cat([images, targets, images * images, targets * targets, images * targets], dim=1)
    groups = stacked.shape[1]
    blurred = F.conv2d(stacked, taps.view(1, 1, 1, size).expand(groups, 1, 1, size), groups=groups)
    blurred = F.conv2d(blurred, taps.view(1, 1, size, 1).expand(groups, 1, size, 1), groups=groups)
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = blurred.split(channels, dim=1)
    var_x, var_y = mean_xx - mean_x.pow(2), mean_yy - mean_y.pow(2)
    covariance = mean_xy - mean_x * mean_y
    numerator = (2 * mean_x * mean_y + SSIM_C1) * (2 * covariance + SSIM_C2)
    denominator = (mean_x.pow(2) + mean_y.pow(2) + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return (numerator / denominator).mean()


# --- network blocks --------------------------------------------------------------------------------------------------
def halve(hidden_states: torch.Tensor) -> torch.Tensor:
    """Bilinear x0.5 (for even sizes: the mean of each 2 x 2 cell), the only downsampling AutoLink uses."""
    return F.interpolate(hidden_states, scale_factor=0.5, mode="bilinear", align_corners=False)


def double(hidden_states: torch.Tensor) -> torch.Tensor:
    """Bilinear x2."""
    return F.interpolate(hidden_states, scale_factor=2.0, mode="bilinear", align_corners=False)


def conv3x3(in_channels: int, out_channels: int, bias: bool = False) -> nn.Conv2d:
    """3x3 conv, 'same' padding. Bias only where neither a BatchNorm (which subtracts the batch mean) nor the spatial
    softmax (invariant to a per-map constant) follows: there a bias would get a zero gradient."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)


class AutoLinkDetectorDownBlock(nn.Module):
    """Residual down block: main conv3x3, x0.5, BN, LReLU, conv3x3, BN; skip conv3x3, x0.5, BN; LReLU of the sum."""

    def __init__(self, in_channels: int, out_channels: int, slope: float):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.shortcut_conv = conv3x3(in_channels, out_channels)
        self.shortcut_norm = nn.BatchNorm2d(out_channels)
        self.activation = nn.LeakyReLU(slope)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        main = self.activation(self.norm1(halve(self.conv1(hidden_states))))
        main = self.norm2(self.conv2(main))
        shortcut = self.shortcut_norm(halve(self.shortcut_conv(hidden_states)))
        return self.activation(main + shortcut)


class AutoLinkDetectorUpBlock(nn.Module):
    """x2 bilinear, conv3x3, BN, LReLU (the official "TransposedBlock")."""

    def __init__(self, in_channels: int, out_channels: int, slope: float):
        super().__init__()
        self.conv = conv3x3(in_channels, out_channels)
        self.norm = nn.BatchNorm2d(out_channels)
        self.activation = nn.LeakyReLU(slope)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(double(hidden_states))))


class AutoLinkDetector(nn.Module):
    """Image -> K heatmap logits: residual down blocks, up blocks, a conv3x3 to K channels."""

    def __init__(self, config: AutoLinkConfig):
        super().__init__()
        slope = config.leaky_relu_slope
        in_sizes = [config.num_channels, *config.detector_hidden_sizes[:-1]]
        self.down_blocks = nn.ModuleList(
            [
                AutoLinkDetectorDownBlock(in_size, out_size, slope)
                for in_size, out_size in zip(in_sizes, config.detector_hidden_sizes, strict=True)
            ]
        )
        up_in_sizes = [config.detector_hidden_sizes[-1], *config.detector_upsample_sizes[:-1]]
        self.up_blocks = nn.ModuleList(
            [
                AutoLinkDetectorUpBlock(in_size, out_size, slope)
                for in_size, out_size in zip(up_in_sizes, config.detector_upsample_sizes, strict=True)
            ]
        )
        head_in = config.detector_upsample_sizes[-1] if config.detector_upsample_sizes else up_in_sizes[0]
        self.heatmap_head = conv3x3(head_in, config.num_keypoints)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """`(B, C, S, S)` -> heatmap logits `(B, K, h, h)` and every block's output."""
        hidden_states, block_outputs = pixel_values, []
        for block in (*self.down_blocks, *self.up_blocks):
            hidden_states = block(hidden_states)
            block_outputs.append(hidden_states)
        return self.heatmap_head(hidden_states), tuple(block_outputs)


class AutoLinkGraph(nn.Module):
    """The dataset-wide graph: w_ij = softplus(sklr * S_ij) for i < j, symmetrised with a zero diagonal.

    Only the strict upper triangle of the raw parameter S (`edge_scores`) is used, so only it gets gradients. The
    scale sklr (`graph_lr_scale`) is a reparametrisation: S is initialised at score / sklr, so under Adam (whose step
    does not depend on the gradient's scale) each step changes the score sklr * S by about sklr x the learning rate.
    Replicate it as is: a x512 learning-rate param group differs under AdamW's decay and eps.
    """

    def __init__(self, config: AutoLinkConfig):
        super().__init__()
        self.lr_scale = config.graph_lr_scale
        self.init_logit = config.graph_init_logit
        self.init_std = config.graph_init_std
        self.edge_scores = nn.Parameter(torch.empty(config.num_keypoints, config.num_keypoints))

    def forward(self) -> torch.Tensor:
        """The `(K, K)` symmetric, non-negative edge weights with a zero diagonal."""
        upper = torch.triu(F.softplus(self.lr_scale * self.edge_scores), diagonal=1)
        return upper + upper.T


class AutoLinkDecoderDownBlock(nn.Module):
    """conv3x3, BN, LReLU, conv3x3, BN, x0.5, LReLU."""

    def __init__(self, in_channels: int, out_channels: int, slope: float):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.activation = nn.LeakyReLU(slope)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.activation(self.norm1(self.conv1(hidden_states)))
        return self.activation(halve(self.norm2(self.conv2(hidden_states))))


class AutoLinkDecoderUpBlock(nn.Module):
    """x2, conv3x3, BN, LReLU, conv3x3, BN, LReLU."""

    def __init__(self, in_channels: int, out_channels: int, slope: float):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.activation = nn.LeakyReLU(slope)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.activation(self.norm1(self.conv1(double(hidden_states))))
        return self.activation(self.norm2(self.conv2(hidden_states)))


class AutoLinkDecoder(nn.Module):
    """UNet from concat(alpha * masked image, edge map) to the image.

    With widths h_0..h_n (`decoder_hidden_sizes`): conv3x3 + LReLU to h_0 at full resolution; n down blocks
    h_i -> h_{i+1}; n up blocks, each output concatenated with the down path's map of the same size
    (h_n -> h_{n-1}, then 2 h_{n-i} -> h_{n-i-1}); a final conv3x3 2 h_0 -> C with no output activation.
    """

    def __init__(self, config: AutoLinkConfig):
        super().__init__()
        slope, widths = config.leaky_relu_slope, config.decoder_hidden_sizes
        depth = len(widths) - 1
        self.stem = nn.Sequential(conv3x3(config.num_channels + 1, widths[0], bias=True), nn.LeakyReLU(slope))
        self.down_blocks = nn.ModuleList(
            [AutoLinkDecoderDownBlock(widths[i], widths[i + 1], slope) for i in range(depth)]
        )
        up_in_sizes = [widths[depth]] + [2 * widths[depth - i] for i in range(1, depth)]
        self.up_blocks = nn.ModuleList(
            [AutoLinkDecoderUpBlock(up_in_sizes[i], widths[depth - 1 - i], slope) for i in range(depth)]
        )
        self.output_conv = conv3x3(2 * widths[0], config.num_channels, bias=True)

    def forward(self, decoder_inputs: torch.Tensor) -> torch.Tensor:
        """`(B, C + 1, H, W)` -> `(B, C, H, W)`; H and W must be multiples of 2 ** n."""
        skips = [self.stem(decoder_inputs)]
        for block in self.down_blocks:
            skips.append(block(skips[-1]))
        hidden_states = skips[-1]
        for index, block in enumerate(self.up_blocks):
            hidden_states = torch.cat([block(hidden_states), skips[-2 - index]], dim=1)
        return self.output_conv(hidden_states)


# --- models ----------------------------------------------------------------------------------------------------------
class AutoLinkPreTrainedModel(PreTrainedModel):
    config_class = AutoLinkConfig
    base_model_prefix = "autolink"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False  # BatchNorm statistics would be updated twice by the recomputation
    _no_split_modules = ["AutoLinkDetector", "AutoLinkGraph", "AutoLinkDecoder"]

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.save_pretrained`, shipping the keypoint-detection pipeline with every checkpoint.

        config.json gets the pipeline's `custom_pipelines` entry, and `pipeline_autolink.py` is written beside the
        model's code (transformers copies the files a modeling file imports relatively, and fetches them with it when
        the model is loaded as remote code). So a checkpoint saved any way (`save_pretrained`, `push_to_hub`,
        `Trainer`, a pipeline) runs `pipeline("keypoint-detection", model=path_or_repo_id, trust_remote_code=True)`
        without hfvision, also after being re-saved there.
        """
        from .pipeline_autolink import KeypointDetectionPipeline

        pipeline_class = KeypointDetectionPipeline
        impl = f"{pipeline_class.__module__.rsplit('.', 1)[-1]}.{pipeline_class.__name__}"
        self.config.custom_pipelines = {
            **(getattr(self.config, "custom_pipelines", None) or {}),
            "keypoint-detection": {"impl": impl, "pt": ["AutoModel"], "type": "image"},
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The official init: Kaiming normal (a = LReLU slope) and zero bias for every conv; unit BatchNorm; edge
        scores (N(0, 1) * std + logit) / sklr; alpha = 1."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, a=self.config.leaky_relu_slope)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            if module.num_batches_tracked is not None:
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, AutoLinkGraph):
            init.normal_(
                module.edge_scores, mean=module.init_logit / module.lr_scale, std=module.init_std / module.lr_scale
            )
        elif isinstance(module, AutoLinkForSelfSupervisedKeypoints):
            init.ones_(module.masked_image_scale)


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


class AutoLinkModel(AutoLinkPreTrainedModel):
    """The AutoLink detector and graph: image -> keypoints, heatmaps, the shared edge weights (and the edge map).

    Training it needs [`AutoLinkForSelfSupervisedKeypoints`], which holds this model under `autolink` and adds the
    masked-image decoder and the loss.
    """

    # Loaded from a training checkpoint, the decoder is expected to be left behind: no "unexpected keys" report.
    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^masked_image_scale$"]

    def __init__(self, config: AutoLinkConfig):
        super().__init__(config)
        self.detector = AutoLinkDetector(config)
        self.graph = AutoLinkGraph(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.detector.down_blocks[0].conv1

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_edge_map: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AutoLinkModelOutput:
        r"""Detect keypoints in `pixel_values` `(B, C, H, W)` (normalised to [-1, 1] by the image processor).

        Inputs of another size than `config.image_size` are resized to it bilinearly; keypoints are normalised, so
        they hold for the input at any size.

        Args:
            output_hidden_states: also return every detector block's output.
            output_edge_map: also render the edge map at `config.edge_map_size`.
        """
        _check_pixel_values(pixel_values, self.config.num_channels, self.dtype)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        size = self.config.image_size
        if pixel_values.shape[-2:] != (size, size):
            pixel_values = F.interpolate(pixel_values, size=(size, size), mode="bilinear", align_corners=False)
        heatmap_logits, block_outputs = self.detector(pixel_values)  # (B, K, h, h)
        keypoints, heatmaps = soft_argmax(heatmap_logits)  # (B, K, 2) as (x, y)
        edge_weights = self.graph()  # (K, K)
        edge_map = None
        if output_edge_map:
            edge_map = render_edge_map(
                keypoints,
                edge_weights,
                (self.config.edge_map_size, self.config.edge_map_size),
                self.config.edge_thickness,
                self.config.edge_map_chunk_size,
            )
        return AutoLinkModelOutput(
            keypoints=keypoints,
            heatmaps=heatmaps,
            edge_weights=edge_weights,
            edge_map=edge_map,
            hidden_states=block_outputs if output_hidden_states else None,
        )


class AutoLinkForSelfSupervisedKeypoints(AutoLinkPreTrainedModel):
    """AutoLink for training: detector and graph, the masked-image UNet decoder conditioned on the edge map, the loss.

    The paper trains with AdamW (lr 1e-4, weight decay 1e-3) over every parameter, graph and alpha included: the sklr
    reparametrisation lives inside the graph, so a plain `torch.optim.AdamW(model.parameters(), ...)` is the paper's
    optimiser and no special parameter group is needed.

    Args:
        config: the model configuration.
        perceptual_backbone: for `config.perceptual_loss == "vgg"`, a module mapping ImageNet-normalised RGB
            `(B, 3, s, s)` to a list of feature maps (the paper: VGG16 cut after relu1_2, relu2_2, relu3_3, relu4_3).
            It is frozen, kept out of `parameters()` and of the checkpoint (and so not moved by `model.to()`: put it
            on the model's device yourself); pass it again after loading (`from_pretrained(path,
            perceptual_backbone=...)`) or with [`set_perceptual_backbone`].
    """

    def __init__(self, config: AutoLinkConfig, perceptual_backbone: nn.Module | None = None):
        super().__init__(config)
        self.autolink = AutoLinkModel(config)
        self.decoder = AutoLinkDecoder(config)
        self.masked_image_scale = nn.Parameter(torch.ones(()))  # the paper's alpha
        self.set_perceptual_backbone(perceptual_backbone)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.autolink.get_input_embeddings()

    def set_perceptual_backbone(self, backbone: nn.Module | None) -> None:
        """Set (or clear, with `None`) the frozen feature extractor of the `"vgg"` loss; it is not saved."""
        if backbone is not None:
            if not isinstance(backbone, nn.Module):
                raise TypeError(f"`perceptual_backbone` must be a torch.nn.Module, got {type(backbone).__name__}.")
            backbone.requires_grad_(False).eval()
        # stored outside nn.Module's registries so it stays out of parameters(), state_dict() and the checkpoint
        object.__setattr__(self, "_perceptual_backbone", backbone)

    @property
    def perceptual_backbone(self) -> nn.Module | None:
        """The frozen feature extractor of the `"vgg"` loss, if set."""
        return self._perceptual_backbone

    def reconstruction_loss(self, reconstruction: torch.Tensor, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """The configured loss terms between the reconstruction and the full input image (both in [-1, 1])."""
        config = self.config
        if config.perceptual_loss == "l1_ssim":
            l1_loss = multiscale_l1(reconstruction, pixel_values, config.l1_num_scales)
            ssim_loss = config.ssim_weight * (1 - ssim((reconstruction + 1) / 2, (pixel_values + 1) / 2))
            return {"loss": l1_loss + ssim_loss, "l1_loss": l1_loss, "ssim_loss": ssim_loss}
        backbone = self.perceptual_backbone
        if backbone is None:
            raise ValueError(
                '`perceptual_loss="vgg"` needs a perceptual backbone: pass `perceptual_backbone=` to the constructor '
                "or to `from_pretrained`, call `set_perceptual_backbone`, or use the weight-free "
                '`perceptual_loss="l1_ssim"`.'
            )
        mean = torch.tensor(IMAGENET_MEAN, dtype=pixel_values.dtype, device=pixel_values.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=pixel_values.dtype, device=pixel_values.device).view(1, 3, 1, 1)
        size = (config.perceptual_image_size, config.perceptual_image_size)

        def prepare(images: torch.Tensor) -> torch.Tensor:
            images = ((images + 1) / 2 - mean) / std  # [-1, 1] -> ImageNet-normalised
            if images.shape[-2:] != size:
                images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            return images

        with torch.no_grad():
            target_features = backbone(prepare(pixel_values))
        features = backbone(prepare(reconstruction))
        perceptual_loss = sum(
            (feature - target).abs().mean() for feature, target in zip(features, target_features, strict=True)
        )
        return {"loss": perceptual_loss, "perceptual_loss": perceptual_loss}

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        use_edge_map: bool | None = None,
        output_hidden_states: bool | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AutoLinkSelfSupervisedOutput:
        r"""Mask `pixel_values` `(B, C, H, W)` (in [-1, 1]), restore them from the edge map, return the loss.

        H and W must be multiples of the decoder's total stride `2 ** (len(decoder_hidden_sizes) - 1)`.

        Args:
            noise: `(B, G, G)` uniform [0, 1) noise of the block mask (`G = config.mask_grid_size`); a cell is kept
                where its noise exceeds `config.mask_ratio`. Drawn with `generator` when `None`.
            use_edge_map: feed the edge map to the decoder (default `config.use_edge_map`); `False` feeds zeros, the
                no-graph ablation, where the detector and the graph get no gradient.
            output_hidden_states: also return every detector block's output.
            generator: source of the mask noise when `noise` is `None`.
        """
        config = self.config
        _check_pixel_values(pixel_values, config.num_channels, self.dtype)
        batch_size, height, width = pixel_values.shape[0], *pixel_values.shape[-2:]
        stride = 2 ** (len(config.decoder_hidden_sizes) - 1)
        if height % stride or width % stride:
            raise ValueError(
                f"`pixel_values` height and width must be multiples of the decoder stride {stride}, got "
                f"{(height, width)}."
            )
        grid = config.mask_grid_size
        if noise is None:
            noise = torch.rand(batch_size, grid, grid, generator=generator, device=pixel_values.device)
        elif noise.shape != (batch_size, grid, grid):
            raise ValueError(f"`noise` must have shape ({batch_size}, {grid}, {grid}), got {tuple(noise.shape)}.")
        use_edge_map = config.use_edge_map if use_edge_map is None else use_edge_map

        outputs = self.autolink(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        if use_edge_map:
            edge_map = render_edge_map(
                outputs.keypoints,
                outputs.edge_weights,
                (height, width),
                config.edge_thickness,
                config.edge_map_chunk_size,
            )  # (B, 1, H, W)
        else:
            edge_map = pixel_values.new_zeros(batch_size, 1, height, width)
        mask = block_mask(noise, config.mask_ratio, (height, width)).to(pixel_values.dtype)  # (B, 1, H, W)
        decoder_inputs = torch.cat([self.masked_image_scale * (pixel_values * mask), edge_map], dim=1)
        reconstruction = self.decoder(decoder_inputs)  # (B, C, H, W)
        losses = self.reconstruction_loss(reconstruction, pixel_values)
        return AutoLinkSelfSupervisedOutput(
            reconstruction=reconstruction,
            mask=mask,
            edge_map=edge_map,
            keypoints=outputs.keypoints,
            heatmaps=outputs.heatmaps,
            edge_weights=outputs.edge_weights,
            hidden_states=outputs.hidden_states,
            **losses,
        )


__all__ = [
    "AutoLinkForSelfSupervisedKeypoints",
    "AutoLinkModel",
    "AutoLinkModelOutput",
    "AutoLinkPreTrainedModel",
    "AutoLinkSelfSupervisedOutput",
    "block_mask",
    "multiscale_l1",
    "render_edge_map",
    "soft_argmax",
    "ssim",
]
