"""AutoLink configuration.

AutoLink: Self-supervised Learning of Human Skeletons and Object Outlines by Linking Keypoints (He, Wandt, Rhodin;
NeurIPS 2022, arXiv 2205.10636). Official code:
https://github.com/xingzhehe/AutoLink-Self-supervised-Learning-of-Human-Skeletons-and-Object-Outlines-by-Linking-Keypoints.

Defaults equal the official README checkpoint (CelebA in the wild, K = 8, thickness 2.5e-3, 128 px); `from_preset`
builds the other published settings (Taichi, Human3.6M), the digest's small CPU setting and a tiny one for tests.
"""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# Every Auto class a saved checkpoint opens as remote code (`trust_remote_code=True`); the processor carries its own,
# and the model's `save_pretrained` adds the keypoint-detection pipeline (`custom_pipelines`).
AUTO_MAP = {
    "AutoConfig": "configuration_autolink.AutoLinkConfig",
    "AutoModel": "modeling_autolink.AutoLinkModel",
    "AutoModelForPreTraining": "modeling_autolink.AutoLinkForSelfSupervisedKeypoints",
}

PERCEPTUAL_LOSSES = ("l1_ssim", "vgg")
_LIST_FIELDS = ("detector_hidden_sizes", "detector_upsample_sizes", "decoder_hidden_sizes")


@strict
class AutoLinkConfig(PreTrainedConfig):
    r"""Configuration of [`AutoLinkModel`] and [`AutoLinkForSelfSupervisedKeypoints`].

    A detector turns an image into K heatmaps and, by soft-argmax, K keypoints. One learned graph, shared by the whole
    dataset, holds a weight per keypoint pair; every pair is drawn as a soft line segment scaled by its weight into a
    one-channel edge map (max over pairs). A UNet restores the image from the edge map and a copy of the image with
    most of a coarse grid of blocks blanked out. The reconstruction loss is the only training signal.

    Args:
        num_channels (`int`, *optional*, defaults to 3): image channels.
        num_keypoints (`int`, *optional*, defaults to 8): K, keypoints per image (at least 2: the graph needs a pair).
        image_size (`int`, *optional*, defaults to 128): side of the detector input; other input sizes are resized to
            it bilinearly (the official code always detects at 128 px).
        edge_map_size (`int`, *optional*, defaults to 128): side of the edge map [`AutoLinkModel`] returns with
            `output_edge_map=True` (the official demo renders 64). The self-supervised model always renders the edge
            map at its input resolution, which its decoder needs.
        edge_thickness (`float`, *optional*, defaults to 2.5e-3): `thick` of H = exp(-d^2 / thick), with d the
            distance to a segment in normalised [-1, 1] units: the line's half-width is about
            `sqrt(thick) * (size - 1) / 2` pixels. The published settings shrink it as K grows.
        mask_ratio (`float`, *optional*, defaults to 0.8): `missing`, the probability that a grid cell is blanked.
        mask_grid_size (`int`, *optional*, defaults to 16): `block`, cells per side of the mask grid.
        graph_lr_scale (`float`, *optional*, defaults to 512.0): `sklr`. The raw graph parameter S holds scores
            divided by this: w = softplus(sklr * S). Under Adam this makes the edge scores move `sklr` times faster
            than a plain parameter; the authors keep 512 on every dataset.
        graph_init_logit (`float`, *optional*, defaults to -4.0): mean initial edge score sklr * S (w = softplus(-4)
            = 0.018 at init).
        graph_init_std (`float`, *optional*, defaults to 0.1): standard deviation of the initial edge scores.
        detector_hidden_sizes (`list[int]`, *optional*, defaults to `[64, 128, 256, 512]`): widths of the detector's
            residual down blocks, each halving the resolution by bilinear interpolation.
        detector_upsample_sizes (`list[int]`, *optional*, defaults to `[256, 128]`): widths of the detector's up
            blocks (bilinear x2, conv, BN, LeakyReLU); the heatmaps are
            `image_size / 2 ** len(detector_hidden_sizes) * 2 ** len(detector_upsample_sizes)` pixels wide (32).
        decoder_hidden_sizes (`list[int]`, *optional*, defaults to `[64, 128, 256, 512, 512]`): widths of the UNet
            decoder: the first conv at full resolution, then one down block (x0.5) per further entry, mirrored by as
            many up blocks with skip connections.
        leaky_relu_slope (`float`, *optional*, defaults to 0.2): negative slope of every LeakyReLU and the `a` of the
            Kaiming initialisation.
        perceptual_loss (`str`, *optional*, defaults to `"l1_ssim"`): reconstruction loss. `"vgg"` is the paper's:
            sum over feature maps of mean |phi(x_hat) - phi(x)| with a perceptual backbone the user supplies
            (e.g. VGG16 cut at relu1_2, relu2_2, relu3_3, relu4_3; no ImageNet weights ship with hfvision).
            `"l1_ssim"` is the weight-free fallback: multi-scale L1 plus `ssim_weight * (1 - SSIM)`.
        l1_num_scales (`int`, *optional*, defaults to 3): scales of the fallback's L1 term (full, /2, /4).
        ssim_weight (`float`, *optional*, defaults to 0.2): weight of the fallback's 1 - SSIM term.
        perceptual_image_size (`int`, *optional*, defaults to 224): side the images are resized to before the
            perceptual backbone (the official code feeds VGG 224 px, ImageNet-normalised).
        use_edge_map (`bool`, *optional*, defaults to `True`): feed the edge map to the decoder. `False` is the
            no-graph ablation (edge map := 0): the detector and the graph then get no gradient.
        edge_map_chunk_size (`int`, *optional*): draw at most this many keypoint pairs at once, recomputing each
            chunk in the backward pass, so memory grows with the chunk rather than with K(K-1)/2 (the full edge stack
            costs B * K(K-1)/2 * S^2 floats: 2 GB at K = 32, S = 128, B = 64). `None` draws every pair at once.
    """

    model_type = "autolink"

    num_channels: int = 3
    num_keypoints: int = 8
    image_size: int = 128
    edge_map_size: int = 128
    edge_thickness: float = 2.5e-3
    mask_ratio: float = 0.8
    mask_grid_size: int = 16
    graph_lr_scale: float = 512.0
    graph_init_logit: float = -4.0
    graph_init_std: float = 0.1
    detector_hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 256, 512)
    detector_upsample_sizes: list[int] | tuple[int, ...] = (256, 128)
    decoder_hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 256, 512, 512)
    leaky_relu_slope: float = 0.2
    perceptual_loss: str = "l1_ssim"
    l1_num_scales: int = 3
    ssim_weight: float = 0.2
    perceptual_image_size: int = 224
    use_edge_map: bool = True
    edge_map_chunk_size: int | None = None

    # Named settings: the official checkpoints' (K, thickness), the digest's small CPU run and a tiny test model.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "autolink-faces": {},
        "autolink-taichi": {"num_keypoints": 10, "edge_thickness": 5e-4},
        "autolink-h36m": {"num_keypoints": 32, "edge_thickness": 7.5e-5, "edge_map_chunk_size": 64},
        "autolink-small": {
            "num_keypoints": 6,
            "image_size": 64,
            "edge_map_size": 64,
            "edge_thickness": 4e-3,
            "mask_grid_size": 8,
            "detector_hidden_sizes": [16, 32, 64, 128],
            "detector_upsample_sizes": [64, 32],
            "decoder_hidden_sizes": [16, 32, 64, 128, 128],
        },
        "autolink-tiny": {
            "num_keypoints": 6,
            "image_size": 32,
            "edge_map_size": 32,
            "edge_thickness": 1e-2,
            "mask_grid_size": 8,
            "detector_hidden_sizes": [16, 32, 64, 64],
            "detector_upsample_sizes": [32, 16],
            "decoder_hidden_sizes": [8, 8, 16, 16, 16],
            "perceptual_image_size": 32,
        },
    }

    def __post_init__(self, **kwargs: Any) -> None:
        for name in _LIST_FIELDS:  # JSON gives lists back; keep them lists so configs round-trip equal
            setattr(self, name, list(getattr(self, name)))
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        if self.num_keypoints < 2:
            raise ValueError(f"`num_keypoints` must be >= 2 (the graph links pairs), got {self.num_keypoints}.")
        if self.perceptual_loss not in PERCEPTUAL_LOSSES:
            raise ValueError(f"`perceptual_loss` must be one of {PERCEPTUAL_LOSSES}, got {self.perceptual_loss!r}.")
        if self.perceptual_loss == "vgg" and self.num_channels != 3:
            raise ValueError(
                f'`perceptual_loss="vgg"` feeds ImageNet-normalised RGB to the backbone: `num_channels` must be 3, got '
                f"{self.num_channels}."
            )
        if not self.detector_hidden_sizes or len(self.decoder_hidden_sizes) < 2:
            raise ValueError(
                "`detector_hidden_sizes` needs at least one down block and `decoder_hidden_sizes` at least two entries "
                f"(full-resolution conv + one down block), got {self.detector_hidden_sizes} and "
                f"{self.decoder_hidden_sizes}."
            )
        if len(self.detector_upsample_sizes) > len(self.detector_hidden_sizes):
            raise ValueError(
                f"`detector_upsample_sizes` ({self.detector_upsample_sizes}) cannot have more up blocks than "
                f"`detector_hidden_sizes` ({self.detector_hidden_sizes}) has down blocks."
            )
        if min(self.detector_hidden_sizes + self.detector_upsample_sizes + self.decoder_hidden_sizes) < 1:
            raise ValueError("every detector and decoder width must be >= 1.")
        for name, divisor in (
            ("detector_hidden_sizes", 2 ** len(self.detector_hidden_sizes)),
            ("decoder_hidden_sizes", 2 ** (len(self.decoder_hidden_sizes) - 1)),
            ("mask_grid_size", self.mask_grid_size),
        ):
            if divisor < 1 or self.image_size % divisor:
                raise ValueError(
                    f"`image_size` ({self.image_size}) must be a positive multiple of {divisor} (set by `{name}`)."
                )
        if self.edge_map_size < 2 or self.perceptual_image_size < 1:
            raise ValueError(
                f"`edge_map_size` must be >= 2 and `perceptual_image_size` >= 1, got {self.edge_map_size} and "
                f"{self.perceptual_image_size}."
            )
        if self.edge_thickness <= 0 or self.graph_lr_scale <= 0 or self.graph_init_std < 0:
            raise ValueError(
                "`edge_thickness` and `graph_lr_scale` must be > 0 and `graph_init_std` >= 0, got "
                f"{self.edge_thickness}, {self.graph_lr_scale} and {self.graph_init_std}."
            )
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"`mask_ratio` must be in [0, 1), got {self.mask_ratio}.")
        if self.l1_num_scales < 1 or self.ssim_weight < 0:
            raise ValueError(
                f"`l1_num_scales` must be >= 1 and `ssim_weight` >= 0, got {self.l1_num_scales} and {self.ssim_weight}."
            )
        if self.edge_map_chunk_size is not None and self.edge_map_chunk_size < 1:
            raise ValueError(f"`edge_map_chunk_size` must be None or >= 1, got {self.edge_map_chunk_size}.")

    @property
    def heatmap_size(self) -> int:
        """Side of the detector's heatmaps (32 for the paper's 128 px input)."""
        return self.image_size // 2 ** len(self.detector_hidden_sizes) * 2 ** len(self.detector_upsample_sizes)

    @property
    def num_edges(self) -> int:
        """Keypoint pairs i < j the graph weighs: K (K - 1) / 2."""
        return self.num_keypoints * (self.num_keypoints - 1) // 2

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> AutoLinkConfig:
        """Build a named setting (`autolink-faces`, `-taichi`, `-h36m`, `-small`, `-tiny`); kwargs override it."""
        if name not in cls.PRESETS:
            raise ValueError(f"Unknown AutoLink preset {name!r}; expected one of {sorted(cls.PRESETS)}.")
        return cls(**{**cls.PRESETS[name], **overrides})


__all__ = ["AutoLinkConfig"]
