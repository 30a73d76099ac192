"""hfvision: Hugging Face-native implementations of recent vision research methods.

Importing hfvision registers every model with transformers' Auto classes (so `AutoModel.from_pretrained(path)` works
without `trust_remote_code`) and marks each class for remote-code export (so `save_pretrained` writes the model's
own code and `auto_map`, and a process without hfvision loads it with `trust_remote_code=True`).
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    AutoModelForSemanticSegmentation,
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
from .models.score_sde import EmpiricalScoreConfig, EmpiricalScoreModel, ScoreSdeConfig, ScoreSdeModel

__version__ = "0.1.0"


def _register_method(
    config: type,
    models: list[tuple[type, type]],
    image_processor: type | None = None,
    processor: type | None = None,
) -> None:
    """Register one method's classes with the Auto classes and for remote-code export.

    Args:
        config: the method's config class.
        models: `(Auto class, model class)` pairs; a model class listed under several Auto classes is exported (its
            `auto_map` entry in saved checkpoints) under the first.
        image_processor: registered as the PIL backend of `AutoImageProcessor` (none for a text-only tower).
        processor: a multimodal processor for `AutoProcessor`, if the method has one.
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
    _register_method(ScoreSdeConfig, [(AutoModel, ScoreSdeModel)])
    _register_method(EmpiricalScoreConfig, [(AutoModel, EmpiricalScoreModel)])
    # transformers 5 has no keypoint-detection task; `pipeline(...).save_pretrained` ships this one as remote code
    PIPELINE_REGISTRY.register_pipeline(
        "keypoint-detection", pipeline_class=KeypointDetectionPipeline, pt_model=AutoModel, type="image"
    )


_register()

__all__ = [
    "AutoLinkConfig",
    "AutoLinkForSelfSupervisedKeypoints",
    "AutoLinkImageProcessor",
    "AutoLinkModel",
    "EmpiricalScoreConfig",
    "EmpiricalScoreModel",
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
    "ScoreSdeConfig",
    "ScoreSdeModel",
]
