import json

import numpy as np
import pytest

from hfvision.data import TuxpaintStamps, build_tuxpaint, find_tuxpaint_stamps, load_image_text_stream
from hfvision.data.tuxpaint import DEFAULT_STAMPS_DIR

needs_stamps = pytest.mark.skipif(
    not DEFAULT_STAMPS_DIR.is_dir(),
    reason=f"{DEFAULT_STAMPS_DIR} missing: run `apt-get install -y tuxpaint-stamps-default`",
)


def test_missing_package_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y tuxpaint-stamps-default"):
        find_tuxpaint_stamps(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="apt-get install"):
        TuxpaintStamps(stamps_dir=tmp_path / "nowhere")


@needs_stamps
def test_stamps_have_captions_and_no_mirror_twins():
    stamps = find_tuxpaint_stamps()
    assert len(stamps) > 700  # 785 captioned PNGs in Debian 12 tuxpaint-stamps-default 2022.06.04
    ladybug = next(stamp for stamp in stamps if stamp.stem == "animals/insects/cartoon/ladybug")
    assert ladybug.caption == "A ladybug." and ladybug.category == "animals"
    assert ladybug.attributes == "animals, insects, cartoon"
    assert not any(stamp.stem.endswith("_mirror") for stamp in stamps)


@needs_stamps
def test_split_is_by_image_and_fixed():
    train, held_out = TuxpaintStamps("train", seed=0), TuxpaintStamps("eval", seed=1)
    train_stems = {stamp.stem for stamp in train.stamps}
    held_out_stems = {stamp.stem for stamp in held_out.stamps}
    assert not train_stems & held_out_stems
    assert len(train_stems | held_out_stems) == len(find_tuxpaint_stamps())
    assert 0.1 < len(held_out_stems) / len(train_stems | held_out_stems) < 0.3
    assert train.class_names() == held_out.class_names()
    assert "natural forces" in train.class_names()


@needs_stamps
def test_samples_are_seeded_and_boxes_hold_the_stamp():
    first, second, reseeded = (TuxpaintStamps("eval", image_size=96, seed=seed) for seed in (0, 0, 1))
    for index in range(12):
        sample = first[index]
        np.testing.assert_array_equal(np.asarray(sample["image"]), np.asarray(second[index]["image"]))
        assert sample["image"].size == (96, 96) and sample["image"].mode == "RGB"
        assert first.class_names()[sample["label"]] in sample["attributes"]
        assert sample["summary"] and sample["summary"] in sample["caption"]
        [(x0, y0, x1, y1)] = sample["boxes"]
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
        assert max(x1 - x0, y1 - y0) >= 0.3 * 96
    assert any(not np.array_equal(np.asarray(first[i]["image"]), np.asarray(reseeded[i]["image"])) for i in range(12))


@needs_stamps
def test_stamp_pixels_lie_inside_the_box():
    # On a plain background, every pixel outside the box shows the background, up to the blend of the faint stamp
    # fringe (alpha <= 16 of 255) that the box leaves out.
    stamps = TuxpaintStamps("eval", image_size=64, renders_per_stamp=2)
    checked = 0
    for index in range(40):
        sample = stamps[index]
        pixels = np.asarray(sample["image"]).astype(int)
        corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
        if np.ptp(corners, axis=0).max() > 0:
            continue  # a gradient background
        x0, y0, x1, y1 = sample["boxes"][0]
        changed = np.abs(pixels - corners[0]).max(axis=-1) > 17
        changed[y0:y1, x0:x1] = False
        assert not changed.any()
        checked += 1
    assert checked >= 5


@needs_stamps
def test_build_tuxpaint_and_stream_it_back(tmp_path):
    paths = build_tuxpaint(tmp_path, renders_per_stamp=1, num_shards=4, image_size=48)
    class_names = json.loads((tmp_path / "class_names.json").read_text())
    info = json.loads((tmp_path / "build_info.json").read_text())
    assert len(paths["train"]) == len(paths["eval"]) == 4
    samples = list(load_image_text_stream(tmp_path, split="eval"))
    assert len(samples) == info["splits"]["eval"]["num_samples"] > 100
    assert {s["caption"] for s in samples} <= {stamp.caption for stamp in find_tuxpaint_stamps()}
    assert all(0 <= s["label"] < len(class_names) and len(s["boxes"]) == 1 for s in samples)
