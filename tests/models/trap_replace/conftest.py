"""Fixtures shared by the Trap and Replace tests: saved tiny stage-1 and stage-2 checkpoints with their processor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hfvision.models.trap_replace import TrapReplaceConfig, TrapReplaceForImageClassification, TrapReplaceImageProcessor

LABELS = ["shirt", "trouser", "bag"]


def random_image(seed: int, height: int = 20, width: int = 24) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8), mode="L")


def tiny_image_processor() -> TrapReplaceImageProcessor:
    return TrapReplaceImageProcessor(size={"height": 16, "width": 16}, num_channels=1)


def tiny_model(seed: int = 0) -> TrapReplaceForImageClassification:
    torch.manual_seed(seed)
    config = TrapReplaceConfig.from_preset(
        "trap-replace-tiny",
        num_channels=1,
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    return TrapReplaceForImageClassification(config).eval()


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """(stage-1 checkpoint, stage-2 checkpoint of the same stem with a replaced head)."""
    root = tmp_path_factory.mktemp("trap-replace")
    model = tiny_model()
    model.save_pretrained(root / "stage1")
    tiny_image_processor().save_pretrained(root / "stage1")
    model.replace_head()
    model.eval().save_pretrained(root / "stage2")
    tiny_image_processor().save_pretrained(root / "stage2")
    return root / "stage1", root / "stage2"
