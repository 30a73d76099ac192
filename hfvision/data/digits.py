"""scikit-learn's handwritten digits (UCI "Optical Recognition of Handwritten Digits", 1,797 images, 8x8, 10 classes).

The CPU-scale data of the SMaT re-implementation (digest A6): the images ship inside scikit-learn (no download), so
every run here, tests included, works offline. Pixels are 0..16 counts; they are mapped to 8-bit grayscale
(`round(v * 255 / 16)`). The fixed split of the digest: shuffled with a seed, 1000 train / 300 valid / 497 test.
`build_digits` writes the splits as lossless PNG WebDataset shards (`write_shards`, img2dataset layout) for the
training script's streams; `digits_splits` returns them as arrays for in-memory benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .webdataset import write_shards

__all__ = ["DIGITS_SPLIT_SIZES", "build_digits", "digits_splits"]

# The digest's split of the 1,797 images (A6).
DIGITS_SPLIT_SIZES = {"train": 1000, "valid": 300, "test": 497}


def digits_splits(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The digits shuffled with `seed` and split 1000 / 300 / 497.

    Args:
        seed: seed of the shuffle (the digest uses 0).

    Returns:
        `{"train" | "valid" | "test": (images, labels)}`: images `(N, 8, 8)` uint8 in 0..255, labels `(N,)` int64.

    Raises:
        ImportError: scikit-learn is not installed (`pip install "hfvision[scaffold]"`).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError('The digits data ship with scikit-learn: pip install "hfvision[scaffold]"') from error
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 counts -> 8-bit gray
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(images))
    splits, start = {}, 0
    for split, size in DIGITS_SPLIT_SIZES.items():
        chosen = order[start : start + size]
        splits[split] = (images[chosen], labels[chosen])
        start += size
    return splits


def build_digits(
    out_dir: str | Path, num_shards: int = 2, *, world_size: int = 1, seed: int = 0, overwrite: bool = False
) -> dict[str, list[str]]:
    """Write the digits splits as PNG WebDataset shards: `out_dir/{train,valid,test}/*.tar`.

    Each sample holds `image` (8x8 mode-L PNG, exact pixels) and `label` (its `<key>.json`); keys are
    `<split>-<index>`. `load_image_stream(out_dir / "train")` streams them.

    Args:
        out_dir: output folder.
        num_shards: shards of the train split (a positive multiple of `world_size`; 1000 images split evenly when
            it divides 1000); valid and test get `world_size` shards each.
        world_size: training processes the shards will be spread over.
        seed: seed of the split (see `digits_splits`).
        overwrite: replace existing tars.

    Returns:
        `{"train" | "valid" | "test": [tar paths]}`.
    """
    if num_shards < 1 or world_size < 1 or num_shards % world_size != 0:
        raise ValueError(
            f"`num_shards` must be a positive multiple of `world_size`, got num_shards={num_shards}, "
            f"world_size={world_size}."
        )
    paths = {}
    for split, (images, labels) in digits_splits(seed).items():
        samples = [
            {"__key__": f"{split}-{index:04d}", "image": Image.fromarray(image), "label": int(label)}
            for index, (image, label) in enumerate(zip(images, labels, strict=True))
        ]
        shards = num_shards if split == "train" else world_size
        paths[split] = write_shards(
            samples, Path(out_dir) / split, shards, world_size=world_size, image_format="png", overwrite=overwrite
        )
    return paths
