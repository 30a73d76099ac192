import numpy as np
import pytest

from hfvision.data import SyntheticScenes
from hfvision.data.synthetic_scenes import COLOURS, POSITIONS, SHAPES


def _pixels(sample):
    return np.asarray(sample["image"])


def test_same_seed_gives_identical_pixels_and_texts():
    first, second = SyntheticScenes(20, seed=3), SyntheticScenes(20, seed=3)
    for index in range(20):
        a, b = first[index], second[index]
        np.testing.assert_array_equal(_pixels(a), _pixels(b))
        assert {k: v for k, v in a.items() if k != "image"} == {k: v for k, v in b.items() if k != "image"}


def test_index_access_is_order_independent():
    scenes = SyntheticScenes(10, seed=1)
    backwards = [scenes[index] for index in reversed(range(10))][::-1]
    for forward, backward in zip(scenes, backwards, strict=True):
        np.testing.assert_array_equal(_pixels(forward), _pixels(backward))
        assert forward["caption"] == backward["caption"]


def test_different_seed_or_split_gives_different_scenes():
    base = SyntheticScenes(10, seed=0)
    for other in (SyntheticScenes(10, seed=1), SyntheticScenes(10, seed=0, split="eval")):
        assert [s["caption"] for s in base] != [s["caption"] for s in other]
        assert any(not np.array_equal(_pixels(a), _pixels(b)) for a, b in zip(base, other, strict=True))


def test_sample_fields_and_text_views_agree():
    scenes = SyntheticScenes(50, seed=0, image_size=48)
    names = scenes.class_names()
    assert len(names) == len(SHAPES) * len(COLOURS) and names[0] == "red circle"
    for sample in scenes:
        assert sample["image"].mode == "RGB" and sample["image"].size == (48, 48)
        num_objects = len(sample["boxes"])
        assert 1 <= num_objects <= 3 and len(sample["object_labels"]) == num_objects
        assert sample["label"] == sample["object_labels"][0]
        object_names = [names[label] for label in sample["object_labels"]]
        assert sample["attributes"] == ", ".join(object_names)
        for name in object_names:
            assert name in sample["summary"] and name in sample["caption"]
        assert sum(phrase in sample["caption"] for _, phrase in POSITIONS.values()) == num_objects
        assert sample["mismatched"] is False


def test_mismatch_fraction_is_exact_and_flags_match_the_swapped_texts():
    clean = SyntheticScenes(200, seed=5)
    noisy = SyntheticScenes(200, seed=5, mismatch_fraction=0.3)
    flags = [sample["mismatched"] for sample in noisy]
    assert sum(flags) == 60
    for clean_sample, noisy_sample, flag in zip(clean, noisy, flags, strict=True):
        # The image, boxes and labels never change; the texts change exactly when flagged.
        np.testing.assert_array_equal(_pixels(clean_sample), _pixels(noisy_sample))
        assert clean_sample["boxes"] == noisy_sample["boxes"]
        assert clean_sample["label"] == noisy_sample["label"]
        assert (clean_sample["caption"] != noisy_sample["caption"]) == flag
        assert clean_sample["attributes"] == noisy_sample["attributes"]  # the image's tags, never swapped
        if not flag:
            assert clean_sample["summary"] == noisy_sample["summary"]


def test_full_mismatch_swaps_caption_and_summary_but_attributes_still_name_the_images_objects():
    """The paper's attribute text A is a detector's tags of the image, so caption noise must not reach it: at
    mismatch 1.0 every caption and summary is another scene's (the same donor for both), every A the image's own."""
    num = 120
    clean = SyntheticScenes(num, seed=7)
    noisy = SyntheticScenes(num, seed=7, mismatch_fraction=1.0)
    names = clean.class_names()
    clean_texts = [(sample["caption"], sample["summary"]) for sample in clean]
    for index, sample in enumerate(noisy):
        assert sample["mismatched"] is True
        own_objects = [names[label] for label in sample["object_labels"]]
        assert sample["attributes"] == ", ".join(own_objects)
        assert sample["caption"] != clean_texts[index][0]
        donors = [j for j, (caption, _) in enumerate(clean_texts) if caption == sample["caption"] and j != index]
        assert donors, f"scene {index}: the caption is no other scene's"
        assert all(clean_texts[j][1] == sample["summary"] for j in donors)  # summary written from that caption
    # The swapped captions name other objects than the image's in most scenes, while A never does.
    foreign = sum(any(name not in sample["caption"] for name in sample["attributes"].split(", ")) for sample in noisy)
    assert foreign > 0.8 * num


def test_boxes_are_tight_around_each_objects_pixels():
    scenes = SyntheticScenes(60, seed=2, image_size=64)
    names = scenes.class_names()
    for sample in scenes:
        pixels = _pixels(sample)
        for box, label in zip(sample["boxes"], sample["object_labels"], strict=True):
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            colour = COLOURS[names[label].split()[0]]
            # Colours are distinct within a scene and never occur in the near-grey background.
            ys, xs = np.nonzero(np.all(pixels == colour, axis=-1))
            assert len(xs) > 20
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="max_objects"):
        SyntheticScenes(10, max_objects=6)
    with pytest.raises(ValueError, match="mismatch_fraction"):
        SyntheticScenes(10, mismatch_fraction=1.5)
    with pytest.raises(ValueError, match="unknown shapes"):
        SyntheticScenes(10, shapes=("hexagon",))
    with pytest.raises(IndexError):
        SyntheticScenes(10)[10]
