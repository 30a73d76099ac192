"""MCMAE (ConvMAE): masked convolution meets masked autoencoders (arXiv 2205.03892)."""

from .configuration_mcmae import McMaeConfig, matching_vitmae_config
from .image_processing_mcmae import McMaeImageProcessor
from .modeling_mcmae import (
    McMaeForImageClassification,
    McMaeForPreTraining,
    McMaeForPreTrainingOutput,
    McMaeModel,
    McMaeModelOutput,
    McMaePreTrainedModel,
)

__all__ = [
    "McMaeConfig",
    "McMaeForImageClassification",
    "McMaeForPreTraining",
    "McMaeForPreTrainingOutput",
    "McMaeImageProcessor",
    "McMaeModel",
    "McMaeModelOutput",
    "McMaePreTrainedModel",
    "matching_vitmae_config",
]
