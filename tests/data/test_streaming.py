import io
import json
import tarfile

import numpy as np
import pytest
import torch

from hfvision.data import (
    OUTPUT_FIELDS,
    SkipCounter,
    SyntheticScenes,
    fashion_mnist,
    load_image_stream,
    load_image_text_stream,
    write_shards,
)

NUM_SAMPLES, NUM_SHARDS = 48, 4


def _scenes():
    return SyntheticScenes(NUM_SAMPLES, seed=7, image_size=32, mismatch_fraction=0.25)


def _add(archive, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    archive.addfile(info, io.BytesIO(payload))


def _insert_corrupt_sample(tar_path, after_key, key, image_payload):
    """Rewrites `tar_path` with a sample whose jpg is `image_payload` right after sample `after_key`."""
    with tarfile.open(tar_path) as archive:
        members = [(member, archive.extractfile(member).read()) for member in archive.getmembers()]
    with tarfile.open(tar_path, "w") as archive:
        for member, payload in members:
            archive.addfile(member, io.BytesIO(payload))
            if member.name == f"{after_key}.json":
                _add(archive, f"{key}.jpg", image_payload)
                _add(archive, f"{key}.txt", b"a caption for a broken image")
                _add(archive, f"{key}.json", json.dumps({"label": 1, "boxes": [[0, 0, 1, 1]]}).encode())


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_shards(_scenes(), root / "train", NUM_SHARDS, image_format="png")
    return root


@pytest.fixture(scope="module")
def corrupt_shards(tmp_path_factory):
    """Four jpg shards of 12 good samples; shard 0 gets a garbage jpg, shard 2 a truncated one."""
    root = tmp_path_factory.mktemp("corrupt")
    paths = write_shards(_scenes(), root, NUM_SHARDS)
    with tarfile.open(paths[0]) as archive:
        good_jpg = archive.extractfile("000000001.jpg").read()
    _insert_corrupt_sample(paths[0], "000000004", "garbage", b"this is not a jpeg")
    _insert_corrupt_sample(paths[2], "000000030", "truncated", good_jpg[: len(good_jpg) // 2])
    return paths


def _keys(stream):
    return [sample["__key__"] for sample in stream]


def test_stream_yields_every_sample_with_uniform_fields(shard_dir):
    scenes = _scenes()
    stream = load_image_text_stream(shard_dir, split="train")
    samples = list(stream)
    assert len(samples) == NUM_SAMPLES and stream.num_shards == NUM_SHARDS
    for index, sample in enumerate(samples):
        assert tuple(sample) == OUTPUT_FIELDS
        expected = scenes[index]
        assert sample["__key__"] == f"{index:09d}"
        np.testing.assert_array_equal(np.asarray(sample["image"]), np.asarray(expected["image"]))  # png: lossless
        for name in ("caption", "summary", "attributes", "label", "object_labels", "mismatched"):
            assert sample[name] == expected[name], name
        assert sample["boxes"] == [[float(v) for v in box] for box in expected["boxes"]]


def test_corrupt_images_are_skipped_and_counted(corrupt_shards):
    counter = SkipCounter()
    keys = _keys(load_image_text_stream(corrupt_shards, skip_counter=counter))
    assert keys == [f"{index:09d}" for index in range(NUM_SAMPLES)]
    assert counter.num_skipped == 2 and counter.num_ok == NUM_SAMPLES
    assert counter.by_reason()["undecodable_image"] == 2
    assert counter.recent_keys == ["garbage", "truncated"]


def test_skips_are_counted_in_dataloader_workers(corrupt_shards):
    counter = SkipCounter()
    stream = load_image_text_stream(corrupt_shards, skip_counter=counter)
    loader = torch.utils.data.DataLoader(stream, batch_size=5, num_workers=2, collate_fn=list)
    keys = [sample["__key__"] for batch in loader for sample in batch]
    assert sorted(keys) == [f"{index:09d}" for index in range(NUM_SAMPLES)]
    assert counter.num_skipped == 2 and counter.num_ok == NUM_SAMPLES


def test_missing_caption_and_bad_boxes_are_skipped(tmp_path):
    scenes = SyntheticScenes(4, seed=0, image_size=32)
    samples = [scenes[0], scenes[1] | {"caption": ""}, scenes[2] | {"boxes": [[1, 2, 3]]}, scenes[3]]
    paths = write_shards(samples, tmp_path, num_shards=1)
    counter = SkipCounter()
    assert _keys(load_image_text_stream(paths, skip_counter=counter)) == ["000000000", "000000003"]
    assert counter.counts() == {("missing_caption", paths[0]): 1, ("invalid_fields", paths[0]): 1}
    assert {reason: n for reason, n in counter.by_reason().items() if n} == {"missing_caption": 1, "invalid_fields": 1}


@pytest.mark.parametrize("shuffle_buffer", [None, 1])
def test_resume_from_state_dict_is_exact(corrupt_shards, shuffle_buffer):
    def stream():
        return load_image_text_stream(corrupt_shards, shuffle_buffer=shuffle_buffer, seed=3)

    full = stream()
    full.set_epoch(1)
    all_keys = _keys(full)
    for stop_after in (5, 17, 30):  # inside a shard, across the skipped samples, at a shard boundary
        first = stream()
        first.set_epoch(1)
        iterator = iter(first)
        seen = [next(iterator)["__key__"] for _ in range(stop_after)]
        state = first.state_dict()
        resumed = stream()
        resumed.set_epoch(1)
        resumed.load_state_dict(state)
        assert seen + _keys(resumed) == all_keys


def test_shuffling_permutes_and_reseeds_per_epoch(shard_dir):
    in_order = _keys(load_image_text_stream(shard_dir))
    shuffled = load_image_text_stream(shard_dir, shuffle_buffer=16, seed=0)
    epoch_0 = _keys(shuffled)
    shuffled.set_epoch(1)
    epoch_1 = _keys(shuffled)
    assert sorted(epoch_0) == sorted(epoch_1) == in_order
    assert len({tuple(in_order), tuple(epoch_0), tuple(epoch_1)}) == 3


def test_split_by_node_partitions_whole_shards(shard_dir):
    per_rank = [_keys(load_image_text_stream(shard_dir, rank=rank, world_size=2)) for rank in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == NUM_SAMPLES // 2
    assert sorted(per_rank[0] + per_rank[1]) == sorted(_keys(load_image_text_stream(shard_dir)))
    with pytest.raises(ValueError, match="both `rank` and `world_size`"):
        load_image_text_stream(shard_dir, rank=0)


def test_unknown_split_names_the_available_ones(shard_dir):
    with pytest.raises(ValueError, match=r"no split 'validation'; its splits are \['train'\]"):
        load_image_text_stream(shard_dir, split="validation")


def test_parquet_source_with_a_corrupt_row(tmp_path):
    import datasets

    scenes = SyntheticScenes(3, seed=0, image_size=32)
    buffers = []
    for sample in scenes:
        buffer = io.BytesIO()
        sample["image"].save(buffer, format="PNG")
        buffers.append(buffer.getvalue())
    table = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": payload, "path": None} for payload in [buffers[0], b"broken", buffers[2]]],
            "caption": [sample["caption"] for sample in scenes],
            "label": [sample["label"] for sample in scenes],
        },
        features=datasets.Features(
            {"image": datasets.Image(), "caption": datasets.Value("string"), "label": datasets.Value("int64")}
        ),
    )
    table.to_parquet(str(tmp_path / "data.parquet"))
    counter = SkipCounter()
    samples = list(load_image_text_stream(str(tmp_path / "*.parquet"), skip_counter=counter))
    assert [s["caption"] for s in samples] == [scenes[0]["caption"], scenes[2]["caption"]]
    assert [s["label"] for s in samples] == [scenes[0]["label"], scenes[2]["label"]]
    assert samples[0]["summary"] == samples[0]["caption"] and samples[0]["boxes"] == []
    assert counter.num_skipped == 1


def test_imagefolder_source(tmp_path):
    scenes = SyntheticScenes(2, seed=0, image_size=32)
    with open(tmp_path / "metadata.jsonl", "w") as metadata:
        for index, sample in enumerate(scenes):
            sample["image"].save(tmp_path / f"scene{index}.png")
            metadata.write(json.dumps({"file_name": f"scene{index}.png", "caption": sample["caption"]}) + "\n")
    samples = list(load_image_text_stream(tmp_path))
    assert sorted(s["caption"] for s in samples) == sorted(s["caption"] for s in scenes)
    assert all(s["image"].size == (32, 32) and s["__key__"].endswith(".png") for s in samples)


def test_image_stream_keeps_caption_less_samples_with_keypoints_and_skips_bad_ones(tmp_path):
    images = [scene["image"] for scene in _scenes()][:3]
    samples = [
        {"image": images[0], "keypoints": [[1.5, 2.0], [3.0, 4.25]], "label": 3},
        {"image": images[1]},
        {"image": images[2], "keypoints": [[1.0, 2.0, 3.0]]},  # not (x, y) pairs
    ]
    write_shards(samples, tmp_path, 1, image_format="png")
    counter = SkipCounter()
    out = list(load_image_stream(str(tmp_path), skip_counter=counter))
    assert [sample["keypoints"] for sample in out] == [[[1.5, 2.0], [3.0, 4.25]], []]
    assert [sample["caption"] for sample in out] == ["", ""]
    assert out[0]["label"] == 3 and out[1]["label"] == -1
    assert counter.by_reason()["invalid_fields"] == 1 and counter.num_skipped == 1
    # The image-text stream still drops the caption-less samples.
    assert list(load_image_text_stream(str(tmp_path))) == []


def test_fashion_mnist_shards_stream_every_image_with_its_label(tmp_path):
    if not fashion_mnist.DEFAULT_FASHION_MNIST_DIR.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist is not installed (`make data`)")
    paths = fashion_mnist.build_fashion_mnist(tmp_path, num_train=103, num_eval=20, num_shards=2, world_size=2)
    assert [len(paths["train"]), len(paths["eval"])] == [2, 2]
    samples = list(load_image_stream(str(tmp_path), split="train"))
    reference = fashion_mnist.load_fashion_mnist("train", limit=102)  # 103 // 2 shards * 2: the remainder dropped
    assert [sample["__key__"] for sample in samples] == [f"train-{index:05d}" for index in range(102)]
    assert [sample["label"] for sample in samples] == reference["label"]
    assert samples[5]["image"].convert("L").tobytes() == reference[5]["image"].tobytes()
    assert json.loads((tmp_path / "class_names.json").read_text())[0] == "T-shirt/top"
