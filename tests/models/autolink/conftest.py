"""Fixtures shared by the AutoLink tests: saved tiny checkpoints (plain, and with the pipeline) and test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from hfvision.models.autolink import AutoLinkConfig, AutoLinkForSelfSupervisedKeypoints, AutoLinkImageProcessor

# Raw edge scores of the saved model: three strong edges (a chain 0-1-2-3) over a weak rest, so thresholds matter.
STRONG_EDGES = ((0, 1), (1, 2), (2, 3))


def random_image(seed: int, height: int = 40, width: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def tiny_processor() -> AutoLinkImageProcessor:
    size = AutoLinkConfig.from_preset("autolink-tiny").image_size
    return AutoLinkImageProcessor(size={"height": size, "width": size})


def tiny_model() -> AutoLinkForSelfSupervisedKeypoints:
    torch.manual_seed(0)
    model = AutoLinkForSelfSupervisedKeypoints(AutoLinkConfig.from_preset("autolink-tiny")).eval()
    scores = model.autolink.graph.edge_scores
    with torch.no_grad():
        for index, (i, j) in enumerate(STRONG_EDGES):
            scores[i, j] = (1.0 + index) / model.config.graph_lr_scale  # softplus(1, 2, 3) = 1.31, 2.13, 3.05
    return model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """`model.save_pretrained` + `processor.save_pretrained` (which also ship the pipeline: `custom_pipelines`)."""
    path = tmp_path_factory.mktemp("autolink-plain")
    tiny_model().save_pretrained(path)
    tiny_processor().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def pipeline_checkpoint(tmp_path_factory) -> Path:
    """`pipeline(...).save_pretrained`: the self-supervised model, the processor and the pipeline's code."""
    path = tmp_path_factory.mktemp("autolink-pipeline")
    pipeline("keypoint-detection", model=tiny_model(), image_processor=tiny_processor()).save_pretrained(path)
    return path
