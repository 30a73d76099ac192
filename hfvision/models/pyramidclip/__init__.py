"""PyramidCLIP: hierarchical feature alignment for vision-language pretraining (arXiv 2204.14095)."""

from .configuration_pyramidclip import PyramidClipConfig, PyramidClipTextConfig, PyramidClipVisionConfig
from .image_processing_pyramidclip import PyramidClipImageProcessor
from .modeling_pyramidclip import (
    PyramidClipForImageClassification,
    PyramidClipLoss,
    PyramidClipModel,
    PyramidClipOutput,
    PyramidClipPreTrainedModel,
    PyramidClipTextModel,
    PyramidClipVisionModel,
    softened_contrastive_loss,
)
from .processing_pyramidclip import PyramidClipProcessor
from .tokenization_pyramidclip import clip_tokenizer_from_bpe_file, train_clip_tokenizer

__all__ = [
    "PyramidClipConfig",
    "PyramidClipForImageClassification",
    "PyramidClipImageProcessor",
    "PyramidClipLoss",
    "PyramidClipModel",
    "PyramidClipOutput",
    "PyramidClipPreTrainedModel",
    "PyramidClipProcessor",
    "PyramidClipTextConfig",
    "PyramidClipTextModel",
    "PyramidClipVisionConfig",
    "PyramidClipVisionModel",
    "clip_tokenizer_from_bpe_file",
    "softened_contrastive_loss",
    "train_clip_tokenizer",
]
