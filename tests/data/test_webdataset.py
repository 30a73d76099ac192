import hashlib
import json
import tarfile

import pytest

from hfvision.data import SyntheticScenes, build_synthetic_scenes, write_shards


def _members_per_key(tar_path):
    with tarfile.open(tar_path) as archive:
        names = archive.getnames()
    keys = {}
    for name in names:
        key, extension = name.split(".", 1)
        keys.setdefault(key, []).append(extension)
    return keys


def test_write_shards_equal_counts_and_drops_the_remainder(tmp_path, caplog):
    scenes = SyntheticScenes(27, seed=0, image_size=32)
    paths = write_shards(scenes, tmp_path, num_shards=4, world_size=2)
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["00000.tar", "00001.tar", "00002.tar", "00003.tar"]
    per_shard = [_members_per_key(path) for path in paths]
    assert [len(keys) for keys in per_shard] == [6, 6, 6, 6]  # 27 // 4, the last 3 dropped
    assert "dropping the last 3 of 27" in caplog.text
    for keys in per_shard:
        assert all(sorted(extensions) == ["jpg", "json", "txt"] for extensions in keys.values())
    assert list(per_shard[1]) == [f"{index:09d}" for index in range(6, 12)]


def test_write_shards_stores_caption_and_other_fields(tmp_path):
    sample = SyntheticScenes(2, seed=0, mismatch_fraction=0.5)[0]
    [path] = write_shards([sample, sample | {"__key__": "second"}], tmp_path, num_shards=1, image_format="png")
    with tarfile.open(path) as archive:
        caption = archive.extractfile("000000000.txt").read().decode()
        fields = json.loads(archive.extractfile("second.json").read())
        assert archive.extractfile("second.png").read()[:4] == b"\x89PNG"
    assert caption == sample["caption"]
    expected = {name: value for name, value in sample.items() if name not in ("image", "caption")}
    assert fields == expected


def test_write_shards_rejects_bad_shard_counts_and_stale_tars(tmp_path):
    scenes = SyntheticScenes(8, seed=0, image_size=32)
    with pytest.raises(ValueError, match="multiple of `world_size`"):
        write_shards(scenes, tmp_path, num_shards=3, world_size=2)
    with pytest.raises(ValueError, match="cannot fill"):
        write_shards(scenes, tmp_path, num_shards=16)
    write_shards(scenes, tmp_path, num_shards=4)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_shards(scenes, tmp_path, num_shards=2)
    assert len(write_shards(scenes, tmp_path, num_shards=2, overwrite=True)) == 2
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["00000.tar", "00001.tar"]


def test_write_shards_accepts_a_plain_generator(tmp_path):
    scenes = SyntheticScenes(5, seed=0, image_size=32)
    paths = write_shards((sample for sample in scenes), tmp_path, num_shards=2)
    assert [len(_members_per_key(path)) for path in paths] == [2, 2]


def test_build_synthetic_scenes_layout_and_reproducible_bytes(tmp_path):
    def build(out_dir):
        return build_synthetic_scenes(
            out_dir, num_train=20, num_eval=8, seed=1, mismatch_fraction=0.25, num_shards=2, image_size=32
        )

    paths = build(tmp_path / "a")
    assert len(paths["train"]) == 2 and len(paths["eval"]) == 2
    class_names = json.loads((tmp_path / "a" / "class_names.json").read_text())
    assert class_names == SyntheticScenes(1).class_names()
    info = json.loads((tmp_path / "a" / "build_info.json").read_text())
    assert info["splits"]["train"] == {"num_shards": 2, "samples_per_shard": 10, "num_samples": 20}
    again = build(tmp_path / "b")
    for first, second in zip(paths["train"] + paths["eval"], again["train"] + again["eval"], strict=True):
        with open(first, "rb") as a, open(second, "rb") as b:
            assert hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest()
