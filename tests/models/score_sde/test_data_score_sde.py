"""Point streams of `hfvision.data.manifold_points`: parquet shards with their manifold, fresh seeded blocks, and
invalid rows skipped and counted."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hfvision.data import build_manifold_points, fresh_point_stream, load_manifold, load_point_stream, load_points
from hfvision.data.manifold_points import make_manifold
from hfvision.data.streaming import SkipCounter


def test_build_writes_shards_and_a_manifold_that_reloads(tmp_path):
    manifold = make_manifold("sphere", 10, intrinsic_dim=2, seed=3)
    build_manifold_points(tmp_path, manifold, 40, 12, num_shards=4, seed=1)
    assert len(list((tmp_path / "train").glob("*.parquet"))) == 4
    train, held_out = load_points(tmp_path), load_points(tmp_path, "eval")
    assert train.shape == (40, 10) and held_out.shape == (12, 10)
    reloaded = load_manifold(tmp_path)
    assert torch.equal(reloaded.isometry, manifold.isometry) and reloaded.intrinsic_dim == 2
    assert reloaded.distance(torch.cat([train, held_out])).max() < 1e-12
    assert pairwise_min(held_out, train) > 0  # the held-out points are other draws
    spec = json.loads((tmp_path / "manifold.json").read_text())
    assert spec["metric_kwargs"] == {"manifold": "sphere", "radius": 1.0}
    with pytest.raises(FileExistsError):
        build_manifold_points(tmp_path, manifold, 40)
    with pytest.raises(ValueError, match="num_shards"):
        build_manifold_points(tmp_path / "other", manifold, 4, num_shards=5)


def pairwise_min(first: torch.Tensor, second: torch.Tensor) -> float:
    return float(torch.cdist(first, second).min())


def test_invalid_rows_are_skipped_and_counted(tmp_path):
    rows = {
        "point": [[0.0, 1.0, 0.0], [float("nan"), 0.0, 0.0], [1.0, 0.0], None, [0.0, 0.0, 1.0]],
        "__key__": ["good-0", "nan", "short", "missing", "good-1"],
    }
    pq.write_table(pa.table(rows, schema=pa.schema([("point", pa.list_(pa.float64())), ("__key__", pa.string())])),
                   tmp_path / "points.parquet")  # fmt: skip
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    counter = SkipCounter()
    stream = load_point_stream([tmp_path / "points.parquet", tmp_path / "broken.parquet"], dim=3, skip_counter=counter)
    assert [row["__key__"] for row in stream] == ["good-0", "good-1"]
    assert counter.num_ok == 2 and counter.by_reason()["invalid_fields"] == 4  # 3 rows + the unreadable file


def test_fresh_blocks_are_seeded_shards_of_new_points():
    circle = make_manifold("circle", 10, seed=0)
    stream = fresh_point_stream(circle, num_blocks=3, block_size=5, seed=7)
    assert stream.num_shards == 3
    first = [row["point"] for row in load_point_stream(stream, dim=10)]
    again = [row["point"] for row in load_point_stream(fresh_point_stream(circle, num_blocks=3, block_size=5, seed=7))]
    assert first == again and len(first) == 15 and len({tuple(point) for point in first}) == 15
    other = [row["point"] for row in load_point_stream(fresh_point_stream(circle, num_blocks=3, block_size=5, seed=8))]
    assert other != first
    assert circle.distance(torch.tensor(first, dtype=torch.float64)).max() < 1e-12
