"""Faulty WebDataset shards and samples: each one is skipped, counted by (reason, shard) and never stops the stream.

Issue 12, section 4: a tar cut in half, a malformed `.json`, a string label, an empty shard, a file that is not a
tar, a `.png` among `.jpg` samples, and invalid boxes / keypoints (non-finite, outside the image, not one label per
box).
"""

import io
import math
import tarfile
from pathlib import Path

import pytest
import torch

from hfvision.data import SkipCounter, SyntheticScenes, load_image_stream, load_image_text_stream, write_shards

PER_SHARD = 8


def _scenes(count=2 * PER_SHARD):
    return SyntheticScenes(count, seed=3, image_size=16)


def _read_members(tar_path):
    with tarfile.open(tar_path) as archive:
        return [(member.name, archive.extractfile(member).read()) for member in archive.getmembers()]


def _write_members(tar_path, members):
    with tarfile.open(tar_path, "w") as archive:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))


def _replace(tar_path, replacements):
    """Rewrites `tar_path` with the payloads of `replacements` ({member name: bytes}); other members unchanged."""
    _write_members(tar_path, [(name, replacements.get(name, payload)) for name, payload in _read_members(tar_path)])


def _keys(stream):
    return [sample["__key__"] for sample in stream]


@pytest.fixture
def two_shards(tmp_path):
    return write_shards(_scenes(), tmp_path / "shards", 2)


@pytest.mark.parametrize("cut", ["half", "member_boundary"])
def test_a_truncated_shard_is_counted_with_its_name(two_shards, cut):
    shard = two_shards[1]
    data = Path(shard).read_bytes()
    if cut == "half":
        end = len(data) // 2
    else:  # right before the header of sample 11's image: tarfile itself ends silently there
        with tarfile.open(shard) as archive:
            end = next(member.offset for member in archive.getmembers() if member.name == "000000011.jpg")
    Path(shard).write_bytes(data[:end])
    counter = SkipCounter()
    keys = _keys(load_image_text_stream(two_shards, skip_counter=counter))
    assert keys[:PER_SHARD] == [f"{index:09d}" for index in range(PER_SHARD)]
    assert PER_SHARD <= len(keys) < 2 * PER_SHARD  # the samples before the cut, not the one being read at the cut
    if cut == "member_boundary":
        assert keys[PER_SHARD:] == ["000000008", "000000009"]  # sample 10 may miss members: dropped too
    assert counter.counts() == {("truncated_shard", shard): 1}
    assert counter.num_skipped == 1 and counter.num_ok == len(keys)


def test_malformed_json_and_string_labels_are_skipped_with_the_shard_name(two_shards):
    _replace(two_shards[0], {"000000002.json": b'{"label": 1, "boxes": [[0, 0'})
    _replace(two_shards[1], {"000000014.json": b'{"label": "cat"}', "000000015.json": b"[1, 2]"})
    counter = SkipCounter()
    keys = _keys(load_image_text_stream(two_shards, skip_counter=counter))
    assert sorted(set(f"{index:09d}" for index in range(16)) - set(keys)) == ["000000002", "000000014", "000000015"]
    assert counter.counts() == {
        ("invalid_json", two_shards[0]): 1,
        ("invalid_label", two_shards[1]): 1,
        ("invalid_json", two_shards[1]): 1,
    }


def test_empty_and_non_tar_shards_are_skipped_and_counted(two_shards, tmp_path):
    folder = tmp_path / "shards"
    (folder / "00002.tar").write_bytes(b"")
    _write_members(folder / "00003.tar", [])
    (folder / "00004.tar").write_text("<html>404 Not Found</html>" * 40)
    counter = SkipCounter()
    stream = load_image_text_stream(folder, skip_counter=counter)
    assert stream.num_shards == 5
    assert _keys(stream) == [f"{index:09d}" for index in range(16)]
    assert counter.counts() == {
        ("empty_shard", str(folder / "00002.tar")): 1,
        ("empty_shard", str(folder / "00003.tar")): 1,
        ("unreadable_shard", str(folder / "00004.tar")): 1,
    }


def test_a_png_among_jpg_samples_is_read(two_shards):
    buffer = io.BytesIO()
    _scenes()[9]["image"].save(buffer, format="PNG")
    members = _read_members(two_shards[1])
    members = [("000000009.png", buffer.getvalue()) if name == "000000009.jpg" else (name, p) for name, p in members]
    _write_members(two_shards[1], members)
    counter = SkipCounter()
    samples = list(load_image_text_stream(two_shards, skip_counter=counter))
    assert [sample["__key__"] for sample in samples] == [f"{index:09d}" for index in range(16)]
    assert counter.num_skipped == 0
    assert samples[9]["image"].size == (16, 16)


def test_annotations_are_validated_clipped_and_counted(tmp_path):
    images = [scene["image"] for scene in _scenes(8)]  # 16 x 16 pixels
    nan = math.nan
    samples = [
        {"image": images[0], "boxes": [[2, 2, 8, 8]], "object_labels": [1], "label": 0},  # fine
        {"image": images[1], "boxes": [[nan, 0, 4, 4]], "object_labels": [1]},  # non-finite box: skipped
        {"image": images[2], "boxes": [[-4, 2, 30, 9], [20, 20, 30, 30]], "object_labels": [3, 4]},  # clip, drop
        {"image": images[3], "keypoints": [[3.0, 4.0], [17.0, 2.0]]},  # keypoint outside the image: skipped
        {"image": images[4], "keypoints": [[3.0, math.inf]]},  # non-finite keypoint: skipped
        {"image": images[5], "boxes": [[0, 0, 4, 4]], "object_labels": [1, 2]},  # two labels, one box: skipped
        {"image": images[6], "label": 2.5},  # not an integer: skipped
        {"image": images[7], "boxes": [[5, 5, 5, 9]]},  # empty box: dropped, sample kept
    ]
    shard = write_shards(samples, tmp_path, 1, image_format="png")[0]
    counter = SkipCounter()
    out = {sample["__key__"]: sample for sample in load_image_stream(tmp_path, skip_counter=counter)}
    assert sorted(out) == ["000000000", "000000002", "000000007"]
    assert out["000000002"]["boxes"] == [[0.0, 2.0, 16.0, 9.0]] and out["000000002"]["object_labels"] == [3]
    assert out["000000007"]["boxes"] == [] and out["000000000"]["boxes"] == [[2.0, 2.0, 8.0, 8.0]]
    assert counter.counts() == {
        ("invalid_annotation", shard): 4,
        ("invalid_label", shard): 1,
        ("box_outside_image", shard): 2,
    }
    assert counter.num_skipped == 5 and counter.num_dropped == 2 and counter.num_ok == 3


def test_counts_by_shard_add_up_across_dataloader_workers(two_shards):
    _replace(two_shards[0], {"000000001.jpg": b"not a jpeg"})
    _replace(two_shards[1], {"000000012.json": b"{"})
    counter = SkipCounter()
    stream = load_image_text_stream(two_shards, skip_counter=counter)
    loader = torch.utils.data.DataLoader(stream, batch_size=4, num_workers=2, collate_fn=list)
    assert sum(len(batch) for batch in loader) == 14
    assert counter.counts() == {("undecodable_image", two_shards[0]): 1, ("invalid_json", two_shards[1]): 1}
