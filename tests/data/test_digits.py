"""scikit-learn digits: the fixed 1000 / 300 / 497 split and its WebDataset shards, streamed back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from hfvision.data import build_digits, digits_splits, load_image_stream


def test_split_sizes_disjoint_and_deterministic():
    splits = digits_splits(seed=0)
    assert {name: len(labels) for name, (_, labels) in splits.items()} == {"train": 1000, "valid": 300, "test": 497}
    images = np.concatenate([images for images, _ in splits.values()])
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and images.max() == 255
    assert len({image.tobytes() for image in images}) > 1700  # the splits do not repeat images (few true duplicates)
    again = digits_splits(seed=0)
    assert all(np.array_equal(splits[name][0], again[name][0]) for name in splits)
    other = digits_splits(seed=1)
    assert not np.array_equal(splits["train"][1], other["train"][1])
    assert set(np.unique(splits["test"][1])) == set(range(10))


def test_shards_stream_back_exact_pixels_and_labels(tmp_path):
    paths = build_digits(tmp_path, num_shards=4)
    assert {name: len(files) for name, files in paths.items()} == {"train": 4, "valid": 1, "test": 1}
    images, labels = digits_splits(seed=0)["valid"]
    stream = load_image_stream(tmp_path, split="valid")
    samples = list(stream)
    assert len(samples) == 300
    first = samples[0]
    assert first["__key__"] == "valid-0000" and first["label"] == labels[0]
    np.testing.assert_array_equal(np.asarray(first["image"].convert("L")), images[0])
    with pytest.raises(FileExistsError):
        build_digits(tmp_path, num_shards=4)
    with pytest.raises(ValueError, match="num_shards"):
        build_digits(tmp_path / "other", num_shards=3, world_size=2)
