"""Learnable Polyphase Sampling: truly shift-invariant and shift-equivariant CNNs (arXiv 2210.08001)."""

from .configuration_lps import LpsResNetConfig
from .image_processing_lps import LpsImageProcessor
from .modeling_lps import (
    AdaptivePolyphaseDownsample,
    DdacLowPassFilter,
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
from .trainer_callback_lps import GumbelTemperatureCallback, gumbel_tau_at_step, gumbel_tau_buffers

__all__ = [
    "AdaptivePolyphaseDownsample",
    "DdacLowPassFilter",
    "FixedPolyphaseDownsample",
    "GumbelTemperatureCallback",
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
    "gumbel_tau_at_step",
    "gumbel_tau_buffers",
    "polyphase_components",
]
