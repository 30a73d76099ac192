"""Shift consistency of a classifier, as an `evaluate` metric module.

The measure of shift-invariance papers (Zhang 2019; Chaman & Dokmanic 2021; LPS, Rojas-Gomez et al. 2022, arXiv
2210.08001): how often the predicted class stays the same when the input image is shifted. Two kinds of shift:

- "circular": the image is rolled (`torch.roll`), content leaving one border enters at the other; LPS and APS
  networks with circular padding are exactly consistent (100%).
- "standard": the content moves and the uncovered border is zero-filled (pad, then crop); no model is exact.

The metric takes, per image, the predicted class under each of S shifts (S >= 2, the same shifts for every image),
so it works for the official two-random-shifts protocol (S = 2) as for all shifts in a window (e.g. 49 for
[-3, 3]^2). `ShiftConsistency.shift_images` makes the shifted copies (numpy arrays or torch tensors).
"""

import itertools

import datasets
import evaluate
import numpy as np

SHIFT_MODES = ("circular", "standard")

_DESCRIPTION = """\
Shift consistency: the fraction of images whose predicted class is the same under every given shift
(`<mode>_consistency`), the mean agreement over pairs of shifts (`<mode>_pairwise_consistency`; with two random
shifts per image it is the official LPS / APS / BlurPool number), and, with labels, the accuracy over all shifted
copies. Load with `config_name="circular"` (default) or `"standard"` to name the kind of shift.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (N, S) predicted class ids of N images, each under the same S >= 2 shifts.
    references: (N,) true class ids, or -1 where unknown (then `accuracy` is left out).

Returns:
    A dict with `<mode>_consistency`, `<mode>_pairwise_consistency` and (if every reference is >= 0) `accuracy`,
    floats in [0, 1]; `<mode>` is the loaded config name, "circular" or "standard".

Examples:
    >>> metric = evaluate.load("hfvision/metrics/shift_consistency", config_name="circular")
    >>> metric.compute(predictions=[[1, 1, 1], [0, 2, 0]], references=[1, 0])
    {'circular_consistency': 0.5, 'circular_pairwise_consistency': 0.6666666666666666, 'accuracy': 0.8333333333333334}
"""

_CITATION = """\
@inproceedings{rojas2022learnable,
  title={Learnable Polyphase Sampling for Shift Invariant and Equivariant Convolutional Networks},
  author={Rojas-Gomez, Renan A. and Lim, Teck-Yian and Schwing, Alexander G. and Do, Minh N. and Yeh, Raymond A.},
  booktitle={Advances in Neural Information Processing Systems},
  year={2022}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ShiftConsistency(evaluate.Metric):
    """Agreement of a classifier's predictions across shifted copies of each image."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in (*SHIFT_MODES, "default"):
            raise ValueError(f"`config_name` must be one of {SHIFT_MODES}, got {self.config_name!r}")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
        )

    @property
    def mode(self) -> str:
        """The kind of shift the results are named after ("circular" unless loaded as "standard")."""
        return "standard" if self.config_name == "standard" else "circular"

    @staticmethod
    def shift_images(images, shift: tuple[int, int], mode: str = "circular"):
        """Shift `(..., H, W)` images (numpy array or torch tensor) by `(dy, dx)` pixels (down, right).

        Args:
            images: the images; the last two axes are height and width.
            shift: rows and columns to move the content by; negative moves up / left.
            mode: "circular" rolls the content around; "standard" zero-fills the uncovered border.

        Returns:
            The shifted images, same type, shape and dtype.
        """
        if mode not in SHIFT_MODES:
            raise ValueError(f"`mode` must be one of {SHIFT_MODES}, got {mode!r}")
        dy, dx = (int(value) for value in shift)
        if mode == "circular":
            if isinstance(images, np.ndarray):
                return np.roll(images, (dy, dx), axis=(-2, -1))
            return images.roll((dy, dx), dims=(-2, -1))
        height, width = images.shape[-2:]
        if abs(dy) >= height or abs(dx) >= width:
            raise ValueError(f"a standard shift must be smaller than the image ({height}x{width}), got {shift}")
        shifted = images * 0  # zeros of the same type, dtype and device
        target = (..., slice(max(dy, 0), height + min(dy, 0)), slice(max(dx, 0), width + min(dx, 0)))
        source = (..., slice(max(-dy, 0), height + min(-dy, 0)), slice(max(-dx, 0), width + min(-dx, 0)))
        shifted[target] = images[source]
        return shifted

    def _compute(self, predictions, references) -> dict[str, float]:
        labels = np.asarray(references, dtype=np.int64)
        try:
            classes = np.asarray(predictions, dtype=np.int64)
        except ValueError as error:  # ragged rows
            raise ValueError("every image needs its prediction under the same number of shifts") from error
        if classes.ndim != 2 or classes.shape[1] < 2 or len(classes) == 0:
            raise ValueError(f"`predictions` must be (N, S) class ids with S >= 2 shifts, got shape {classes.shape}")
        all_agree = (classes == classes[:, :1]).all(axis=1)  # (N,)
        pairs = list(itertools.combinations(range(classes.shape[1]), 2))
        pair_agreement = np.mean([classes[:, i] == classes[:, j] for i, j in pairs], axis=0)  # (N,)
        results = {
            f"{self.mode}_consistency": float(all_agree.mean()),
            f"{self.mode}_pairwise_consistency": float(pair_agreement.mean()),
        }
        if (labels >= 0).all():
            results["accuracy"] = float((classes == labels[:, None]).mean())
        return results
