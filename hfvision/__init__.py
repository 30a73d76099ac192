"""hfvision: Hugging Face-native implementations of recent vision research methods.

Importing hfvision registers every model with transformers' Auto classes (so `AutoModel.from_pretrained(path)` works
without `trust_remote_code`) and marks each class for remote-code export (so `save_pretrained` writes the model's
own code and `auto_map`, and a process without hfvision loads it with `trust_remote_code=True`).
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    AutoModelForSemanticSegmentation,
    AutoModelForVideoClassification,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .models.autolink import (
    AutoLinkConfig,
    AutoLinkForSelfSupervisedKeypoints,
    AutoLinkImageProcessor,
    AutoLinkModel,
    KeypointDetectionPipeline,
)
from .models.lps import (
    LpsForSemanticSegmentation,
    LpsImageProcessor,
    LpsResNetConfig,
    LpsResNetForImageClassification,
    LpsResNetModel,
)
from .models.mcmae import (
    McMaeConfig,
    McMaeForImageClassification,
    McMaeForPreTraining,
    McMaeImageProcessor,
    McMaeModel,
)
from .models.pyramidclip import (
    PyramidClipConfig,
    PyramidClipForImageClassification,
    PyramidClipImageProcessor,
    PyramidClipModel,
    PyramidClipProcessor,
    PyramidClipTextConfig,
    PyramidClipTextModel,
    PyramidClipVisionConfig,
    PyramidClipVisionModel,
)
from .models.scaffold import (
    AttentionExplainer,
    AttentionExplainerConfig,
    ImageExplanationPipeline,
    ScaffoldVitConfig,
    ScaffoldVitForImageClassification,
    ScaffoldVitImageProcessor,
    ScaffoldVitModel,
)
from .models.score_sde import (
    EmpiricalScoreConfig,
    EmpiricalScoreModel,
    ScoreSdeConfig,
    ScoreSdeFeatureExtractor,
    ScoreSdeModel,
    ScoreSdeSampleGenerationPipeline,
)
from .models.trap_replace import (
    TrapReplaceConfig,
    TrapReplaceForImageClassification,
    TrapReplaceImageProcessor,
    TrapReplaceModel,
)
from .models.vatt import (
    VattConfig,
    VattFeatureExtractor,
    VattForAudioClassification,
    VattForPreTraining,
    VattForVideoClassification,
    VattModel,
    VattProcessor,
    VattVideoProcessor,
    VideoTextRetrievalPipeline,
)

__version__ = "0.1.0"


def _register_method(
    config: type,
    models: list[tuple[type, type]],
    image_processor: type | None = None,
    processor: type | None = None,
    feature_extractor: type | None = None,
) -> None:
    """Register one method's classes with the Auto classes and for remote-code export.

    Args:
        config: the method's config class.
        models: `(Auto class, model class)` pairs; a model class listed under several Auto classes is exported (its
            `auto_map` entry in saved checkpoints) under the first.
        image_processor: registered as the PIL backend of `AutoImageProcessor` (none for a text-only tower).
        processor: a multimodal processor for `AutoProcessor`, if the method has one.
        feature_extractor: an audio feature extractor for `AutoFeatureExtractor`, if the method has one.
    """
    AutoConfig.register(config.model_type, config, exist_ok=True)
    config.register_for_auto_class()
    exported: set[type] = set()
    for auto_class, model_class in models:
        auto_class.register(config, model_class, exist_ok=True)
        if model_class not in exported:
            model_class.register_for_auto_class(auto_class.__name__)
            exported.add(model_class)
    if image_processor is not None:
        AutoImageProcessor.register(config, image_processor_classes={"pil": image_processor}, exist_ok=True)
        image_processor.register_for_auto_class("AutoImageProcessor")
    if processor is not None:
        AutoProcessor.register(config, processor, exist_ok=True)
        processor.register_for_auto_class("AutoProcessor")
    if feature_extractor is not None:
        AutoFeatureExtractor.register(config, feature_extractor, exist_ok=True)
        feature_extractor.register_for_auto_class("AutoFeatureExtractor")


def _register() -> None:
    """Register every model with the Auto classes and for remote-code export (the one place this happens)."""
    # The towers, as CLIP's: `AutoModel.from_config(config.vision_config)` builds a PyramidClipVisionModel.
    _register_method(PyramidClipTextConfig, [(AutoModel, PyramidClipTextModel)])
    _register_method(PyramidClipVisionConfig, [(AutoModel, PyramidClipVisionModel)], PyramidClipImageProcessor)
    _register_method(
        PyramidClipConfig,
        [
            (AutoModel, PyramidClipModel),
            (AutoModelForZeroShotImageClassification, PyramidClipModel),
            (AutoModelForImageClassification, PyramidClipForImageClassification),
        ],
        PyramidClipImageProcessor,
        PyramidClipProcessor,
    )
    _register_method(
        McMaeConfig,
        [
            (AutoModel, McMaeModel),
            (AutoModelForPreTraining, McMaeForPreTraining),
            (AutoModelForImageClassification, McMaeForImageClassification),
        ],
        McMaeImageProcessor,
    )
    _register_method(
        LpsResNetConfig,
        [
            (AutoModel, LpsResNetModel),
            (AutoModelForImageClassification, LpsResNetForImageClassification),
            (AutoModelForSemanticSegmentation, LpsForSemanticSegmentation),
        ],
        LpsImageProcessor,
    )
    _register_method(
        AutoLinkConfig,
        [(AutoModel, AutoLinkModel), (AutoModelForPreTraining, AutoLinkForSelfSupervisedKeypoints)],
        AutoLinkImageProcessor,
    )
    # Score-SDE: a score network and the exact score of a finite set (its own model_type, so AutoModel opens either)
    # (points, not images: a point-cloud normaliser is the feature extractor of both)
    _register_method(ScoreSdeConfig, [(AutoModel, ScoreSdeModel)], feature_extractor=ScoreSdeFeatureExtractor)
    _register_method(
        EmpiricalScoreConfig, [(AutoModel, EmpiricalScoreModel)], feature_extractor=ScoreSdeFeatureExtractor
    )
    _register_method(
        TrapReplaceConfig,
        [(AutoModel, TrapReplaceModel), (AutoModelForImageClassification, TrapReplaceForImageClassification)],
        TrapReplaceImageProcessor,
    )
    _register_method(
        VattConfig,
        [
            (AutoModel, VattModel),
            (AutoModelForPreTraining, VattForPreTraining),
            (AutoModelForVideoClassification, VattForVideoClassification),
            (AutoModelForAudioClassification, VattForAudioClassification),
        ],
        VattVideoProcessor,
        VattProcessor,
        VattFeatureExtractor,
    )
    # Scaffold (SMaT): the ViT exposing attention scores, and the explainer that ships as a repo of its own
    _register_method(
        ScaffoldVitConfig,
        [(AutoModel, ScaffoldVitModel), (AutoModelForImageClassification, ScaffoldVitForImageClassification)],
        ScaffoldVitImageProcessor,
    )
    _register_method(AttentionExplainerConfig, [(AutoModel, AttentionExplainer)])
    # transformers 5 has no keypoint-detection task. This and the pipelines below ship as remote code with every
    # checkpoint of their models (`save_pretrained` writes the file and `custom_pipelines`: the models' overrides)
    PIPELINE_REGISTRY.register_pipeline(
        "keypoint-detection", pipeline_class=KeypointDetectionPipeline, pt_model=AutoModel, type="image"
    )
    # nor one for explanations: label, score and the attention explainer's patch saliency map (SMaT)
    PIPELINE_REGISTRY.register_pipeline(
        "image-explanation",
        pipeline_class=ImageExplanationPipeline,
        pt_model=AutoModelForImageClassification,
        type="image",
    )
    # nor one for unconditional generation: Score-SDE samples (points, or images with a grid picture)
    PIPELINE_REGISTRY.register_pipeline(
        "unconditional-sample-generation",
        pipeline_class=ScoreSdeSampleGenerationPipeline,
        pt_model=AutoModel,
        type="multimodal",
    )
    # nor one for zero-shot video->text retrieval: a clip and candidate captions -> captions ranked (VATT)
    PIPELINE_REGISTRY.register_pipeline(
        "video-text-retrieval", pipeline_class=VideoTextRetrievalPipeline, pt_model=AutoModel, type="multimodal"
    )


_register()

__all__ = [
    "AttentionExplainer",
    "AttentionExplainerConfig",
    "AutoLinkConfig",
    "AutoLinkForSelfSupervisedKeypoints",
    "AutoLinkImageProcessor",
    "AutoLinkModel",
    "EmpiricalScoreConfig",
    "EmpiricalScoreModel",
    "ImageExplanationPipeline",
    "KeypointDetectionPipeline",
    "LpsForSemanticSegmentation",
    "LpsImageProcessor",
    "LpsResNetConfig",
    "LpsResNetForImageClassification",
    "LpsResNetModel",
    "McMaeConfig",
    "McMaeForImageClassification",
    "McMaeForPreTraining",
    "McMaeImageProcessor",
    "McMaeModel",
    "PyramidClipConfig",
    "PyramidClipForImageClassification",
    "PyramidClipImageProcessor",
    "PyramidClipModel",
    "PyramidClipProcessor",
    "PyramidClipTextConfig",
    "PyramidClipTextModel",
    "PyramidClipVisionConfig",
    "PyramidClipVisionModel",
    "ScaffoldVitConfig",
    "ScaffoldVitForImageClassification",
    "ScaffoldVitImageProcessor",
    "ScaffoldVitModel",
    "ScoreSdeConfig",
    "ScoreSdeFeatureExtractor",
    "ScoreSdeModel",
    "ScoreSdeSampleGenerationPipeline",
    "TrapReplaceConfig",
    "TrapReplaceForImageClassification",
    "TrapReplaceImageProcessor",
    "TrapReplaceModel",
    "VattConfig",
    "VattFeatureExtractor",
    "VattForAudioClassification",
    "VattForPreTraining",
    "VattForVideoClassification",
    "VattModel",
    "VattProcessor",
    "VattVideoProcessor",
    "VideoTextRetrievalPipeline",
]
