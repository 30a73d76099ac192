"""Learning to Scaffold (SMaT): explainers meta-learned so a student simulates its teacher (arXiv 2204.10810)."""

from .configuration_scaffold import AttentionExplainerConfig, ScaffoldVitConfig
from .image_processing_scaffold import ScaffoldVitImageProcessor
from .modeling_scaffold import (
    AttentionExplainer,
    AttentionExplainerOutput,
    GradientExplainer,
    ScaffoldExplainerPreTrainedModel,
    ScaffoldVitForImageClassification,
    ScaffoldVitImageClassifierOutput,
    ScaffoldVitModel,
    ScaffoldVitModelOutput,
    ScaffoldVitPreTrainedModel,
    entmax15,
    explanation_kl,
    normalize_head_coefficients,
    saliency_map_from_explanation,
    sparsemax,
)
from .pipeline_scaffold import ImageExplanationPipeline, overlay_saliency
from .smat_scaffold import SmatConfig, SmatTrainer, predict_logits, reset_layer_init_, simulability

__all__ = [
    "AttentionExplainer",
    "AttentionExplainerConfig",
    "AttentionExplainerOutput",
    "GradientExplainer",
    "ImageExplanationPipeline",
    "ScaffoldExplainerPreTrainedModel",
    "ScaffoldVitConfig",
    "ScaffoldVitForImageClassification",
    "ScaffoldVitImageClassifierOutput",
    "ScaffoldVitImageProcessor",
    "ScaffoldVitModel",
    "ScaffoldVitModelOutput",
    "ScaffoldVitPreTrainedModel",
    "SmatConfig",
    "SmatTrainer",
    "entmax15",
    "explanation_kl",
    "normalize_head_coefficients",
    "overlay_saliency",
    "predict_logits",
    "reset_layer_init_",
    "saliency_map_from_explanation",
    "simulability",
    "sparsemax",
]
