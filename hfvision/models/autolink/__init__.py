"""AutoLink: self-supervised learning of human skeletons and object outlines by linking keypoints (arXiv 2205.10636)."""

from .configuration_autolink import AutoLinkConfig
from .image_processing_autolink import AutoLinkImageProcessor
from .modeling_autolink import (
    AutoLinkForSelfSupervisedKeypoints,
    AutoLinkModel,
    AutoLinkModelOutput,
    AutoLinkPreTrainedModel,
    AutoLinkSelfSupervisedOutput,
    block_mask,
    multiscale_l1,
    render_edge_map,
    soft_argmax,
    ssim,
)
from .pipeline_autolink import KeypointDetectionPipeline
from .visualization_autolink import draw_keypoint_strip, draw_keypoints, keypoint_colors

__all__ = [
    "AutoLinkConfig",
    "AutoLinkForSelfSupervisedKeypoints",
    "AutoLinkImageProcessor",
    "AutoLinkModel",
    "AutoLinkModelOutput",
    "AutoLinkPreTrainedModel",
    "AutoLinkSelfSupervisedOutput",
    "KeypointDetectionPipeline",
    "block_mask",
    "draw_keypoint_strip",
    "draw_keypoints",
    "keypoint_colors",
    "multiscale_l1",
    "render_edge_map",
    "soft_argmax",
    "ssim",
]
