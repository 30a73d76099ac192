"""The stick-figure generator: determinism, ranges, that the skeleton is drawn where the keypoints say, and shards."""

import json
import tarfile
import time

import numpy as np
import pytest
from datasets import load_dataset

from hfvision.data import STICK_FIGURE_BONES, STICK_FIGURE_JOINTS, StickFigures, build_stick_figures
from hfvision.data.stick_figures import DARK_ON_LIGHT


def _is_tree(num_nodes: int, edges) -> bool:
    parent = list(range(num_nodes))

    def root(node):
        while parent[node] != node:
            node = parent[node]
        return node

    for a, b in edges:
        if root(a) == root(b):
            return False
        parent[root(a)] = root(b)
    return len(edges) == num_nodes - 1


def test_skeleton_is_a_tree_over_named_joints():
    assert len(STICK_FIGURE_JOINTS) == len(set(STICK_FIGURE_JOINTS)) == 7
    assert _is_tree(len(STICK_FIGURE_JOINTS), STICK_FIGURE_BONES)
    named = {frozenset((STICK_FIGURE_JOINTS[a], STICK_FIGURE_JOINTS[b])) for a, b in STICK_FIGURE_BONES}
    assert frozenset(("neck", "left_hand")) in named and frozenset(("pelvis", "right_foot")) in named


def test_deterministic_per_seed_split_and_index():
    figures = StickFigures(10, image_size=48, seed=3)
    again = StickFigures(10, image_size=48, seed=3)
    for index in (0, 7, -1):
        first, second = figures[index], again[index]
        np.testing.assert_array_equal(np.asarray(first["image"]), np.asarray(second["image"]))
        np.testing.assert_array_equal(first["keypoints"], second["keypoints"])
    assert figures[-1]["__key__"] == "train_000000009"
    # any index can be drawn alone: the same figure whatever the collection's length or access order
    np.testing.assert_array_equal(StickFigures(100, image_size=48, seed=3)[7]["keypoints"], figures[7]["keypoints"])
    other_seed, other_split = (
        StickFigures(10, image_size=48, seed=4),
        StickFigures(10, image_size=48, seed=3, split="eval"),
    )
    assert not np.array_equal(other_seed[0]["keypoints"], figures[0]["keypoints"])
    assert not np.array_equal(other_split[0]["keypoints"], figures[0]["keypoints"])
    with pytest.raises(IndexError):
        figures[10]


def test_sample_fields_and_ranges():
    size = 64
    figures = StickFigures(200, image_size=size, seed=0)
    samples = [figures[index] for index in range(200)]
    keypoints = np.stack([sample["keypoints"] for sample in samples])  # (N, J, 2)
    assert keypoints.dtype == np.float32 and keypoints.shape == (200, len(STICK_FIGURE_JOINTS), 2)
    assert keypoints.min() >= 1.0 and keypoints.max() <= size - 2.0  # inside the image, with its drawing margin
    heights = np.array([sample["figure_height"] for sample in samples])
    assert heights.min() > 0.3 * size and heights.max() <= 0.8 * size
    assert {sample["background"] for sample in samples} == {"flat", "gradient", "noise"}
    assert all(sample["image"].mode == "RGB" and sample["image"].size == (size, size) for sample in samples)
    assert samples[0]["bones"] == [list(bone) for bone in STICK_FIGURE_BONES]
    # Poses vary: every joint's position spreads over the image, and limbs move relative to the torso.
    assert (keypoints.std(axis=0) > 3.0).all()
    left_hand = keypoints[:, STICK_FIGURE_JOINTS.index("left_hand")] - keypoints[:, STICK_FIGURE_JOINTS.index("neck")]
    assert np.ptp(np.arctan2(left_hand[:, 1], left_hand[:, 0])) > 2.0  # radians
    # Left stays on the figure's left: in the torso frame, the left hand lies on the opposite side to the right hand.
    torso = keypoints[:, 1] - keypoints[:, 2]  # neck - pelvis
    right_hand = keypoints[:, 4] - keypoints[:, 1]
    side = np.sign(np.cross(torso, left_hand)) * np.sign(np.cross(torso, right_hand))
    assert (side < 0).mean() > 0.9


def test_bones_are_drawn_in_the_figure_colour():
    """Pixels along every bone have the figure's colour; the background far from the figure does not."""
    figures = StickFigures(20, image_size=64, seed=1)
    for index in range(20):
        sample = figures[index]
        pixels = np.asarray(sample["image"]).astype(np.int64)
        keypoints = sample["keypoints"].astype(np.float64)
        along = np.linspace(0.0, 1.0, 9)[:, None]
        on_bones = np.concatenate([keypoints[a] + along * (keypoints[b] - keypoints[a]) for a, b in STICK_FIGURE_BONES])
        colours = pixels[np.rint(on_bones[:, 1]).astype(int), np.rint(on_bones[:, 0]).astype(int)]  # (9B, 3)
        # Limbs are >= 2.9 px wide, so the pixel nearest any point of a bone is fully covered: exactly one colour.
        assert (colours == colours[0]).all(), f"figure {index}: bone pixels are not one colour"
        # Pixels more than 6 px from every bone and from the head are background, far from the figure's colour.
        yy, xx = np.mgrid[:64, :64]
        grid = np.stack([xx, yy], -1).reshape(-1, 1, 2).astype(np.float64)
        far = (np.linalg.norm(grid - on_bones[None], axis=-1).min(1) > 12).reshape(64, 64)
        distance = np.linalg.norm(pixels[far] - colours[0], axis=-1)
        assert far.sum() > 500 and distance.min() > 80, f"figure {index}: background too close to the figure colour"


def test_fixed_colors_leave_only_the_pose_varying():
    """With `colors`, bones have the figure colour and flat backgrounds the background colour (+- the light noise);
    textured backgrounds still keep their contrast with the figure."""
    figure_colour, background_colour = np.array(DARK_ON_LIGHT)
    flat = StickFigures(10, image_size=64, seed=2, backgrounds=("flat",), colors=DARK_ON_LIGHT)
    for index in range(10):
        sample = flat[index]
        pixels = np.asarray(sample["image"]).astype(np.int64)
        neck = np.rint(sample["keypoints"][1]).astype(int)
        assert (pixels[neck[1], neck[0]] == figure_colour).all()
        assert np.abs(pixels[0, 0] - background_colour).max() <= 4
    for kind in ("gradient", "noise"):
        sample = StickFigures(1, image_size=64, seed=3, backgrounds=(kind,), colors=DARK_ON_LIGHT)[0]
        pixels = np.asarray(sample["image"]).astype(np.float64)
        yy, xx = np.mgrid[:64, :64]
        joints = sample["keypoints"].astype(np.float64)
        far = np.linalg.norm(np.stack([xx, yy], -1)[:, :, None] - joints, axis=-1).min(-1) > 20
        assert far.sum() > 100
        assert np.linalg.norm(pixels[far] - figure_colour, axis=-1).min() > 100
    with pytest.raises(ValueError, match="colors"):
        StickFigures(4, colors=((0, 0, 0),))


def test_renders_quickly():
    figures = StickFigures(300, image_size=64, seed=0)
    start = time.process_time()  # CPU time: the rendering's own cost, not how busy the machine's other jobs keep it
    for index in range(300):
        figures[index]
    assert time.process_time() - start < 3.0  # ~0.2 s here; 2000 figures take a few seconds


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_samples"):
        StickFigures(0)
    with pytest.raises(ValueError, match="image_size"):
        StickFigures(4, image_size=16)
    with pytest.raises(ValueError, match="backgrounds"):
        StickFigures(4, backgrounds=("checkerboard",))
    with pytest.raises(ValueError, match="max_rotation"):
        StickFigures(4, max_rotation=200)
    with pytest.raises(ValueError, match="split"):
        StickFigures(4, split="train.v2")


def test_build_writes_readable_shards_and_skeleton(tmp_path):
    paths = build_stick_figures(
        tmp_path, num_train=12, num_eval=4, image_size=32, seed=2, num_shards=2, num_eval_shards=1
    )
    assert len(paths["train"]) == 2 and len(paths["eval"]) == 1
    skeleton = json.loads((tmp_path / "skeleton.json").read_text())
    assert skeleton == {"joints": list(STICK_FIGURE_JOINTS), "bones": [list(bone) for bone in STICK_FIGURE_BONES]}
    info = json.loads((tmp_path / "build_info.json").read_text())
    assert info["splits"]["train"] == {"num_shards": 2, "num_samples": 12}
    with tarfile.open(paths["train"][0]) as archive:
        assert sorted(archive.getnames())[:2] == ["train_000000000.json", "train_000000000.png"]

    stream = load_dataset("webdataset", data_files={"eval": paths["eval"]}, split="eval", streaming=True)
    rows = list(stream)
    expected = StickFigures(4, image_size=32, seed=2, split="eval")
    assert [row["__key__"] for row in rows] == [f"eval_{index:09d}" for index in range(4)]
    for row, index in zip(rows, range(4), strict=True):
        sample = expected[index]
        np.testing.assert_array_equal(np.asarray(row["png"]), np.asarray(sample["image"]))  # png is lossless
        np.testing.assert_allclose(np.asarray(row["json"]["keypoints"]), sample["keypoints"], rtol=1e-6)
        assert row["json"]["figure_height"] == pytest.approx(sample["figure_height"])
        assert row["json"]["bones"] == skeleton["bones"]
