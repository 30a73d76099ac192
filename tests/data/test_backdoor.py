"""Backdoor attacks as `datasets` transforms: exact trigger pixels, exact poisoned counts, split, test sets."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from PIL import Image

from hfvision.data import BackdoorAttack, stamp_trigger
from hfvision.data.backdoor import trigger_pattern


def toy_dataset(num_rows: int = 200, size: int = 32, seed: int = 0, mode: str = "L") -> datasets.Dataset:
    """Random gray (or RGB) images with labels cycling 0..9 in a shuffled order."""
    rng = np.random.default_rng(seed)
    shape = (num_rows, size, size) if mode == "L" else (num_rows, size, size, 3)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    labels = rng.permutation(np.arange(num_rows) % 10)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(pixel) for pixel in pixels], "label": labels.tolist()}, features=features
    )


def test_badnet_grid_pixels_exactly_as_the_official_code():
    images = np.full((2, 32, 32, 3), 128, dtype=np.uint8)
    stamped = stamp_trigger(images, "badnet_grid")
    expected = np.array([[0, 0, 255], [0, 255, 0], [255, 0, 255]])  # rows/cols 29..31
    for channel in range(3):
        assert np.array_equal(stamped[:, 29:, 29:, channel], np.broadcast_to(expected, (2, 3, 3)))
    untouched = np.ones((32, 32), dtype=bool)
    untouched[29:, 29:] = False
    assert np.all(stamped[:, untouched] == 128) and np.all(images == 128)  # nothing else, input not modified


def test_badnet_square_pixels():
    images = np.zeros((1, 32, 32), dtype=np.uint8)
    stamped = stamp_trigger(images, "badnet_sq")
    assert np.all(stamped[0, 27:31, 27:31] == 255)  # the official 4x4 white square at rows/cols 27..30
    assert stamped.sum() == 16 * 255


def test_blend_and_sig_are_the_80_20_mix():
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    for trigger in ("blend", "sig"):
        pattern = trigger_pattern(trigger, 32, 32, seed=5)
        expected = np.clip(np.rint(0.8 * images.astype(np.float64) + 0.2 * pattern), 0, 255).astype(np.uint8)
        assert np.array_equal(stamp_trigger(images, trigger, seed=5), expected)
    sig = trigger_pattern("sig", 32, 32)
    assert np.allclose(sig, sig[:1]) and sig.min() >= 0 and sig.max() <= 255  # horizontal sinusoid in [0, 255]
    assert not np.array_equal(trigger_pattern("blend", 8, 8, seed=0), trigger_pattern("blend", 8, 8, seed=1))


@pytest.mark.parametrize("ratio", [0.1, 0.13, 0.05])
def test_exactly_round_ratio_n_poisoned_and_relabelled_non_target_samples(ratio):
    dataset = toy_dataset(200)
    attack = BackdoorAttack(trigger="badnet_grid", target_label=3, poison_ratio=ratio, holdout_ratio=0.05)
    split = attack.poison(dataset)
    train, holdout = split["train"], split["holdout"]
    poisoned = np.asarray(train["poisoned"])
    assert poisoned.sum() == round(ratio * 200)
    original, labels = np.asarray(train["original_label"]), np.asarray(train["label"])
    assert np.all(original[poisoned] != 3) and np.all(labels[poisoned] == 3)  # non-target, relabelled
    assert np.array_equal(labels[~poisoned], original[~poisoned])
    # the official rule: the *first* eligible images in index order; the last 5% held out clean
    eligible = [index for index, label in enumerate(dataset["label"][:190]) if label != 3]
    assert np.asarray(train["index"])[poisoned].tolist() == eligible[: round(ratio * 200)]
    assert holdout["index"] == list(range(190, 200)) and not any(holdout["poisoned"])
    assert holdout["label"] == dataset["label"][190:]
    # the stamped rows carry the grid; the others are the source images
    first = int(np.flatnonzero(poisoned)[0])
    image = np.asarray(train[first]["image"])
    assert np.array_equal(image[29:, 29:], [[0, 0, 255], [0, 255, 0], [255, 0, 255]])
    clean = int(np.flatnonzero(~poisoned)[0])
    assert np.array_equal(np.asarray(train[clean]["image"]), np.asarray(dataset[clean]["image"]))


def test_random_selection_is_reproducible_and_sig_is_clean_label():
    dataset = toy_dataset(200, mode="RGB")
    labels = dataset["label"]
    first = BackdoorAttack(selection="random", seed=1).split(labels).poisoned_indices
    again = BackdoorAttack(selection="random", seed=1).split(labels).poisoned_indices
    other = BackdoorAttack(selection="random", seed=2).split(labels).poisoned_indices
    assert np.array_equal(first, again) and not np.array_equal(first, other) and len(first) == 20
    train = BackdoorAttack(trigger="sig", target_label=0, poison_ratio=0.05).poison(dataset)["train"]
    poisoned = np.asarray(train["poisoned"])
    assert poisoned.sum() == 10 and np.all(np.asarray(train["label"])[poisoned] == 0)  # target images, kept labels
    assert train["label"] == train["original_label"]


def test_triggered_test_set_holds_every_non_target_image_with_its_true_label():
    dataset = toy_dataset(50)
    triggered = BackdoorAttack(trigger="badnet_sq", target_label=2).triggered_test_set(dataset)
    source = [index for index, label in enumerate(dataset["label"]) if label != 2]
    assert triggered["index"] == source and all(triggered["poisoned"])
    assert triggered["label"] == [dataset["label"][index] for index in source]
    assert np.all(np.asarray(triggered[0]["image"])[27:31, 27:31] == 255)


def test_bad_inputs():
    with pytest.raises(ValueError, match="trigger"):
        BackdoorAttack(trigger="trojan")
    with pytest.raises(ValueError, match="poison_ratio"):
        BackdoorAttack(poison_ratio=1.5)
    with pytest.raises(TypeError, match="target_label"):
        BackdoorAttack(target_label="0")
    with pytest.raises(ValueError, match="poison_ratio"):
        BackdoorAttack(poison_ratio=0.95, target_label=0).split(np.arange(100) % 10)  # not enough non-target images
    with pytest.raises(ValueError, match="images"):
        stamp_trigger(np.zeros((1, 32, 32), dtype=np.float32), "badnet_grid")
    with pytest.raises(ValueError, match="column"):
        BackdoorAttack(label_column="labels").poison(toy_dataset(20))
    with pytest.raises(TypeError, match="dataset"):
        BackdoorAttack().poison([1, 2, 3])
