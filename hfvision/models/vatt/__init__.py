"""VATT: transformers for multimodal self-supervised learning from raw video, audio and text (arXiv 2104.11178)."""

from .configuration_vatt import VattAudioConfig, VattConfig, VattTextConfig, VattVideoConfig
from .feature_extraction_vatt import VattFeatureExtractor, resample_waveform
from .image_processing_vatt import VattVideoProcessor
from .modeling_vatt import (
    VattForAudioClassification,
    VattForPreTraining,
    VattForPreTrainingOutput,
    VattForVideoClassification,
    VattModel,
    VattModelOutput,
    VattPreTrainedModel,
    droptoken_indices,
    mil_nce_loss,
    nce_loss,
)
from .pipeline_vatt import VideoTextRetrievalPipeline
from .processing_vatt import VattProcessor, read_clip
from .tokenization_vatt import train_vatt_tokenizer

__all__ = [
    "VattAudioConfig",
    "VattConfig",
    "VattFeatureExtractor",
    "VattForAudioClassification",
    "VattForPreTraining",
    "VattForPreTrainingOutput",
    "VattForVideoClassification",
    "VattModel",
    "VattModelOutput",
    "VattPreTrainedModel",
    "VattProcessor",
    "VattTextConfig",
    "VattVideoConfig",
    "VattVideoProcessor",
    "VideoTextRetrievalPipeline",
    "droptoken_indices",
    "mil_nce_loss",
    "nce_loss",
    "read_clip",
    "resample_waveform",
    "train_vatt_tokenizer",
]
