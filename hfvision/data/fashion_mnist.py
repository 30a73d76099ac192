"""Fashion-MNIST (Xiao et al. 2017, arXiv 1708.07747) as a `datasets.Dataset`, read from Debian's idx files.

Debian's ``dataset-fashion-mnist`` package (MIT) installs the original gzipped idx files of
https://github.com/zalandoresearch/fashion-mnist under ``/usr/share/datasets/fashion-mnist/``: 60,000 training and
10,000 test images, 28x28 grayscale, 10 classes. It is the offline stand-in for CIFAR-scale classification here.

The idx files are parsed with numpy in one pass (no per-image Python decoding). Each image is stored in the
`datasets.Image` column as a binary PGM (a 15-byte header before the raw pixels), which PIL opens losslessly as a
mode ``"L"`` image, so building the 60k-row set takes well under a second and no PNG is encoded.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import numpy as np

__all__ = ["DEFAULT_FASHION_MNIST_DIR", "FASHION_MNIST_CLASS_NAMES", "build_fashion_mnist", "load_fashion_mnist"]

DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Label order of the official README (label 0 = "T-shirt/top", ..., 9 = "Ankle boot").
FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"
_FILE_PREFIX = {"train": "train", "test": "t10k"}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049  # idx magic numbers: unsigned bytes with 3 and 1 dimensions


def _read_idx(path: Path, magic: int, num_dims: int) -> np.ndarray:
    """Read a gzipped idx file into a uint8 array of the shape its header declares.

    Args:
        path: the ``*-ubyte.gz`` file.
        magic: expected magic number (2051 for image files, 2049 for label files).
        num_dims: number of dimensions the header declares (3 for images, 1 for labels).

    Returns:
        `(N, H, W)` images or `(N,)` labels, uint8 (a read-only view of the decompressed bytes).
    """
    raw = gzip.decompress(path.read_bytes())
    header = np.frombuffer(raw, dtype=">u4", count=1 + num_dims)  # big-endian magic, then one size per dimension
    if int(header[0]) != magic:
        raise ValueError(f"{path} is not an idx file of {num_dims} dimension(s): magic {int(header[0])} != {magic}.")
    shape = tuple(int(size) for size in header[1:])
    values = np.frombuffer(raw, dtype=np.uint8, offset=4 * (1 + num_dims))
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header declares {shape}, found {values.size} values.")
    return values.reshape(shape)


def load_fashion_mnist(
    split: str = "train", limit: int | None = None, data_dir: str | Path = DEFAULT_FASHION_MNIST_DIR
) -> datasets.Dataset:
    """Load a Fashion-MNIST split from the Debian idx files.

    Args:
        split: `"train"` (60,000 images) or `"test"` (10,000 images).
        limit: keep only the first `limit` rows (the files are already in shuffled order); `None` keeps all.
        data_dir: folder holding the four ``*-ubyte.gz`` files.

    Returns:
        A `datasets.Dataset` with columns `image` (PIL, mode "L", 28x28) and `label` (a `ClassLabel` over
        `FASHION_MNIST_CLASS_NAMES`).

    Raises:
        ValueError: if `split` or `limit` is invalid, or a file is not a well-formed idx file.
        FileNotFoundError: if the idx files are missing (the message says which package installs them).
    """
    if split not in _FILE_PREFIX:
        raise ValueError(f"`split` must be one of {sorted(_FILE_PREFIX)}, got {split!r}.")
    if limit is not None and limit < 0:
        raise ValueError(f"`limit` must be None or >= 0, got {limit}.")
    data_dir = Path(data_dir)
    images_path = data_dir / f"{_FILE_PREFIX[split]}-images-idx3-ubyte.gz"
    labels_path = data_dir / f"{_FILE_PREFIX[split]}-labels-idx1-ubyte.gz"
    missing = [str(path) for path in (images_path, labels_path) if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST idx files not found: {', '.join(missing)}. Install them with `{_INSTALL_HINT}` "
            "(Debian/Ubuntu, as root), or pass `data_dir` pointing at a folder with the original idx files."
        )

    images = _read_idx(images_path, _IMAGES_MAGIC, num_dims=3)  # (N, 28, 28)
    labels = _read_idx(labels_path, _LABELS_MAGIC, num_dims=1)  # (N,)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels.")
    images, labels = images[:limit], labels[:limit]

    # One binary PGM per row: the same header prepended to every flattened image, in one array operation.
    num_images, height, width = images.shape
    header = np.frombuffer(f"P5\n{width} {height}\n255\n".encode("ascii"), dtype=np.uint8)
    pgm = np.concatenate(
        [np.broadcast_to(header, (num_images, header.size)), images.reshape(num_images, height * width)], 1
    )
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(FASHION_MNIST_CLASS_NAMES))}
    )
    return datasets.Dataset.from_dict(
        {"image": [{"bytes": row.tobytes(), "path": None} for row in pgm], "label": labels.astype(np.int64)},
        features=features,
        split=datasets.Split.TRAIN if split == "train" else datasets.Split.TEST,
    )


def build_fashion_mnist(
    out_dir: str | Path,
    num_train: int | None = None,
    num_eval: int | None = None,
    num_shards: int = 4,
    *,
    world_size: int = 1,
    data_dir: str | Path = DEFAULT_FASHION_MNIST_DIR,
    overwrite: bool = False,
) -> dict[str, list[str]]:
    """Writes Fashion-MNIST as parquet shards for the training streams (`hfvision.data.load_image_stream`).

    Layout: `out_dir/train/*.parquet` (the first `num_train` training images), `out_dir/eval/*.parquet` (the first
    `num_eval` test images) and `out_dir/class_names.json`; images stay the lossless PGM bytes of `load_fashion_mnist`,
    and each row's `key` ("train-00042", "test-00007") names the sample in the stream.

    Args:
        out_dir: Output folder.
        num_train: Training images (None: all 60,000); the remainder of `num_train % num_shards` is dropped so every
            shard holds the same count.
        num_eval: Eval images from the test split (None: all 10,000), in `world_size` shards.
        num_shards: Training shards, a positive multiple of `world_size` (each rank streams whole shards).
        world_size: Number of training processes.
        data_dir: Folder of the idx files.
        overwrite: Replace parquet files already in the split folders.

    Returns:
        `{"train": [parquet paths], "eval": [parquet paths]}`.

    Raises:
        ValueError: On a bad shard count, or more shards than images.
        FileExistsError: If a split folder holds parquet files and `overwrite` is False.
    """
    if num_shards < 1 or world_size < 1 or num_shards % world_size != 0:
        raise ValueError(
            f"`num_shards` must be a positive multiple of `world_size`, got num_shards={num_shards}, "
            f"world_size={world_size}"
        )
    out_dir = Path(out_dir)
    paths: dict[str, list[str]] = {}
    for split, source_split, limit, shards in (
        ("train", "train", num_train, num_shards),
        ("eval", "test", num_eval, world_size),
    ):
        dataset = load_fashion_mnist(source_split, limit=limit, data_dir=data_dir)
        dataset = dataset.add_column("key", [f"{source_split}-{index:05d}" for index in range(len(dataset))])
        per_shard = len(dataset) // shards
        if per_shard == 0:
            raise ValueError(f"{len(dataset)} {split} images cannot fill {shards} shards")
        folder = out_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        existing = sorted(folder.glob("*.parquet"))
        if existing and not overwrite:
            raise FileExistsError(f"{folder} already holds parquet files; pass overwrite=True to replace them")
        for stale in existing:
            stale.unlink()
        paths[split] = []
        for index in range(shards):
            path = folder / f"{index:05d}.parquet"
            dataset.select(range(index * per_shard, (index + 1) * per_shard)).to_parquet(str(path))
            paths[split].append(str(path))
    (out_dir / "class_names.json").write_text(json.dumps(list(FASHION_MNIST_CLASS_NAMES), indent=1) + "\n")
    return paths
