"""Trap and Replace: defending backdoor attacks by trapping them into an easy-to-replace subnetwork (2210.06428)."""

from .configuration_trap_replace import TrapReplaceConfig
from .image_processing_trap_replace import TrapReplaceImageProcessor
from .modeling_trap_replace import (
    TrapReplaceDecoder,
    TrapReplaceForImageClassification,
    TrapReplaceHead,
    TrapReplaceImageClassifierOutput,
    TrapReplaceModel,
    TrapReplacePreTrainedModel,
    TrapReplaceResNetBlock,
    TrapReplaceWideBlock,
    total_variation,
)

__all__ = [
    "TrapReplaceConfig",
    "TrapReplaceDecoder",
    "TrapReplaceForImageClassification",
    "TrapReplaceHead",
    "TrapReplaceImageClassifierOutput",
    "TrapReplaceImageProcessor",
    "TrapReplaceModel",
    "TrapReplacePreTrainedModel",
    "TrapReplaceResNetBlock",
    "TrapReplaceWideBlock",
    "total_variation",
]
