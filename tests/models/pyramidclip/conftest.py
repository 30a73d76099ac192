"""Fixtures shared by the PyramidCLIP tests: a tiny tokenizer, processor and saved checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hfvision.models.pyramidclip import (
    PyramidClipConfig,
    PyramidClipImageProcessor,
    PyramidClipModel,
    PyramidClipProcessor,
    train_clip_tokenizer,
)

CAPTIONS = [
    "a large red circle on the left",
    "a small blue square at the top",
    "a green triangle in the center",
    "a yellow star on the right",
]


def random_image(seed: int, height: int = 40, width: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def tiny_processor() -> PyramidClipProcessor:
    tokenizer = train_clip_tokenizer(CAPTIONS * 4, vocab_size=400, model_max_length=77)
    image_processor = PyramidClipImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return PyramidClipProcessor(image_processor=image_processor, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_processor) -> Path:
    """A saved tiny PyramidCLIP (model + processor + remote code)."""
    torch.manual_seed(0)
    config = PyramidClipConfig.from_preset(
        "pyramidclip-tiny", text_config={"vocab_size": len(tiny_processor.tokenizer), "max_position_embeddings": 77}
    )
    path = tmp_path_factory.mktemp("pyramidclip-tiny")
    PyramidClipModel(config).eval().save_pretrained(path)
    tiny_processor.save_pretrained(path)
    return path
