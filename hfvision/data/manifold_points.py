"""Point clouds on embedded manifolds as `datasets` streams: the data of the Score-SDE manifold experiments.

Score-Based Generative Models Detect Manifolds (Pidstrigach, arXiv 2206.01018) is about where an SGM puts its samples
when the data lie on a low-dimensional manifold M in R^d. Two kinds of training data:

- a finite training set (e.g. 16 points, where the model can memorise, or thousands): `build_manifold_points`
  writes seeded points of M to parquet shards (`<dir>/train/*.parquet`, `<dir>/eval/*.parquet`, one row per point:
  `point` (list of d floats) and `__key__`) and the manifold itself to `<dir>/manifold.json`;
- fresh samples of M (the infinite-data regime): `fresh_point_stream`, a stream whose shards are seeded blocks of
  new points, so a run never sees a point twice and still resumes exactly (a block is a pure function of its seed).

`load_point_stream` reads either kind with the same fields and the same skip-and-count rule as the image streams: a
row whose `point` is missing, not a list of d numbers or not finite is skipped and counted (`invalid_fields`) in a
`SkipCounter`, never passed on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from glob import glob
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..models.score_sde.manifolds import Circle, EmbeddedManifold, FlatTorus, Sphere, Torus3D
from .streaming import SkipCounter

__all__ = [
    "MANIFOLD_KINDS",
    "build_manifold_points",
    "fresh_point_stream",
    "load_manifold",
    "load_point_stream",
    "load_points",
    "make_manifold",
    "manifold_spec",
]

MANIFOLD_KINDS = ("circle", "sphere", "flat_torus", "torus3d")
SPEC_FILE = "manifold.json"


def make_manifold(
    kind: str = "circle",
    ambient_dim: int = 10,
    intrinsic_dim: int = 2,
    radius: float = 1.0,
    radii: tuple[float, float] = (1.0, 0.5),
    seed: int = 0,
) -> EmbeddedManifold:
    """A manifold of `MANIFOLD_KINDS` in R^`ambient_dim` (`intrinsic_dim` is the sphere's k; `radii` the tori's)."""
    if kind == "circle":
        return Circle(ambient_dim, radius=radius, seed=seed)
    if kind == "sphere":
        return Sphere(intrinsic_dim, ambient_dim, radius=radius, seed=seed)
    if kind == "flat_torus":
        return FlatTorus(ambient_dim, radii=tuple(radii), seed=seed)
    if kind == "torus3d":
        return Torus3D(ambient_dim, major_radius=radii[0], minor_radius=radii[1], seed=seed)
    raise ValueError(f"`kind` must be one of {MANIFOLD_KINDS}, got {kind!r}.")


def manifold_spec(manifold: EmbeddedManifold) -> dict[str, Any]:
    """What `manifold.json` holds: the kind, sizes and the isometry Q (so metrics need no seed or code)."""
    if isinstance(manifold, Sphere):
        kind = "circle" if isinstance(manifold, Circle) else "sphere"
        shape = {"radius": manifold.radius, "intrinsic_dim": manifold.intrinsic_dim}
        metric = {"manifold": "sphere", "radius": manifold.radius}
    elif isinstance(manifold, FlatTorus):
        kind, shape = "flat_torus", {"radii": list(manifold.radii)}
        metric = {"manifold": "flat_torus", "radii": list(manifold.radii)}
    elif isinstance(manifold, Torus3D):
        radii = [manifold.major_radius, manifold.minor_radius]
        kind, shape, metric = "torus3d", {"radii": radii}, {"manifold": "torus3d", "radii": radii}
    else:
        raise TypeError(f"`manifold` must be one of the manifolds of hfvision.models.score_sde, got {type(manifold)}")
    return {
        "kind": kind,
        "ambient_dim": manifold.ambient_dim,
        **shape,
        "isometry": manifold.isometry.tolist(),
        "metric_kwargs": metric,  # the `manifold_distance` metric's arguments besides `isometry`
    }


def load_manifold(folder_or_spec: str | os.PathLike | dict[str, Any]) -> EmbeddedManifold:
    """The manifold of a `build_manifold_points` folder (its `manifold.json`) or of a spec dict, isometry included."""
    spec = folder_or_spec
    if not isinstance(spec, dict):
        path = Path(folder_or_spec)
        spec = json.loads((path / SPEC_FILE if path.is_dir() else path).read_text())
    kind, radii = spec["kind"], tuple(spec.get("radii", (1.0, 0.5)))
    manifold = make_manifold(
        kind,
        spec["ambient_dim"],
        spec.get("intrinsic_dim", 2),
        spec.get("radius", 1.0),
        radii,  # type: ignore[arg-type]
    )
    manifold.isometry = torch.tensor(spec["isometry"], dtype=torch.float64)
    return manifold


def _write_split(points: torch.Tensor, folder: Path, prefix: str, num_shards: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for shard, indices in enumerate(np.array_split(np.arange(len(points)), num_shards)):
        table = pa.table(
            {
                "point": pa.array(points[indices].tolist(), type=pa.list_(pa.float64())),
                "__key__": [f"{prefix}-{index:08d}" for index in indices],
            }
        )
        path = folder / f"points-{shard:05d}.parquet"
        pq.write_table(table, path)
        files.append(str(path))
    return files


def build_manifold_points(
    output_dir: str | os.PathLike,
    manifold: EmbeddedManifold,
    num_train: int,
    num_eval: int = 1024,
    *,
    num_shards: int = 1,
    num_eval_shards: int = 1,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write `num_train` / `num_eval` seeded points of `manifold` to parquet shards and `manifold.json`.

    Args:
        output_dir: the folder (`train/`, `eval/`, `manifold.json`).
        manifold: the data manifold (its isometry is stored).
        num_train: training points N (the eval points are fresh draws, never among them).
        num_eval: held-out points (the chance level of the memorisation metric, and fresh data for evaluation).
        num_shards: training shards; a multiple of the number of training processes. At most `num_train`.
        num_eval_shards: eval shards.
        seed: seed of the points.
        overwrite: replace an existing folder's files.

    Returns:
        `output_dir` as a `Path`.
    """
    output_dir = Path(output_dir)
    if num_train < 1 or num_eval < 0:
        raise ValueError(f"`num_train` must be >= 1 and `num_eval` >= 0, got {num_train} and {num_eval}.")
    if not 1 <= num_shards <= num_train or not 1 <= num_eval_shards <= max(num_eval, 1):
        raise ValueError(
            f"`num_shards` must be in [1, num_train] and `num_eval_shards` in [1, num_eval], got {num_shards} and "
            f"{num_eval_shards}."
        )
    if (output_dir / SPEC_FILE).exists() and not overwrite:
        raise FileExistsError(f"{output_dir} already holds manifold points; pass overwrite=True to replace them.")
    for split in ("train", "eval"):
        for old in (output_dir / split).glob("*.parquet") if (output_dir / split).is_dir() else []:
            old.unlink()
    generator = torch.Generator().manual_seed(seed)
    train = manifold.sample(num_train, generator, dtype=torch.float64)
    _write_split(train, output_dir / "train", "train", num_shards)
    if num_eval:
        _write_split(
            manifold.sample(num_eval, generator, dtype=torch.float64), output_dir / "eval", "eval", num_eval_shards
        )
    spec = {**manifold_spec(manifold), "num_train": num_train, "num_eval": num_eval, "seed": seed}
    (output_dir / SPEC_FILE).write_text(json.dumps(spec, indent=1) + "\n")
    return output_dir


def _generate_fresh_points(shards: list[int], spec: dict[str, Any], block_size: int) -> Iterator[dict[str, Any]]:
    manifold = load_manifold(spec)
    for block in shards:
        generator = torch.Generator().manual_seed(int(spec["seed"]) * 1_000_003 + block)
        points = manifold.sample(block_size, generator, dtype=torch.float64).tolist()
        for index, point in enumerate(points):
            yield {"point": point, "__key__": f"fresh-{block:06d}-{index:06d}"}


def fresh_point_stream(
    manifold: EmbeddedManifold, *, num_blocks: int = 1024, block_size: int = 4096, seed: int = 0
) -> datasets.IterableDataset:
    """An `IterableDataset` of `num_blocks * block_size` fresh points of `manifold`: each shard is one block drawn from
    its own seed, so shuffling, sharding across ranks and resuming work as for files (the infinite-data regime)."""
    if num_blocks < 1 or block_size < 1:
        raise ValueError(f"`num_blocks` and `block_size` must be >= 1, got {num_blocks} and {block_size}.")
    spec = {**manifold_spec(manifold), "seed": seed}
    return datasets.IterableDataset.from_generator(
        _generate_fresh_rows,
        gen_kwargs={"shards": list(range(num_blocks)), "spec": spec, "block_size": block_size},
    )


def _generate_parquet_points(shards: list[str]) -> Iterator[dict[str, Any]]:
    """Rows `{"point", "__key__", "__shard__"}` of parquet files; an unreadable file is one counted `__shard__` row
    with `point=None` (the validator counts it as `invalid_fields` of that shard)."""
    for shard in shards:
        try:
            parquet = pq.ParquetFile(shard)
            for batch in parquet.iter_batches(columns=["point", "__key__"]):
                rows = batch.to_pydict()
                for point, key in zip(rows["point"], rows["__key__"], strict=True):
                    yield {"point": point, "__key__": key, "__shard__": shard}
        except (OSError, pa.ArrowException, KeyError) as error:
            yield {"point": None, "__key__": f"{Path(shard).name}: {error}", "__shard__": shard}


def _generate_fresh_rows(shards: list[int], spec: dict[str, Any], block_size: int) -> Iterator[dict[str, Any]]:
    for row in _generate_fresh_points(shards, spec, block_size):
        yield {**row, "__shard__": "fresh_points"}


class _PointValidator:
    """`map` function: a valid row passes with `point` as a list of floats; an invalid one becomes `point=None` and is
    counted (`invalid_fields`), and the following `filter` drops it."""

    def __init__(self, dim: int | None, skip_counter: SkipCounter) -> None:
        self.dim, self.skip_counter = dim, skip_counter

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        key, shard = str(example.get("__key__") or ""), str(example.get("__shard__") or "")
        value = example.get("point")
        try:
            point = np.asarray(value, dtype=np.float64)
            valid = point.ndim == 1 and (self.dim is None or len(point) == self.dim) and np.isfinite(point).all()
        except (TypeError, ValueError):
            valid = False
        if value is None or not valid:
            detail = f"`point` must be {self.dim or 'd'} finite numbers"
            self.skip_counter.record_skip("invalid_fields", key, detail, shard)
            return {"point": None, "__key__": key}
        self.skip_counter.record_ok(shard)
        return {"point": point.tolist(), "__key__": key}


def load_point_stream(
    source: str | os.PathLike | Sequence[str | os.PathLike] | datasets.IterableDataset,
    split: str = "train",
    *,
    dim: int | None = None,
    shuffle_buffer: int | None = None,
    seed: int = 0,
    skip_counter: SkipCounter | None = None,
) -> datasets.IterableDataset:
    """Stream points `{"point": list[float], "__key__": str}` from a `build_manifold_points` folder, parquet files or
    a `fresh_point_stream`, skipping and counting invalid rows.

    Args:
        source: a folder (reads `<source>/<split>/*.parquet`), a parquet file / glob / list, or an `IterableDataset`.
        split: the split to read from a folder.
        dim: the expected number of coordinates d (rows of another length are skipped); None: any.
        shuffle_buffer: None: file order; 1: shard order only (exact resume); > 1: also a sample buffer.
        seed: shuffle seed (the same on every rank).
        skip_counter: counts skipped rows; the parquet files are registered with it.
    """
    if shuffle_buffer is not None and shuffle_buffer < 1:
        raise ValueError(f"`shuffle_buffer` must be None or >= 1, got {shuffle_buffer}")
    skip_counter = skip_counter if skip_counter is not None else SkipCounter()
    if isinstance(source, datasets.IterableDataset):
        stream, name = source, "fresh_points"
        skip_counter.register_shards([], unknown=name)
    else:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if path.is_dir():
                files = sorted(str(file) for file in (path / split).glob("*.parquet"))
            else:
                files = sorted(glob(os.fspath(source)))
        else:
            files = [os.fspath(file) for file in source]
        if not files:
            raise FileNotFoundError(f"no parquet files of split {split!r} in {source}")
        name = files[0] if len(files) == 1 else os.fspath(str(source))
        skip_counter.register_shards(files, unknown=name)
        # Our own reader (pyarrow record batches, one shard per file) rather than `datasets`' parquet builder, whose
        # shuffled streams sleep 5 s at the end of every pass (a pyarrow thread-shutdown workaround): a training set of
        # 16 points is one pass per step.
        stream = datasets.IterableDataset.from_generator(_generate_parquet_points, gen_kwargs={"shards": files})
    if shuffle_buffer is not None:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    stream = stream.map(_PointValidator(dim, skip_counter)).filter(lambda example: example["point"] is not None)
    return stream.select_columns(["point", "__key__"])


def load_points(source: str | os.PathLike, split: str = "train", limit: int | None = None) -> torch.Tensor:
    """All points of a split as one `(N, d)` float64 tensor (for evaluation: training sets and held-out points)."""
    rows = load_point_stream(source, split)
    if limit is not None:
        rows = rows.take(limit)
    points = [row["point"] for row in rows]
    if not points:
        raise ValueError(f"{source} has no valid points in split {split!r}")
    return torch.tensor(points, dtype=torch.float64)
