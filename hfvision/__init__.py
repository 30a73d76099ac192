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
    PyramidClipVisionConfig,
)

__version__ = "0.1.0"


def _register() -> None:
    """Register every model with the Auto classes and for remote-code export (the one place this happens)."""
    for config in (PyramidClipConfig, PyramidClipTextConfig, PyramidClipVisionConfig):
        AutoConfig.register(config.model_type, config, exist_ok=True)
    AutoModel.register(PyramidClipConfig, PyramidClipModel, exist_ok=True)
    AutoModelForZeroShotImageClassification.register(PyramidClipConfig, PyramidClipModel, exist_ok=True)
    AutoModelForImageClassification.register(PyramidClipConfig, PyramidClipForImageClassification, exist_ok=True)
    AutoImageProcessor.register(
        PyramidClipConfig, image_processor_classes={"pil": PyramidClipImageProcessor}, exist_ok=True
    )
    AutoProcessor.register(PyramidClipConfig, PyramidClipProcessor, exist_ok=True)

    PyramidClipConfig.register_for_auto_class()
    PyramidClipModel.register_for_auto_class("AutoModel")
    PyramidClipForImageClassification.register_for_auto_class("AutoModelForImageClassification")
    PyramidClipImageProcessor.register_for_auto_class("AutoImageProcessor")
    PyramidClipProcessor.register_for_auto_class("AutoProcessor")

    AutoConfig.register(McMaeConfig.model_type, McMaeConfig, exist_ok=True)
    AutoModel.register(McMaeConfig, McMaeModel, exist_ok=True)
    AutoModelForPreTraining.register(McMaeConfig, McMaeForPreTraining, exist_ok=True)
    AutoModelForImageClassification.register(McMaeConfig, McMaeForImageClassification, exist_ok=True)
    AutoImageProcessor.register(McMaeConfig, image_processor_classes={"pil": McMaeImageProcessor}, exist_ok=True)
    McMaeConfig.register_for_auto_class()
    McMaeModel.register_for_auto_class("AutoModel")
    McMaeForPreTraining.register_for_auto_class("AutoModelForPreTraining")
    McMaeForImageClassification.register_for_auto_class("AutoModelForImageClassification")
    McMaeImageProcessor.register_for_auto_class("AutoImageProcessor")

    AutoConfig.register(LpsResNetConfig.model_type, LpsResNetConfig, exist_ok=True)
    AutoModel.register(LpsResNetConfig, LpsResNetModel, exist_ok=True)
    AutoModelForImageClassification.register(LpsResNetConfig, LpsResNetForImageClassification, exist_ok=True)
    AutoModelForSemanticSegmentation.register(LpsResNetConfig, LpsForSemanticSegmentation, exist_ok=True)
    AutoImageProcessor.register(LpsResNetConfig, image_processor_classes={"pil": LpsImageProcessor}, exist_ok=True)
    LpsResNetConfig.register_for_auto_class()
    LpsResNetModel.register_for_auto_class("AutoModel")
    LpsResNetForImageClassification.register_for_auto_class("AutoModelForImageClassification")
    LpsForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
    LpsImageProcessor.register_for_auto_class("AutoImageProcessor")

    AutoConfig.register(AutoLinkConfig.model_type, AutoLinkConfig, exist_ok=True)
    AutoModel.register(AutoLinkConfig, AutoLinkModel, exist_ok=True)
    AutoModelForPreTraining.register(AutoLinkConfig, AutoLinkForSelfSupervisedKeypoints, exist_ok=True)
    AutoImageProcessor.register(AutoLinkConfig, image_processor_classes={"pil": AutoLinkImageProcessor}, exist_ok=True)
    AutoLinkConfig.register_for_auto_class()
    AutoLinkModel.register_for_auto_class("AutoModel")
    AutoLinkForSelfSupervisedKeypoints.register_for_auto_class("AutoModelForPreTraining")
    AutoLinkImageProcessor.register_for_auto_class("AutoImageProcessor")
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
    "PyramidClipVisionConfig",
]
