"""Image-text streams for every training script: `datasets` streaming, uniform samples, corrupt samples skipped.

``load_image_text_stream`` wraps ``datasets.load_dataset(..., streaming=True)`` over WebDataset tars (the large-scale
format), parquet files, an image folder or a Hub dataset id, and returns a ``datasets.IterableDataset`` whose samples
all have the same fields, whatever the source (see ``load_image_text_stream``).

Reading and decoding are ours, not ``datasets``': local WebDataset tars are read by ``webdataset.iter_tar_samples``
through ``IterableDataset.from_generator`` (one shard per tar, like ``datasets``' webdataset builder, which infers the
fields from the first samples, casts every ``.json`` to them and raises or stops silently on a faulty tar without
naming it); other sources are read with image decoding switched off (``IterableDataset.decode(False)``, so images
arrive as ``{"bytes", "path"}``). A ``map`` then validates and decodes each sample: a faulty shard (not a tar, empty,
truncated), an image that does not decode, a missing image or caption, malformed ``.json``, a label that is not an
integer, boxes or keypoints that are malformed, not finite or (keypoints) outside the image make the sample dropped by
the following ``filter`` and counted in a ``SkipCounter`` by reason and shard; boxes are clipped to the image and
those left empty removed (counted too). Nothing of this stops the stream, and no sample reaches the model
half-decoded. The pipeline is only ``read -> [split_dataset_by_node] -> [shuffle] -> map -> filter ->
select_columns``, all of which ``IterableDataset.state_dict()`` covers, so a stream resumes where it stopped.

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
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from glob import glob
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node
from datasets.utils.file_utils import xopen
from PIL import Image

from ..models.pyramidclip.image_processing_pyramidclip import to_8bit_images
from .webdataset import generate_tar_samples

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
_IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "image", "img")
_CAPTION_COLUMNS = ("caption", "txt", "text", "sentence", "title")
_LABEL_COLUMNS = ("label", "cls")
_KEY_COLUMNS = ("__key__", "key", "id")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
_MAX_LOGGED_SKIPS = 10


class SkipCounter:
    """Counts what the stream dropped, by reason and shard, readable from the owning process even with DataLoader
    workers.

    Two kinds of counts: skipped samples or shards (`SKIP_REASONS`: the sample never reaches the model) and dropped
    annotations (`DROP_REASONS`: e.g. a box entirely outside its image is removed from an otherwise good sample).
    `counts()` gives `{(reason, shard): n}`; `num_skipped` / `num_ok` / `skipped_fraction` sum over shards.

    A shard-level fault (`unreadable_shard`, `empty_shard`, `truncated_shard`) counts once: the samples a truncated
    shard would have held after the cut are unknown.

    The counts live in a shared-memory tensor `(process slot, shard, reason)`: slot 0 for the process that made the
    stream, `1 + worker_id` for each DataLoader worker (forked or spawned workers receive the same shared memory).
    Each slot is written by one process only, so increments never race; reading sums the slots. The shards are the
    files `load_image_text_stream` registers (`register_shards`, before any worker starts); a sample from elsewhere
    counts under the source name. Per rank, every process builds its own stream and counter: reduce across ranks
    yourself (`hfvision.training` does). Counts cover this process's reading (a resumed stream does not recount the
    samples before its checkpoint). `recent_keys` (the keys of the last skipped samples) is filled only by skips in
    the owning process itself (`num_workers=0`); skips in every process are logged as warnings (the first few per
    process, with the shard's name).

    Args:
        max_workers: DataLoader workers that get a slot of their own; more workers share slots (counts may then race).
        max_recent_keys: How many skipped keys `recent_keys` keeps.
    """

    SKIP_REASONS: tuple[str, ...] = (
        "undecodable_image",
        "missing_image",
        "missing_caption",
        "invalid_fields",
        "invalid_json",
        "invalid_label",
        "invalid_annotation",
        "unreadable_shard",
        "empty_shard",
        "truncated_shard",
    )
    DROP_REASONS: tuple[str, ...] = ("box_outside_image",)
    REASONS: tuple[str, ...] = SKIP_REASONS  # kept for callers of the first API
    UNKNOWN_SHARD = "<unknown>"

    def __init__(self, max_workers: int = 16, max_recent_keys: int = 100) -> None:
        self.max_workers = max_workers
        self.max_recent_keys = max_recent_keys
        self.recent_keys: list[str] = []
        self._logged = 0
        self._columns = (*self.SKIP_REASONS, *self.DROP_REASONS, "ok")
        self._shards: list[str] = [self.UNKNOWN_SHARD]
        self._shard_index: dict[str, int] = {self.UNKNOWN_SHARD: 0}
        self._counts = self._new_table(1)

    def _new_table(self, num_shards: int) -> torch.Tensor:
        return torch.zeros(self.max_workers + 1, num_shards, len(self._columns), dtype=torch.int64).share_memory_()

    def register_shards(self, shards: Sequence[str], unknown: str | None = None) -> None:
        """Gives each of `shards` its own counts (call before DataLoader workers start); samples whose shard is not
        known count under `unknown` (default `"<unknown>"`). Counts so far are kept."""
        names = list(self._shards)
        if unknown is not None and names[0] == self.UNKNOWN_SHARD and not self._counts[:, 0].any():
            names[0] = unknown
        for shard in shards:
            if shard not in names:
                names.append(shard)
        table = self._new_table(len(names))
        table[:, : self._counts.shape[1]] = self._counts
        self._shards, self._counts = names, table
        self._shard_index = {name: index for index, name in enumerate(names)}

    def _row(self) -> int:
        worker = torch.utils.data.get_worker_info()
        return 0 if worker is None else 1 + worker.id % self.max_workers

    def _add(self, reason: str, shard: str, count: int = 1) -> None:
        self._counts[self._row(), self._shard_index.get(shard, 0), self._columns.index(reason)] += count

    def record_skip(self, reason: str, key: str, detail: str = "", shard: str = "") -> None:
        """Counts one skipped sample (or faulty shard) of `shard`; `reason` is one of `SKIP_REASONS`."""
        if reason not in self.SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {self.SKIP_REASONS}")
        self._add(reason, shard)
        if len(self.recent_keys) < self.max_recent_keys:
            self.recent_keys.append(key)
        if self._logged < _MAX_LOGGED_SKIPS:
            self._logged += 1
            logger.warning("skipping sample %r of %s (%s) %s", key, shard or self._shards[0], reason, detail)

    def record_drop(self, reason: str, key: str, count: int = 1, shard: str = "") -> None:
        """Counts `count` annotations removed from a kept sample; `reason` is one of `DROP_REASONS`."""
        if reason not in self.DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}; expected one of {self.DROP_REASONS}")
        self._add(reason, shard, count)
        if self._logged < _MAX_LOGGED_SKIPS:
            self._logged += 1
            logger.warning("dropping %d annotation(s) of sample %r of %s (%s)", count, key, shard, reason)

    def record_ok(self, shard: str = "") -> None:
        """Counts one sample that was decoded and kept."""
        self._add("ok", shard)

    def counts(self, include_ok: bool = False) -> dict[tuple[str, str], int]:
        """`{(reason, shard): n}` for every non-zero count of skips and drops (`include_ok`: also `("ok", shard)`)."""
        table = self._counts.sum(dim=0)
        columns = self._columns if include_ok else self._columns[:-1]
        result = {}
        for shard_index, column_index in table[:, : len(columns)].nonzero().tolist():
            result[(columns[column_index], self._shards[shard_index])] = int(table[shard_index, column_index])
        return result

    @property
    def num_skipped(self) -> int:
        """Samples (and faulty shards) skipped so far, all processes that share this counter together."""
        return int(self._counts[:, :, : len(self.SKIP_REASONS)].sum())

    @property
    def num_dropped(self) -> int:
        """Annotations dropped from kept samples so far."""
        return int(self._counts[:, :, len(self.SKIP_REASONS) : -1].sum())

    @property
    def num_ok(self) -> int:
        """Samples decoded and kept so far, all processes together."""
        return int(self._counts[:, :, -1].sum())

    def by_reason(self) -> dict[str, int]:
        """Skipped samples per reason (every skip reason, zeros included)."""
        totals = self._counts[:, :, : len(self.SKIP_REASONS)].sum(dim=(0, 1)).tolist()
        return dict(zip(self.SKIP_REASONS, totals, strict=True))

    def reset(self) -> None:
        """Sets every count to zero and forgets the recent keys."""
        self._counts.zero_()
        self.recent_keys.clear()
        self._logged = 0

    def __repr__(self) -> str:
        return (
            f"SkipCounter(num_ok={self.num_ok}, num_skipped={self.num_skipped}, num_dropped={self.num_dropped}, "
            f"counts={self.counts()})"
        )


def _first_present(example: Mapping[str, Any], names: Sequence[str]) -> str | None:
    return next((name for name in names if example.get(name) is not None), None)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited over white (dropping alpha would expose arbitrary hidden colours)."""
    image = to_8bit_images(image)  # 16-bit and float images by their real range, as the image processors do
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


class _InvalidSample(ValueError):
    """A field that fails validation; `reason` is the `SkipCounter` reason it is counted under."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _as_text(value: Any, name: str) -> Any:
    """Raw WebDataset payloads (bytes) of text members as str; anything else unchanged."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as error:
            raise _InvalidSample("invalid_fields", f"{name} is not UTF-8: {error}") from None
    return value


def _as_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _InvalidSample("invalid_fields", f"{what} must be numbers, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise _InvalidSample("invalid_annotation", f"{what} must be finite, got {value!r}")
    return number


def _as_class_id(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _InvalidSample("invalid_label", f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _points(value: Any, size: int, what: str) -> list[list[float]]:
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or any(
        not isinstance(item, (list, tuple)) or len(item) != size for item in value
    ):
        raise _InvalidSample("invalid_fields", f"{what} must be a list of {size}-number lists, got {value!r}")
    return [[_as_number(coordinate, what) for coordinate in item] for item in value]


class _ImageTextNormalizer:
    """The `map` function: one raw example in, one uniform sample out (`image=None` marks a dropped sample).

    Validation, every failure skipped and counted with the sample's shard: a shard-level error record of the tar
    reader; an image that is missing or does not decode; a required caption that is missing; `.json` that does not
    parse to an object; a label or object label that is not an integer (>= -1, resp. >= 0); boxes that are not
    `[x0, y0, x1, y1]` numbers or not finite, object labels not one per box; keypoints that are not finite `[x, y]`
    numbers or lie outside the image. Boxes are clipped to the image; one that is empty after clipping is removed
    (with its object label) and counted as `box_outside_image`, the sample kept.
    """

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

    @staticmethod
    def _fields(example: Mapping[str, Any]) -> Mapping[str, Any]:
        """The sample's fields: WebDataset puts them in `<key>.json` (which wins), other sources have columns."""
        metadata = example.get("json")
        if metadata is None:
            return example
        if isinstance(metadata, (bytes, bytearray, str)):
            try:
                metadata = json.loads(metadata)
            except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
                raise _InvalidSample("invalid_json", f".json does not parse: {error}") from None
        if not isinstance(metadata, Mapping):
            raise _InvalidSample("invalid_json", f".json must hold an object, got {type(metadata).__name__}")
        return {**example, **metadata}

    def _parse(self, example: Mapping[str, Any], caption_column: str | None) -> dict[str, Any]:
        fields = self._fields(example)
        caption = _as_text(example.get(caption_column), caption_column or "caption") if caption_column else None
        if not isinstance(caption, str) or not caption.strip():
            if self.require_caption:
                raise _InvalidSample("missing_caption", "no caption")
            caption = ""
        views = {}
        for name in ("summary", "attributes"):
            value = _as_text(fields.get(name), name)
            if value is not None and not isinstance(value, str):
                raise _InvalidSample("invalid_fields", f"{name} must be a string, got {value!r}")
            views[name] = value or caption  # sources without the shorter text views fall back to the caption
        label_column = _first_present(fields, _LABEL_COLUMNS)
        label = -1
        if label_column is not None:
            value = fields[label_column]
            if isinstance(value, (bytes, bytearray)):  # a WebDataset `.cls` member: the id as text
                try:
                    value = int(bytes(value).decode("utf-8").strip())
                except ValueError:
                    raise _InvalidSample("invalid_label", f".{label_column} is not an integer: {value!r}") from None
            label = _as_class_id(value, "label", -1)
        boxes = _points(fields.get("boxes"), 4, "boxes")
        object_labels = [_as_class_id(value, "object_labels", 0) for value in fields.get("object_labels") or []]
        if object_labels and len(object_labels) != len(boxes):
            raise _InvalidSample(
                "invalid_annotation", f"{len(object_labels)} object_labels for {len(boxes)} boxes (need one per box)"
            )
        mismatched = fields.get("mismatched", False)
        if not isinstance(mismatched, (bool, int, np.bool_)):
            raise _InvalidSample("invalid_fields", f"mismatched must be a bool, got {mismatched!r}")
        return {
            "caption": caption,
            **views,
            "boxes": boxes,
            "label": label,
            "object_labels": object_labels,
            "keypoints": _points(fields.get("keypoints"), 2, "keypoints"),
            "mismatched": bool(mismatched),
        }

    def _fit_to_image(self, parsed: dict[str, Any], width: int, height: int, key: str, shard: str) -> None:
        """Clips boxes to the image (dropping and counting the empty ones); keypoints must lie inside it."""
        kept_boxes, kept_labels = [], []
        for index, (x0, y0, x1, y1) in enumerate(parsed["boxes"]):
            box = [min(max(x, 0.0), width) for x in (x0, x1)] + [min(max(y, 0.0), height) for y in (y0, y1)]
            box = [box[0], box[2], box[1], box[3]]
            if box[2] > box[0] and box[3] > box[1]:
                kept_boxes.append(box)
                if parsed["object_labels"]:
                    kept_labels.append(parsed["object_labels"][index])
        if len(kept_boxes) < len(parsed["boxes"]):
            self.skip_counter.record_drop("box_outside_image", key, len(parsed["boxes"]) - len(kept_boxes), shard)
        parsed["boxes"], parsed["object_labels"] = kept_boxes, kept_labels
        for x, y in parsed["keypoints"]:
            if not (0.0 <= x <= width and 0.0 <= y <= height):
                raise _InvalidSample(
                    "invalid_annotation", f"keypoint ({x}, {y}) lies outside the {width}x{height} image"
                )

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        shard = str(example.get("__url__") or "")
        image_column = self.image_column or _first_present(example, _IMAGE_COLUMNS)
        caption_column = self.caption_column or _first_present(example, _CAPTION_COLUMNS)
        image_value = example.get(image_column) if image_column else None
        key = self._key(example, image_value)
        sample: dict[str, Any] = {"image": None, "__key__": key}
        if example.get("__error__"):  # the tar reader's record of a faulty shard or sample
            self.skip_counter.record_skip(example["__error__"], key, example.get("__detail__", ""), shard)
            return sample
        if image_value is None:
            self.skip_counter.record_skip("missing_image", key, "", shard)
            return sample
        try:
            parsed = self._parse(example, caption_column)
        except _InvalidSample as error:
            self.skip_counter.record_skip(error.reason, key, str(error), shard)
            return sample
        try:
            image = _decode_image(image_value)
        except Exception as error:  # any decoder failure (PIL raises OSError, SyntaxError, ValueError, ...)
            self.skip_counter.record_skip("undecodable_image", key, repr(error), shard)
            return sample
        try:
            self._fit_to_image(parsed, image.width, image.height, key, shard)
        except _InvalidSample as error:
            self.skip_counter.record_skip(error.reason, key, str(error), shard)
            return sample
        self.skip_counter.record_ok(shard)
        sample.update(image=image, **parsed)
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
        skip_counter: Counter for dropped samples, by reason and shard; keep a reference to read it (one is made if
            None, and skips are still logged). The stream registers its files with it.
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
        - `boxes`: `list[list[float]]`, shape `(num_boxes, 4)`, `[x0, y0, x1, y1]` pixels, finite, clipped to the
          image and non-empty (boxes empty after clipping are removed with their object labels and counted as
          `box_outside_image`); `[]` if none.
        - `label`: int class id; -1 if the source has none.
        - `object_labels`: `list[int]`, class id per box; `[]` if none.
        - `keypoints`: `list[list[float]]`, shape `(num_keypoints, 2)`, pixel `[x, y]`, finite and inside the image
          (else the sample is skipped); `[]` if none.
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
    files = list(source_kwargs.get("data_files", {}).get(split, []))
    skip_counter = skip_counter if skip_counter is not None else SkipCounter()
    skip_counter.register_shards(files, unknown=files[0] if len(files) == 1 else os.fspath(str(source)))
    if path == "webdataset" and files and not load_dataset_kwargs:
        # Our own tar reader rather than `datasets`' webdataset builder, which infers the fields from the first
        # samples (a `.png` among `.jpg` became "missing"), casts `.json` to them (a string label raised) and raises
        # or ends silently on a faulty tar without naming it: here every fault becomes a counted skip. One shard per
        # tar, as with the builder, so sharding, shuffling and `state_dict` work the same.
        stream = datasets.IterableDataset.from_generator(generate_tar_samples, gen_kwargs={"shards": files})
    else:
        stream = datasets.load_dataset(path, split=split, streaming=True, **source_kwargs, **load_dataset_kwargs)
        stream = stream.decode(False)  # images stay {"bytes", "path"}; _ImageTextNormalizer decodes, catches errors

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
