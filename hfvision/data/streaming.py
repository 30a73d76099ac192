"""Image-text streams for every training script: `datasets` streaming, uniform samples, corrupt samples skipped.

``load_image_text_stream`` wraps ``datasets.load_dataset(..., streaming=True)`` over WebDataset tars (the large-scale
format), parquet files, an image folder or a Hub dataset id, and returns a ``datasets.IterableDataset`` whose samples
all have the same fields, whatever the source (see ``load_image_text_stream``).

Decoding is ours, not ``datasets``': the stream is read with image decoding switched off (``IterableDataset.decode
(False)``, so images arrive as ``{"bytes", "path"}``), and a ``map`` decodes each image with Pillow. A sample whose
image does not decode (garbage or truncated bytes), or that lacks an image or caption, or whose boxes/label are
malformed, is dropped by the following ``filter`` and counted in a ``SkipCounter``; it never stops the stream and
never reaches the model half-decoded. The pipeline is only ``load -> decode(False) -> [split_dataset_by_node] ->
[shuffle] -> map -> filter -> select_columns``, all of which ``IterableDataset.state_dict()`` covers, so a stream
resumes where it stopped.

Distributed use (measured pitfalls in ``methods/hf_stack.md`` section 5):

- With ``accelerate``, pass the DataLoader over this stream to ``accelerator.prepare`` and leave ``rank`` /
  ``world_size`` unset: ``prepare`` already gives each rank ``num_shards / world_size`` whole shards when the shard
  count is a multiple of the world size (``write_shards`` enforces that). Splitting here as well shards twice and
  silently loses data.
- ``rank`` / ``world_size`` call ``datasets.distributed.split_dataset_by_node`` for loops that do *not* go through
  ``prepare``.
- Shuffling: ``shuffle_buffer=None`` keeps file order (evaluation); ``shuffle_buffer=1`` shuffles the shard order only
  (seeded, per epoch via ``set_epoch``) and resumes exactly; ``shuffle_buffer > 1`` also mixes samples through a
  buffer, but a restored state loses the buffer's content (``datasets`` warns), so resume is approximate.
- Save each rank's loader state separately (accelerate 1.15 writes one ``dl_state_dict.bin`` for all ranks).
- Skipped samples leave ranks with unequal sample counts even when the shards are equal: train for a fixed number
  of steps (restarting the stream with ``set_epoch``) rather than until one rank's stream ends, or a rank that ran
  out waits forever in a collective for the others.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Mapping, Sequence
from glob import glob
from pathlib import Path
from typing import Any

import datasets
import torch
from datasets.distributed import split_dataset_by_node
from datasets.utils.file_utils import xopen
from PIL import Image

__all__ = ["OUTPUT_FIELDS", "SkipCounter", "load_image_stream", "load_image_text_stream"]

logger = logging.getLogger(__name__)

OUTPUT_FIELDS: tuple[str, ...] = (
    "image",
    "caption",
    "summary",
    "attributes",
    "boxes",
    "label",
    "object_labels",
    "keypoints",
    "mismatched",
    "__key__",
)
_IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image", "img")
_CAPTION_COLUMNS = ("caption", "txt", "text", "sentence", "title")
_LABEL_COLUMNS = ("label", "cls")
_KEY_COLUMNS = ("__key__", "key", "id")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
_MAX_LOGGED_SKIPS = 10


class SkipCounter:
    """Counts samples the stream dropped, readable from the process that owns it, even with DataLoader workers.

    The counts live in a small shared-memory tensor with one row per process slot: row 0 for the process that made
    the stream, row `1 + worker_id` for each DataLoader worker (forked or spawned workers receive the same shared
    memory, as `datasets` does for its epoch counter). Each row is written by one process only, so increments never
    race; reading sums the rows. Per rank, every process builds its own stream and counter: reduce across ranks
    yourself, e.g. `accelerator.reduce(torch.tensor(counter.num_skipped), "sum")`. Counts cover this run only (a
    resumed stream does not recount the samples before its checkpoint). `recent_keys` (the keys of the last skipped
    samples) is filled only by skips in the owning process itself (`num_workers=0`); skips in every process are
    logged as warnings (the first few per process).

    Args:
        max_workers: DataLoader workers that get a row of their own; more workers share rows (counts may then race).
        max_recent_keys: How many skipped keys `recent_keys` keeps.
    """

    REASONS: tuple[str, ...] = ("undecodable_image", "missing_image", "missing_caption", "invalid_fields")

    def __init__(self, max_workers: int = 64, max_recent_keys: int = 100) -> None:
        # Column len(REASONS) counts the samples that decoded fine.
        self._counts = torch.zeros(max_workers + 1, len(self.REASONS) + 1, dtype=torch.int64).share_memory_()
        self.max_recent_keys = max_recent_keys
        self.recent_keys: list[str] = []
        self._logged = 0

    def _row(self) -> int:
        worker = torch.utils.data.get_worker_info()
        return 0 if worker is None else 1 + worker.id % (self._counts.shape[0] - 1)

    def record_skip(self, reason: str, key: str, detail: str = "") -> None:
        """Counts one dropped sample; `reason` is one of `REASONS`."""
        self._counts[self._row(), self.REASONS.index(reason)] += 1
        if len(self.recent_keys) < self.max_recent_keys:
            self.recent_keys.append(key)
        if self._logged < _MAX_LOGGED_SKIPS:
            self._logged += 1
            logger.warning("skipping sample %r (%s) %s", key, reason, detail)

    def record_ok(self) -> None:
        """Counts one sample that was decoded and kept."""
        self._counts[self._row(), -1] += 1

    @property
    def num_skipped(self) -> int:
        """Samples dropped so far, all processes that share this counter together."""
        return int(self._counts[:, :-1].sum())

    @property
    def num_ok(self) -> int:
        """Samples decoded and kept so far, all processes together."""
        return int(self._counts[:, -1].sum())

    def by_reason(self) -> dict[str, int]:
        """Dropped samples per reason."""
        totals = self._counts[:, :-1].sum(dim=0).tolist()
        return dict(zip(self.REASONS, totals, strict=True))

    def reset(self) -> None:
        """Sets every count to zero and forgets the recent keys."""
        self._counts.zero_()
        self.recent_keys.clear()
        self._logged = 0

    def __repr__(self) -> str:
        return f"SkipCounter(num_ok={self.num_ok}, num_skipped={self.num_skipped}, by_reason={self.by_reason()})"


def _first_present(example: Mapping[str, Any], names: Sequence[str]) -> str | None:
    return next((name for name in names if example.get(name) is not None), None)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited over white (dropping alpha would expose arbitrary hidden colours)."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _decode_image(value: Any) -> Image.Image:
    """Decodes `{"bytes", "path"}`, raw bytes or a PIL image into a fully loaded RGB image; raises if undecodable."""
    if isinstance(value, Image.Image):
        value.load()
        return _to_rgb(value)
    if isinstance(value, Mapping):
        payload, path = value.get("bytes"), value.get("path")
    else:
        payload, path = value, None
    if payload is None:
        if not path:
            raise ValueError("image has neither bytes nor a path")
        with xopen(path, "rb") as handle:
            payload = handle.read()
    with Image.open(io.BytesIO(payload)) as image:
        image.load()  # forces the full decode here, so truncated files fail now rather than in a worker's collate
        return _to_rgb(image)


class _ImageTextNormalizer:
    """The `map` function: one raw example in, one uniform sample out (`image=None` marks a dropped sample)."""

    def __init__(
        self, image_column: str | None, caption_column: str | None, skip_counter: SkipCounter, require_caption: bool
    ) -> None:
        self.image_column = image_column
        self.caption_column = caption_column
        self.skip_counter = skip_counter
        self.require_caption = require_caption

    def _key(self, example: Mapping[str, Any], image_value: Any) -> str:
        key_column = _first_present(example, _KEY_COLUMNS)
        if key_column is not None:
            return str(example[key_column])
        if isinstance(image_value, Mapping) and image_value.get("path"):
            return str(image_value["path"])
        if isinstance(image_value, Mapping) and image_value.get("bytes"):
            return hashlib.sha1(image_value["bytes"]).hexdigest()[:16]
        return ""

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        image_column = self.image_column or _first_present(example, _IMAGE_COLUMNS)
        caption_column = self.caption_column or _first_present(example, _CAPTION_COLUMNS)
        image_value = example.get(image_column) if image_column else None
        key = self._key(example, image_value)
        # WebDataset puts the other fields in `<key>.json` (which wins); other sources have them as columns.
        fields = {**example, **example["json"]} if isinstance(example.get("json"), Mapping) else example
        sample: dict[str, Any] = {"image": None, "__key__": key}

        if image_value is None:
            self.skip_counter.record_skip("missing_image", key)
            return sample
        caption = example.get(caption_column) if caption_column else None
        if not isinstance(caption, str) or not caption.strip():
            if self.require_caption:
                self.skip_counter.record_skip("missing_caption", key)
                return sample
            caption = ""
        try:
            label_column = _first_present(fields, _LABEL_COLUMNS)
            label = int(fields[label_column]) if label_column else -1
            boxes = [[float(coordinate) for coordinate in box] for box in fields.get("boxes") or []]
            if any(len(box) != 4 for box in boxes):
                raise ValueError(f"boxes must be [x0, y0, x1, y1], got {fields.get('boxes')}")
            object_labels = [int(value) for value in fields.get("object_labels") or []]
            keypoints = [[float(coordinate) for coordinate in point] for point in fields.get("keypoints") or []]
            if any(len(point) != 2 for point in keypoints):
                raise ValueError(f"keypoints must be [x, y] pairs, got {fields.get('keypoints')}")
        except (TypeError, ValueError) as error:
            self.skip_counter.record_skip("invalid_fields", key, repr(error))
            return sample
        try:
            image = _decode_image(image_value)
        except Exception as error:  # any decoder failure (PIL raises OSError, SyntaxError, ValueError, ...)
            self.skip_counter.record_skip("undecodable_image", key, repr(error))
            return sample
        self.skip_counter.record_ok()
        # Sources without the shorter text views fall back to the caption itself.
        sample.update(
            image=image,
            caption=caption,
            summary=fields.get("summary") or caption,
            attributes=fields.get("attributes") or caption,
            boxes=boxes,
            label=label,
            object_labels=object_labels,
            keypoints=keypoints,
            mismatched=bool(fields.get("mismatched", False)),
        )
        return sample


def _has_image(sample: Mapping[str, Any]) -> bool:
    return sample["image"] is not None


def _builder_for_files(files: Sequence[str]) -> str:
    lowered = [name.lower() for name in files]
    if all(name.endswith(_TAR_SUFFIXES) for name in lowered):
        return "webdataset"
    if all(name.endswith(".parquet") for name in lowered):
        return "parquet"
    if all(name.endswith((*_IMAGE_SUFFIXES, ".jsonl", ".csv")) for name in lowered):
        return "imagefolder"
    raise ValueError(
        f"cannot tell the format of {files[:3]}...: expected only .tar, only .parquet or only image files; pass "
        "`builder` explicitly"
    )


def _files_in(folder: Path) -> list[str]:
    for suffixes in (_TAR_SUFFIXES, (".parquet",)):
        files = sorted(str(path) for path in folder.iterdir() if path.name.lower().endswith(suffixes))
        if files:
            return files
    return []


def _resolve_source(
    source: str | os.PathLike | Sequence[str | os.PathLike], split: str, builder: str | None
) -> tuple[str, dict[str, Any]]:
    """Turns `source` into `load_dataset`'s `path` and keyword arguments."""
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        folder = Path(text)
        if folder.is_dir():
            files = _files_in(folder / split) if (folder / split).is_dir() else []
            files = files or _files_in(folder)
            splits_here = sorted(sub.name for sub in folder.iterdir() if sub.is_dir() and _files_in(sub))
            if not files and splits_here and builder != "imagefolder":
                raise ValueError(f"{folder} has no split {split!r}; its splits are {splits_here}")
            if files and builder != "imagefolder":
                return builder or _builder_for_files(files), {"data_files": {split: files}}
            return builder or "imagefolder", {"data_dir": text}
        if folder.is_file():
            files = [text]
        elif any(char in text for char in "*?["):
            files = sorted(glob(text))
            if not files:
                raise FileNotFoundError(f"no files match {text!r}")
        else:
            return text, {}  # a Hub dataset id, or a builder name that finds its data itself
    else:
        files = [os.fspath(path) for path in source]
        if not files:
            raise ValueError("`source` is an empty list of files")
    return builder or _builder_for_files(files), {"data_files": {split: files}}


def load_image_text_stream(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    split: str = "train",
    *,
    shuffle_buffer: int | None = None,
    seed: int = 0,
    builder: str | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
    skip_counter: SkipCounter | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    require_caption: bool = True,
    **load_dataset_kwargs: Any,
) -> datasets.IterableDataset:
    """Streams image-text samples with uniform fields, skipping and counting corrupt ones.

    Args:
        source: Where the data is:
            - a folder from `build_synthetic_scenes` / `build_tuxpaint` (reads `<source>/<split>/*.tar`), or any
              folder of `.tar` or `.parquet` files (with or without a `<split>` subfolder); a folder with neither
              is read as an `imagefolder` (`metadata.jsonl` may hold captions);
            - a file, a glob (`"shards/*.tar"`) or a list of files: `.tar` -> webdataset, `.parquet` -> parquet,
              images -> imagefolder;
            - any other string: a Hub dataset id (`"org/name"`), loaded with `load_dataset(source, split=split)`.
        split: Split to read; names the subfolder and the `data_files` split.
        shuffle_buffer: None: no shuffling (file order). 1: seeded shard-order shuffle only, exact resume. > 1: also a
            buffer of that many samples (better mixing; resume loses the buffer's content). Call `set_epoch(epoch)`
            on the stream each epoch to reshuffle.
        seed: Shuffle seed; must be the same on every rank.
        builder: Force "webdataset", "parquet" or "imagefolder" instead of guessing from file suffixes.
        image_column: Column holding the image; default: the first present of jpg, jpeg, png, webp, image, img.
        caption_column: Column holding the caption; default: the first present of caption, txt, text, sentence,
            title.
        skip_counter: Counter for dropped samples; keep a reference to read it (one is made if None, and skips are
            still logged).
        rank: With `world_size`, split the stream with `datasets.distributed.split_dataset_by_node`. Only for loops
            that do NOT pass the DataLoader to `accelerator.prepare`, which shards by itself.
        world_size: Number of processes for `rank`.
        require_caption: Drop (and count) samples without a caption. `load_image_stream` turns this off for
            image-only data, where a missing caption becomes "".
        **load_dataset_kwargs: Passed to `datasets.load_dataset` (e.g. `revision`, `token`).

    Returns:
        A `datasets.IterableDataset` (features unknown to `datasets`, so it never re-encodes images) whose samples
        are dicts with:

        - `image`: `PIL.Image.Image`, RGB (transparency composited over white).
        - `caption`: str.
        - `summary`, `attributes`: str, the shorter text views; the caption when the source has none.
        - `boxes`: `list[list[float]]`, shape `(num_boxes, 4)`, `[x0, y0, x1, y1]` pixels; `[]` if none.
        - `label`: int class id; -1 if the source has none.
        - `object_labels`: `list[int]`, class id per box; `[]` if none.
        - `keypoints`: `list[list[float]]`, shape `(num_keypoints, 2)`, pixel `[x, y]`; `[]` if none.
        - `mismatched`: bool, the caption is known to belong to another image; False when the source does not say.
        - `__key__`: str, the sample key (WebDataset key, `key`/`id` column, image path, or a hash of the bytes).

    Raises:
        ValueError: If only one of `rank` / `world_size` is given, or the file format is ambiguous.
        FileNotFoundError: If a glob matches nothing.
    """
    if (rank is None) != (world_size is None):
        raise ValueError(f"pass both `rank` and `world_size` or neither, got rank={rank}, world_size={world_size}")
    if shuffle_buffer is not None and shuffle_buffer < 1:
        raise ValueError(f"`shuffle_buffer` must be None or >= 1, got {shuffle_buffer}")
    path, source_kwargs = _resolve_source(source, split, builder)
    stream = datasets.load_dataset(path, split=split, streaming=True, **source_kwargs, **load_dataset_kwargs)
    stream = stream.decode(False)  # images stay {"bytes", "path"}; _ImageTextNormalizer decodes and catches errors

    if world_size is not None:
        if stream.num_shards % world_size != 0:
            logger.warning(
                "%d shards do not divide among %d processes: every process will read all shards and keep every "
                "%d-th sample",
                stream.num_shards,
                world_size,
                world_size,
            )
        stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
    if shuffle_buffer is not None:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)

    skip_counter = skip_counter if skip_counter is not None else SkipCounter()
    normalizer = _ImageTextNormalizer(image_column, caption_column, skip_counter, require_caption)
    stream = stream.map(normalizer).filter(_has_image)
    return stream.select_columns(list(OUTPUT_FIELDS))


def load_image_stream(
    source: str | os.PathLike | Sequence[str | os.PathLike], split: str = "train", **kwargs: Any
) -> datasets.IterableDataset:
    """`load_image_text_stream` for image data without captions (pretraining images, keypoint data).

    Same sources, arguments and sample fields; a sample without a caption is kept with `caption=""` (and the text
    views equal to it) instead of being skipped. Corrupt images and malformed labels, boxes or keypoints are still
    skipped and counted.
    """
    return load_image_text_stream(source, split, require_caption=False, **kwargs)
