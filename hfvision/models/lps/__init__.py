"""Learnable Polyphase Sampling: truly shift-invariant and shift-equivariant CNNs (arXiv 2210.08001)."""

from .configuration_lps import LpsResNetConfig
from .image_processing_lps import LpsImageProcessor
from .modeling_lps import (
    AdaptivePolyphaseDownsample,
    FixedPolyphaseDownsample,
    LearnablePolyphaseDownsample,
    LearnablePolyphaseUpsample,
    LpsForSemanticSegmentation,
    LpsResNetForImageClassification,
    LpsResNetModel,
    LpsResNetModelOutput,
    LpsResNetPreTrainedModel,
    PolyphaseDownsampleOutput,
    PolyphaseLowPassFilter,
    gumbel_softmax_sample,
    polyphase_components,
)

__all__ = [
    "AdaptivePolyphaseDownsample",
    "FixedPolyphaseDownsample",
    "LearnablePolyphaseDownsample",
    "LearnablePolyphaseUpsample",
    "LpsForSemanticSegmentation",
    "LpsImageProcessor",
    "LpsResNetConfig",
    "LpsResNetForImageClassification",
    "LpsResNetModel",
    "LpsResNetModelOutput",
    "LpsResNetPreTrainedModel",
    "PolyphaseDownsampleOutput",
    "PolyphaseLowPassFilter",
    "gumbel_softmax_sample",
    "polyphase_components",
]
