"""Backdoor attacks as `datasets` transforms: poisoned training sets, clean holdouts and triggered test sets.

The attacks of Trap and Replace (Wang et al., NeurIPS 2022, arXiv 2210.06428; official `datasets/cifar.py` of
https://github.com/VITA-Group/Trap-and-Replace-Backdoor-Defense), stamped on uint8 pixels before any augmentation:

| trigger | kind | what is stamped (H x W image, every channel) |
|---|---|---|
| `badnet_grid` | poison-label | a 3x3 black/white pattern in rows/cols H-3..H-1, W-3..W-1 (29-31 at 32x32) |
| `badnet_sq` | poison-label | a 4x4 white square in rows/cols H-5..H-2, W-5..W-2 (27-30 at 32x32) |
| `blend` | poison-label | (1 - alpha) * image + alpha * pattern, alpha 0.2, pattern uniform noise seeded by `seed` |
| `sig` | clean-label | (1 - alpha) * image + alpha * a horizontal sinusoid (6 periods), target class only |

The split follows the official code: the holdout is the *last* `round(holdout_ratio * N)` images (kept clean, for
stage 2 of the defence); `round(poison_ratio * N)` of the remaining images are poisoned, with N the size of the whole
training set (holdout included). Poison-label attacks poison non-target images and relabel them to `target_label`;
the clean-label SIG poisons target-class images and keeps their labels (at most as many as the target class has, as
the official code caps it). `selection="first"` takes the first eligible images in index order (the official rule);
`"random"` draws them with `seed`. Every row records `index` (its row in the source), `poisoned` and `original_label`,
so the split is reproducible and auditable. The triggered test set stamps every *non-target* test image and keeps its
true label (attack success rate: the share of them predicted as the target).

Deviations: the official blend and SIG patterns are image files in its repository; here blend uses seeded uniform
noise (as Chen et al. 2017's random-pattern blend) and SIG a generated sinusoid 0.5 + 0.5 sin(2 pi 6 x / W) in
[0, 255], both blended with the official 0.8 / 0.2 weights. Counts use `round` (the official code truncates with
`int`; equal for the sizes used here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
from PIL import Image

__all__ = [
    "CLEAN_LABEL_TRIGGERS",
    "TRIGGERS",
    "BackdoorAttack",
    "BackdoorSplit",
    "stamp_trigger",
    "trigger_pattern",
]

TRIGGERS = ("badnet_grid", "badnet_sq", "blend", "sig")
CLEAN_LABEL_TRIGGERS = ("sig",)
SELECTIONS = ("first", "random")
# The official 3x3 grid, rows H-3..H-1 (top to bottom), cols W-3..W-1 (left to right).
BADNET_GRID = np.array([[0, 0, 255], [0, 255, 0], [255, 0, 255]], dtype=np.uint8)
SIG_PERIODS = 6


def trigger_pattern(trigger: str, height: int, width: int, seed: int = 0) -> np.ndarray | None:
    """The blended pattern of `blend` / `sig` as a `(H, W)` float array in [0, 255]; None for the stamped ones.

    Args:
        trigger: one of `TRIGGERS`.
        height: image height.
        width: image width.
        seed: seed of the `blend` noise.
    """
    if trigger not in TRIGGERS:
        raise ValueError(f"`trigger` must be one of {TRIGGERS}, got {trigger!r}.")
    if trigger == "blend":
        return np.random.default_rng(seed).uniform(0, 255, (height, width))
    if trigger == "sig":
        columns = 127.5 + 127.5 * np.sin(2 * np.pi * SIG_PERIODS * np.arange(width) / width)
        return np.broadcast_to(columns, (height, width)).copy()
    return None


def stamp_trigger(images: np.ndarray, trigger: str, *, alpha: float = 0.2, seed: int = 0) -> np.ndarray:
    """Stamp `trigger` on a batch of uint8 images (vectorised; the input is not modified).

    Args:
        images: `(N, H, W)` or `(N, H, W, C)` uint8 pixels.
        trigger: one of `TRIGGERS`.
        alpha: weight of the pattern for `blend` and `sig`.
        seed: seed of the `blend` noise.

    Returns:
        The stamped images, same shape, uint8.
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(
            "`images` must be a uint8 numpy array of shape (N, H, W) or (N, H, W, C), got "
            f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}."
        )
    if trigger not in TRIGGERS:
        raise ValueError(f"`trigger` must be one of {TRIGGERS}, got {trigger!r}.")
    if not 0 <= alpha <= 1:
        raise ValueError(f"`alpha` must be in [0, 1], got {alpha}.")
    height, width = images.shape[1:3]
    if height < 5 or width < 5:
        raise ValueError(f"`images` must be at least 5x5 to hold a trigger, got {height}x{width}.")
    stamped = images.copy()
    grid_view = stamped if images.ndim == 4 else stamped[..., None]  # (N, H, W, C) view of the same memory
    if trigger == "badnet_grid":
        grid_view[:, height - 3 :, width - 3 :, :] = BADNET_GRID[None, :, :, None]
    elif trigger == "badnet_sq":
        grid_view[:, height - 5 : height - 1, width - 5 : width - 1, :] = 255
    else:
        pattern = trigger_pattern(trigger, height, width, seed)[None, :, :, None]  # (1, H, W, 1)
        blended = (1 - alpha) * grid_view.astype(np.float64) + alpha * pattern
        grid_view[...] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return stamped


def _to_array(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB"):
            raise ValueError(f"`images` must be 8-bit L or RGB images to stamp a trigger, got mode {image.mode!r}.")
        return np.asarray(image)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"`images` must hold uint8 pixels to stamp a trigger, got {array.dtype}.")
    return array


def _stamp_column(images: Sequence[Any], trigger: str, alpha: float, seed: int) -> list[Image.Image]:
    """Stamp a column of PIL images / arrays; equal sizes are stamped as one array."""
    arrays = [_to_array(image) for image in images]
    if not arrays:
        return []
    if len({array.shape for array in arrays}) == 1:
        stamped = stamp_trigger(np.stack(arrays), trigger, alpha=alpha, seed=seed)
        return [Image.fromarray(array) for array in stamped]
    return [Image.fromarray(stamp_trigger(array[None], trigger, alpha=alpha, seed=seed)[0]) for array in arrays]


@dataclass
class BackdoorSplit:
    """Which rows of a training set are held out and which are poisoned (all arrays index the source rows).

    Attributes:
        train_indices: `(N_train,)` rows of the (poisoned) training split, in order.
        holdout_indices: `(N_holdout,)` the last rows, kept clean.
        poisoned_indices: `(N_poisoned,)` rows that get the trigger (a subset of `train_indices`).
    """

    train_indices: np.ndarray
    holdout_indices: np.ndarray
    poisoned_indices: np.ndarray


@dataclass
class BackdoorAttack:
    """A backdoor attack on an image classification set, applied with `datasets.map`.

    Args:
        trigger: one of `TRIGGERS` (`badnet_grid`, `badnet_sq`, `blend`, `sig`).
        target_label: the class triggered images should be classified as.
        poison_ratio: poisoned images as a share of the whole training set (official: 0.1).
        holdout_ratio: share of the training set held out clean at its end (official: 0.05).
        selection: `"first"` eligible images in index order (official) or `"random"` (drawn with `seed`).
        seed: seed of the `random` selection and of the `blend` noise.
        alpha: pattern weight of `blend` and `sig` (official: 0.2).
        image_column: the images' column.
        label_column: the labels' column.
    """

    trigger: str = "badnet_grid"
    target_label: int = 0
    poison_ratio: float = 0.1
    holdout_ratio: float = 0.05
    selection: str = "first"
    seed: int = 0
    alpha: float = 0.2
    image_column: str = "image"
    label_column: str = "label"

    def __post_init__(self) -> None:
        if self.trigger not in TRIGGERS:
            raise ValueError(f"`trigger` must be one of {TRIGGERS}, got {self.trigger!r}.")
        if self.selection not in SELECTIONS:
            raise ValueError(f"`selection` must be one of {SELECTIONS}, got {self.selection!r}.")
        if isinstance(self.target_label, bool) or not isinstance(self.target_label, (int, np.integer)):
            raise TypeError(f"`target_label` must be an int, got {type(self.target_label).__name__}.")
        if self.target_label < 0:
            raise ValueError(f"`target_label` must be >= 0, got {self.target_label}.")
        if not 0 <= self.poison_ratio <= 1:
            raise ValueError(f"`poison_ratio` must be in [0, 1], got {self.poison_ratio}.")
        if not 0 <= self.holdout_ratio < 1:
            raise ValueError(f"`holdout_ratio` must be in [0, 1), got {self.holdout_ratio}.")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"`alpha` must be in [0, 1], got {self.alpha}.")

    @property
    def clean_label(self) -> bool:
        """Whether the attack keeps the labels (poisons target-class images only)."""
        return self.trigger in CLEAN_LABEL_TRIGGERS

    def split(self, labels: Sequence[int] | np.ndarray) -> BackdoorSplit:
        """Plan the holdout and the poisoned rows from the training labels alone.

        Raises:
            ValueError: a poison-label attack with fewer eligible (non-target, non-holdout) images than
                `round(poison_ratio * N)`.
        """
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"`labels` must be a 1-D sequence of ints, got {labels.dtype} {labels.shape}.")
        num_rows = len(labels)
        num_holdout = round(self.holdout_ratio * num_rows)
        train_indices = np.arange(num_rows - num_holdout)
        holdout_indices = np.arange(num_rows - num_holdout, num_rows)
        train_labels = labels[train_indices]
        eligible = train_indices[(train_labels == self.target_label) == self.clean_label]
        num_poisoned = round(self.poison_ratio * num_rows)
        if self.clean_label:
            num_poisoned = min(num_poisoned, len(eligible))  # the official cap: the target class's size
        elif num_poisoned > len(eligible):
            raise ValueError(
                f"`poison_ratio` {self.poison_ratio} asks for {num_poisoned} poisoned images, but only "
                f"{len(eligible)} non-target images lie outside the holdout."
            )
        if self.selection == "first":
            poisoned = eligible[:num_poisoned]
        else:
            poisoned = np.sort(np.random.default_rng(self.seed).choice(eligible, num_poisoned, replace=False))
        return BackdoorSplit(train_indices, holdout_indices, poisoned.astype(np.int64))

    def _poison_batch(
        self, batch: dict[str, list], indices: list[int], poisoned: np.ndarray, relabel: bool = True
    ) -> dict[str, list]:
        """`datasets.map` function (batched, with indices): stamp (and, poison-label, relabel) the planned rows."""
        hit = np.isin(np.asarray(indices), poisoned)
        labels = np.asarray(batch[self.label_column])
        images = list(batch[self.image_column])
        rows = np.flatnonzero(hit)
        stamped = _stamp_column([images[row] for row in rows], self.trigger, self.alpha, self.seed)
        for row, image in zip(rows, stamped, strict=True):
            images[row] = image
        new_labels = labels.copy()
        if relabel and not self.clean_label:
            new_labels[hit] = self.target_label
        return {
            self.image_column: images,
            self.label_column: new_labels.tolist(),
            "original_label": labels.tolist(),
            "poisoned": hit.tolist(),
            "index": list(indices),
        }

    def poison(self, dataset: datasets.Dataset, **map_kwargs: Any) -> datasets.DatasetDict:
        """The poisoned training split and the clean holdout of `dataset`.

        Args:
            dataset: a training set with `image_column` (PIL images or uint8 arrays) and `label_column`.
            map_kwargs: passed on to `datasets.Dataset.map` (e.g. `num_proc`, `batch_size`).

        Returns:
            `DatasetDict(train=..., holdout=...)`, both with the extra columns `index`, `poisoned` and
            `original_label` (in the holdout `poisoned` is all False).
        """
        self._check_columns(dataset)
        plan = self.split(dataset[self.label_column])
        marked = dataset.map(
            self._poison_batch,
            batched=True,
            with_indices=True,
            fn_kwargs={"poisoned": plan.poisoned_indices},
            desc=f"poisoning ({self.trigger})",
            **map_kwargs,
        )
        return datasets.DatasetDict(
            train=marked.select(plan.train_indices), holdout=marked.select(plan.holdout_indices)
        )

    def triggered_test_set(self, dataset: datasets.Dataset, **map_kwargs: Any) -> datasets.Dataset:
        """Every non-target image of `dataset`, stamped, with its true label (for the attack success rate).

        Returns:
            A dataset with `index`, `poisoned` (all True) and `original_label` (= `label_column`) columns.
        """
        self._check_columns(dataset)
        labels = np.asarray(dataset[self.label_column])
        source = np.flatnonzero(labels != self.target_label)
        subset = dataset.select(source)
        triggered = subset.map(
            self._poison_batch,
            batched=True,
            with_indices=True,
            fn_kwargs={"poisoned": np.arange(len(subset)), "relabel": False},
            desc=f"triggering test set ({self.trigger})",
            **map_kwargs,
        )
        return triggered.remove_columns("index").add_column("index", source.tolist())  # rows of the source set

    def _check_columns(self, dataset: Any) -> None:
        if not isinstance(dataset, datasets.Dataset):
            raise TypeError(f"`dataset` must be a datasets.Dataset, got {type(dataset).__name__}.")
        missing = [name for name in (self.image_column, self.label_column) if name not in dataset.column_names]
        if missing:
            raise ValueError(f"`dataset` lacks the column(s) {missing}; it has {dataset.column_names}.")
