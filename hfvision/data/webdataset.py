"""WebDataset tar shards in the img2dataset layout, and builders for the offline data sets.

A shard ``00000.tar`` holds, per sample, ``<key>.jpg`` (or ``.png``), ``<key>.txt`` (the caption) and ``<key>.json``
(every other field: summary, attributes, boxes, label, mismatched, ...), the layout that
``datasets.load_dataset("webdataset", data_files=..., streaming=True)`` reads with one shard per tar.

Shards hold equal sample counts and their number is a multiple of the world size: ``accelerate``'s ``prepare`` then
gives every rank whole tars, and no rank runs out of batches before the others (which deadlocks DDP; see
``methods/hf_stack.md`` section 5). Tars are byte-reproducible: fixed member order, zero mtimes and owners.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from datasets.utils.file_utils import xopen
from PIL import Image
from tqdm.auto import tqdm

from ..models.pyramidclip.image_processing_pyramidclip import to_8bit_images
from .synthetic_scenes import SyntheticScenes
from .tuxpaint import TuxpaintStamps

__all__ = ["build_synthetic_scenes", "build_tuxpaint", "generate_tar_samples", "iter_tar_samples", "write_shards"]

logger = logging.getLogger(__name__)

_IMAGE_FORMATS = {"jpg": "JPEG", "png": "PNG"}
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")  # no dots or slashes: webdataset splits the key at the first dot
_EXTENSION_PATTERN = re.compile(r"^[a-z0-9]+$")  # a bytes field becomes the member `<key>.<name>`


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"field of type {type(value).__name__} is not JSON serialisable")


def _add_member(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o644
    info.mtime = 0
    archive.addfile(info, io.BytesIO(payload))


def _encode_image(image: Image.Image, image_format: str, jpeg_quality: int) -> bytes:
    buffer = io.BytesIO()
    if image_format == "jpg":
        # 16-bit and float images by their real range (a bare convert("RGB") clips them to white)
        to_8bit_images(image).convert("RGB").save(buffer, format="JPEG", quality=jpeg_quality)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_shards(
    samples: Iterable[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    num_shards: int,
    *,
    world_size: int = 1,
    num_samples: int | None = None,
    image_format: str = "jpg",
    jpeg_quality: int = 95,
    overwrite: bool = False,
) -> list[str]:
    """Writes samples into `num_shards` WebDataset tars holding equal sample counts.

    Shard `i` is `out_dir/{i:05d}.tar` and holds samples `i * per_shard .. (i + 1) * per_shard - 1`, where
    `per_shard = num_samples // num_shards`; the last `num_samples % num_shards` samples are dropped (and never
    drawn from `samples`), with a warning.

    Args:
        samples: Dicts with `image` (`PIL.Image.Image`) and, for image-text data, `caption` (str, written as
            `<key>.txt`); a `bytes` field named like a file extension (e.g. `wav`) is written as its own member
            `<key>.<name>` (audio, arrays, any encoded payload); every other field except `__key__` goes into
            `<key>.json` and must be JSON serialisable (numpy scalars and arrays are converted). An optional
            `__key__` (letters, digits, `_`, `-`) names the sample; otherwise the key is the 9-digit sample index.
        out_dir: Folder for the tars, created if missing.
        num_shards: Number of tars; must be a positive multiple of `world_size`.
        world_size: Number of training processes the shards will be spread over.
        num_samples: How many samples `samples` holds; defaults to `len(samples)`, and an iterable without a length
            is materialised in memory to count it.
        image_format: "jpg" (img2dataset's default) or "png" (lossless, exact pixels).
        jpeg_quality: JPEG quality when `image_format="jpg"`.
        overwrite: Replace `*.tar` files already in `out_dir`. Without it, existing tars raise an error, since a
            stale shard left next to new ones would be streamed as data.

    Returns:
        The tar paths as strings, in shard order (ready for `data_files`).

    Raises:
        ValueError: On a bad shard count, format, key, fewer samples than shards, or a sample without an image.
        FileExistsError: If `out_dir` holds tars and `overwrite` is False.
    """
    if num_shards < 1 or world_size < 1 or num_shards % world_size != 0:
        raise ValueError(
            f"`num_shards` must be a positive multiple of `world_size` so every rank reads whole shards, got "
            f"num_shards={num_shards}, world_size={world_size}"
        )
    if image_format not in _IMAGE_FORMATS:
        raise ValueError(f"`image_format` must be one of {list(_IMAGE_FORMATS)}, got {image_format!r}")
    if num_samples is None:
        if not hasattr(samples, "__len__"):
            samples = list(samples)
        num_samples = len(samples)  # type: ignore[arg-type]
    per_shard = num_samples // num_shards
    if per_shard == 0:
        raise ValueError(f"{num_samples} samples cannot fill {num_shards} shards; write fewer shards")
    dropped = num_samples - per_shard * num_shards
    if dropped:
        logger.warning(
            "write_shards: dropping the last %d of %d samples so that each of the %d shards holds %d",
            dropped,
            num_samples,
            num_shards,
            per_shard,
        )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(out_dir.glob("*.tar"))
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds {len(existing)} tar files; pass overwrite=True to replace them")
    for stale in existing:
        stale.unlink()

    paths: list[str] = []
    sample_iterator = iter(samples)
    seen_keys: set[str] = set()
    # building a dataset takes a while (drawing, encoding): show it
    progress = tqdm(total=per_shard * num_shards, desc=f"writing {out_dir.name}", unit="sample", leave=False)
    for shard_index in range(num_shards):
        final_path = out_dir / f"{shard_index:05d}.tar"
        temporary_path = final_path.with_suffix(".tar.tmp")
        with tarfile.open(temporary_path, "w", format=tarfile.PAX_FORMAT) as archive:
            for offset in range(per_shard):
                index = shard_index * per_shard + offset
                try:
                    sample = next(sample_iterator)
                except StopIteration:
                    raise ValueError(f"`samples` ended after {index} samples; expected {num_samples}") from None
                if "image" not in sample:
                    raise ValueError(f"sample {index} needs an `image`, got fields {sorted(sample)}")
                key = str(sample.get("__key__", f"{index:09d}"))
                if not _KEY_PATTERN.match(key) or key in seen_keys:
                    raise ValueError(f"sample {index} has an invalid or duplicate key {key!r}")
                seen_keys.add(key)
                fields = {name: value for name, value in sample.items() if name not in ("image", "caption", "__key__")}
                payloads = {name: fields.pop(name) for name in list(fields) if isinstance(fields[name], bytes)}
                for name, payload in payloads.items():
                    if not _EXTENSION_PATTERN.match(name) or name in ("txt", "json", image_format):
                        raise ValueError(f"sample {index}: bytes field {name!r} is not a free file extension")
                    _add_member(archive, f"{key}.{name}", payload)
                _add_member(
                    archive, f"{key}.{image_format}", _encode_image(sample["image"], image_format, jpeg_quality)
                )
                if "caption" in sample:
                    _add_member(archive, f"{key}.txt", str(sample["caption"]).encode("utf-8"))
                metadata = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=_json_default)
                _add_member(archive, f"{key}.json", metadata.encode("utf-8"))
                progress.update()
        os.replace(temporary_path, final_path)
        paths.append(str(final_path))
    progress.close()
    return paths


def _write_build_files(out_dir: Path, class_names: list[str], build_info: dict[str, Any]) -> None:
    (out_dir / "class_names.json").write_text(json.dumps(class_names, indent=1, ensure_ascii=False) + "\n")
    (out_dir / "build_info.json").write_text(json.dumps(build_info, indent=1, sort_keys=True) + "\n")


def _split_info(num_samples: int, num_shards: int) -> dict[str, int]:
    per_shard = num_samples // num_shards
    return {"num_shards": num_shards, "samples_per_shard": per_shard, "num_samples": per_shard * num_shards}


def build_synthetic_scenes(
    out_dir: str | os.PathLike,
    num_train: int = 10_000,
    num_eval: int = 1_000,
    seed: int = 0,
    mismatch_fraction: float = 0.0,
    num_shards: int = 8,
    *,
    num_eval_shards: int | None = None,
    world_size: int = 1,
    image_size: int = 64,
    max_objects: int = 3,
    eval_max_objects: int | None = None,
    image_format: str = "jpg",
    overwrite: bool = False,
) -> dict[str, list[str]]:
    """Writes `SyntheticScenes` train and eval shards plus `class_names.json` and `build_info.json`.

    Layout: `out_dir/train/*.tar`, `out_dir/eval/*.tar`, `out_dir/class_names.json` (the "colour shape" names that
    `label` indexes), `out_dir/build_info.json` (arguments and per-split counts after dropping remainders).

    Args:
        out_dir: Output folder.
        num_train: Training scenes (before dropping the remainder of `num_train % num_shards`).
        num_eval: Held-out scenes, an independent draw (split name "eval" in the seed).
        seed: Base seed; the same arguments give byte-identical tars.
        mismatch_fraction: Fraction of training captions swapped for another scene's; eval captions are always
            correct.
        num_shards: Training tars, a multiple of `world_size`.
        num_eval_shards: Eval tars, a multiple of `world_size`; defaults to `num_shards`.
        world_size: Number of training processes.
        image_size: Image side in pixels.
        max_objects: Most objects per training scene.
        eval_max_objects: Most objects per eval scene; defaults to `max_objects` (1 gives unambiguous zero-shot
            classification).
        image_format: "jpg" or "png".
        overwrite: Replace existing tars.

    Returns:
        `{"train": [tar paths], "eval": [tar paths]}`.
    """
    out_dir = Path(out_dir)
    num_eval_shards = num_shards if num_eval_shards is None else num_eval_shards
    eval_max_objects = eval_max_objects or max_objects
    train_scenes = SyntheticScenes(
        num_train,
        seed=seed,
        split="train",
        image_size=image_size,
        max_objects=max_objects,
        mismatch_fraction=mismatch_fraction,
    )
    eval_scenes = SyntheticScenes(
        num_eval, seed=seed, split="eval", image_size=image_size, max_objects=eval_max_objects
    )
    splits = {"train": (train_scenes, num_shards), "eval": (eval_scenes, num_eval_shards)}
    paths = {}
    for split, (scenes, shards) in splits.items():
        paths[split] = write_shards(
            scenes, out_dir / split, shards, world_size=world_size, image_format=image_format, overwrite=overwrite
        )
    build_info = {
        "generator": "hfvision.data.synthetic_scenes.SyntheticScenes",
        "seed": seed,
        "image_size": image_size,
        "mismatch_fraction": {"train": mismatch_fraction, "eval": 0.0},
        "max_objects": {"train": max_objects, "eval": eval_max_objects},
        "image_format": image_format,
        "world_size": world_size,
        "splits": {split: _split_info(len(scenes), shards) for split, (scenes, shards) in splits.items()},
    }
    _write_build_files(out_dir, splits["train"][0].class_names(), build_info)
    return paths


def build_tuxpaint(
    out_dir: str | os.PathLike,
    renders_per_stamp: int = 4,
    eval_renders_per_stamp: int = 1,
    seed: int = 0,
    num_shards: int = 8,
    *,
    num_eval_shards: int | None = None,
    world_size: int = 1,
    image_size: int = 128,
    held_out_fraction: float = 0.2,
    image_format: str = "jpg",
    stamps_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict[str, list[str]]:
    """Writes `TuxpaintStamps` train and eval shards plus `class_names.json` and `build_info.json`.

    Layout as in `build_synthetic_scenes`; `class_names.json` holds the stamp categories that `label` indexes.
    Needs `apt-get install -y tuxpaint-stamps-default`.

    Args:
        out_dir: Output folder.
        renders_per_stamp: Differently placed copies of each training stamp (~617 stamps).
        eval_renders_per_stamp: Copies of each held-out stamp (~168 stamps).
        seed: Seed for placements, backgrounds and sample order (the stamp split is fixed by path hashes).
        num_shards: Training tars, a multiple of `world_size`.
        num_eval_shards: Eval tars, a multiple of `world_size`; defaults to `num_shards`.
        world_size: Number of training processes.
        image_size: Image side in pixels.
        held_out_fraction: Fraction of stamps held out for eval.
        image_format: "jpg" or "png".
        stamps_dir: The stamps folder; defaults to `/usr/share/tuxpaint/stamps`.
        overwrite: Replace existing tars.

    Returns:
        `{"train": [tar paths], "eval": [tar paths]}`.

    Raises:
        FileNotFoundError: If the stamps are not installed (the message says how to install them).
    """
    out_dir = Path(out_dir)
    num_eval_shards = num_shards if num_eval_shards is None else num_eval_shards
    common = {"image_size": image_size, "seed": seed, "held_out_fraction": held_out_fraction, "stamps_dir": stamps_dir}
    splits = {
        "train": (TuxpaintStamps("train", renders_per_stamp=renders_per_stamp, **common), num_shards),
        "eval": (TuxpaintStamps("eval", renders_per_stamp=eval_renders_per_stamp, **common), num_eval_shards),
    }
    paths = {}
    for split, (stamps, shards) in splits.items():
        paths[split] = write_shards(
            stamps, out_dir / split, shards, world_size=world_size, image_format=image_format, overwrite=overwrite
        )
    build_info = {
        "generator": "hfvision.data.tuxpaint.TuxpaintStamps",
        "seed": seed,
        "image_size": image_size,
        "held_out_fraction": held_out_fraction,
        "renders_per_stamp": {"train": renders_per_stamp, "eval": eval_renders_per_stamp},
        "num_stamps": {split: len(stamps.stamps) for split, (stamps, _) in splits.items()},
        "image_format": image_format,
        "world_size": world_size,
        "splits": {split: _split_info(len(stamps), shards) for split, (stamps, shards) in splits.items()},
    }
    _write_build_files(out_dir, splits["train"][0].class_names(), build_info)
    return paths


# --- reading -------------------------------------------------------------------------------------------------------

_MEMBER_PATTERN = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's split of `dir/key.ext.ext` into key, ext
_SHARD_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


def _shard_error(shard: str, reason: str, key: str, detail: str) -> dict[str, Any]:
    return {"__key__": key, "__url__": shard, "__error__": reason, "__detail__": detail}


def iter_tar_samples(shard: str) -> Iterator[dict[str, Any]]:
    """The samples of one WebDataset tar as raw dicts; a shard that cannot be read fully ends with an error record.

    A sample is `{"__key__", "__url__": shard, "<ext>": bytes, ...}` with one raw payload per member (extensions
    lower-cased; decoding is the reader's job). Instead of raising, a faulty shard yields one record
    `{"__key__", "__url__", "__error__": reason, "__detail__"}` and stops, with `reason`:

    - `unreadable_shard`: not a tar (or unreadable) from the start;
    - `empty_shard`: a 0-byte file or a tar without samples;
    - `truncated_shard`: cut short (a member runs past the end, or the end-of-archive marker is missing); the
      samples before the cut are yielded, the sample being read at the cut is not.

    A sample with two members of the same extension yields `__error__ = "invalid_fields"` for that sample only.
    """
    try:
        handle = xopen(shard, "rb")
    except _SHARD_ERRORS as error:
        yield _shard_error(shard, "unreadable_shard", shard, repr(error))
        return
    with handle:
        try:
            archive = tarfile.open(fileobj=handle, mode="r:*")  # noqa: SIM115 (closed by the `with` below)
        except _SHARD_ERRORS as error:
            empty = "empty file" in str(error)
            yield _shard_error(shard, "empty_shard" if empty else "unreadable_shard", shard, repr(error))
            return
        with archive:
            current: dict[str, Any] | None = None
            num_samples = 0
            try:
                for member in archive:
                    if not member.isfile():
                        continue
                    match = _MEMBER_PATTERN.match(member.name)
                    if match is None:
                        continue
                    key, extension = match.group(1), match.group(2).lower()
                    if current is not None and current["__key__"] != key:
                        yield current
                        num_samples += 1
                        current = None
                    if current is None:
                        current = {"__key__": key, "__url__": shard}
                    payload = archive.extractfile(member).read()  # type: ignore[union-attr]
                    if extension in current:
                        current["__error__"] = "invalid_fields"
                        current["__detail__"] = f"two members with extension {extension!r}"
                    current[extension] = payload
                # tarfile ends silently at a missing header: a complete archive has a zero block there.
                archive.fileobj.seek(archive.offset)
                end_block = archive.fileobj.read(tarfile.BLOCKSIZE)
                if len(end_block) < tarfile.BLOCKSIZE or end_block.count(0) != tarfile.BLOCKSIZE:
                    raise tarfile.ReadError(f"no end-of-archive marker at byte {archive.offset}")
            except _SHARD_ERRORS as error:
                lost = current["__key__"] if current is not None else f"{shard}@{archive.offset}"
                yield _shard_error(shard, "truncated_shard", lost, f"after {num_samples} samples: {error!r}")
                return
            if current is not None:
                yield current
                num_samples += 1
            if num_samples == 0:
                yield _shard_error(shard, "empty_shard", shard, "the tar holds no samples")


def generate_tar_samples(shards: list[str]) -> Iterator[dict[str, Any]]:
    """`iter_tar_samples` over `shards` in order: the generator of `IterableDataset.from_generator` (one shard per tar,
    so `shard`, `split_dataset_by_node`, `shuffle` and `state_dict` work on whole tars)."""
    for shard in shards:
        yield from iter_tar_samples(shard)
