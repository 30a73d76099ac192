"""Fixtures shared by the PyramidCLIP tests: a tiny tokenizer, processor and saved checkpoint, and the six
normalised embeddings the loss-term tests recompute their terms from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
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


def six_embeddings(model: PyramidClipModel, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The six normalised embeddings (views `global`, `local`, `region`; texts `text`, `summary`, `attribute`), each
    from its own tower call; a text's `attention_mask` is used when `inputs` has one."""
    with torch.no_grad():
        embeds = {
            "global": model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output,
            "local": model.get_image_features(pixel_values=inputs["pixel_values_local"]).pooler_output,
            "region": model.get_region_features(inputs["roi_features"], inputs["roi_mask"]),
        }
        for name, prefix in (("text", ""), ("summary", "summary_"), ("attribute", "attribute_")):
            embeds[name] = model.get_text_features(
                inputs[f"{prefix}input_ids"], inputs.get(f"{prefix}attention_mask")
            ).pooler_output
    return {name: F.normalize(value, dim=-1) for name, value in embeds.items()}


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
