"""Fixtures shared by the LPS tests: a saved tiny classifier and segmenter (model + image processor + remote code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hfvision.models.lps import (
    LpsForSemanticSegmentation,
    LpsImageProcessor,
    LpsResNetConfig,
    LpsResNetForImageClassification,
)

LABELS = ["circle", "square", "triangle"]


def random_image(seed: int, height: int = 40, width: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def tiny_image_processor() -> LpsImageProcessor:
    return LpsImageProcessor(size={"shortest_edge": 16}, size_divisor=4)


def save_tiny(model_class: type, path: Path) -> Path:
    torch.manual_seed(0)
    config = LpsResNetConfig.from_preset(
        "lps-resnet18-tiny", id2label=dict(enumerate(LABELS)), label2id={name: i for i, name in enumerate(LABELS)}
    )
    model_class(config).eval().save_pretrained(path)
    tiny_image_processor().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_classifier_checkpoint(tmp_path_factory) -> Path:
    return save_tiny(LpsResNetForImageClassification, tmp_path_factory.mktemp("lps-classifier"))


@pytest.fixture(scope="session")
def tiny_segmenter_checkpoint(tmp_path_factory) -> Path:
    return save_tiny(LpsForSemanticSegmentation, tmp_path_factory.mktemp("lps-segmenter"))
