"""Shift-equivariance consistency and mean IoU of a semantic segmenter, as an `evaluate` metric module.

LPS (Rojas-Gomez et al. 2022, arXiv 2210.08001) reports for PASCAL VOC, beside mIoU, how often the per-pixel prediction
moves with the image: segment each image under several shifts, shift every label map back to the original frame, and
count the pixels whose label is the same in every copy. An exactly equivariant model (LPS encoder + LPU decoder with
circular padding, circular shifts) scores 100%.

The caller does the shifting and un-shifting (e.g. with `torch.roll`); for standard (zero-fill) shifts, crop every
aligned map to the region all copies cover before passing it.
"""

import itertools

import datasets
import evaluate
import numpy as np

SHIFT_MODES = ("circular", "standard")

_DESCRIPTION = """\
Segmentation shift consistency: the fraction of pixels whose predicted label agrees across all S shifted copies of an
image once each map is shifted back (`<mode>_consistency`) and the mean pixel agreement over pairs of copies
(`<mode>_pairwise_consistency`); with ground truth, the mean IoU of all copies' predictions (`mean_iou`, classes absent
from both predictions and references are left out) and the per-class IoU. Load with `config_name="circular"` (default)
or `"standard"` to name the kind of shift.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per image, (S, H, W) predicted label maps of S >= 2 shifted copies, aligned back to the original frame.
    references: per image, the (H, W) ground-truth label map (`ignore_index` where unlabelled).
    num_labels: number of classes, for the IoU.
    ignore_index: reference label excluded from the IoU (default 255).

Returns:
    A dict with `<mode>_consistency`, `<mode>_pairwise_consistency`, `mean_iou` (float) and `per_class_iou` (list of
    `num_labels` floats, NaN for a class absent from both predictions and references).

Examples:
    >>> metric = evaluate.load("hfvision/metrics/segmentation_shift_consistency")
    >>> metric.compute(predictions=[[[[0, 1]], [[0, 0]]]], references=[[[0, 1]]], num_labels=2)["circular_consistency"]
    0.5
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
class SegmentationShiftConsistency(evaluate.Metric):
    """Per-pixel agreement of aligned label maps across shifts, and mean IoU against the references."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in (*SHIFT_MODES, "default"):
            raise ValueError(f"`config_name` must be one of {SHIFT_MODES}, got {self.config_name!r}")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Value("int64")))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                }
            ),
        )

    @property
    def mode(self) -> str:
        """The kind of shift the results are named after ("circular" unless loaded as "standard")."""
        return "standard" if self.config_name == "standard" else "circular"

    def _compute(self, predictions, references, num_labels: int, ignore_index: int = 255) -> dict:
        if num_labels < 1:
            raise ValueError(f"`num_labels` must be >= 1, got {num_labels}")
        all_agree, pair_agree = [], []
        intersection = np.zeros(num_labels, dtype=np.int64)
        union = np.zeros(num_labels, dtype=np.int64)
        for maps, reference in zip(predictions, references, strict=True):
            maps, reference = np.asarray(maps, dtype=np.int64), np.asarray(reference, dtype=np.int64)
            if maps.ndim != 3 or maps.shape[0] < 2 or maps.shape[1:] != reference.shape:
                raise ValueError(
                    f"each prediction must be (S, H, W) with S >= 2 and (H, W) = the reference's {reference.shape}, "
                    f"got {maps.shape}"
                )
            all_agree.append((maps == maps[:1]).all(axis=0).mean())
            pairs = itertools.combinations(range(len(maps)), 2)
            pair_agree.append(np.mean([(maps[i] == maps[j]).mean() for i, j in pairs]))
            valid = reference != ignore_index
            for label in range(num_labels):  # accumulated over the whole dataset, every copy counted
                predicted, actual = (maps == label) & valid, (reference == label)[None] & valid
                intersection[label] += (predicted & actual).sum()
                union[label] += (predicted | actual).sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = np.where(union > 0, intersection / np.maximum(union, 1), np.nan)
        return {
            f"{self.mode}_consistency": float(np.mean(all_agree)),
            f"{self.mode}_pairwise_consistency": float(np.mean(pair_agree)),
            "mean_iou": float(np.nanmean(per_class)) if (union > 0).any() else float("nan"),
            "per_class_iou": per_class.tolist(),
        }
