"""Multi-label mean average precision (mAP), as an `evaluate` metric module.

The measure VATT (Akbari et al., NeurIPS 2021, arXiv 2104.11178, Table 3) and the AudioSet literature report for
multi-label audio event classification: for each class, the average precision of ranking all clips by that class's
score (the area under its precision-recall curve, computed as the step sum of scikit-learn's
`average_precision_score`), averaged over the classes that have at least one positive clip.

Tied scores form one threshold: every clip of a tie enters the ranking at once, so the result does not depend on the
order of the clips (scikit-learn's rule).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Mean average precision over classes for multi-label classification: per class, AP = sum over score thresholds of
(recall gain) x (precision at that threshold); mAP is the mean over classes with at least one positive example.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (N, C) class scores (logits, probabilities or similarities); higher means more likely.
    references: (N, C) multi-hot labels, 1 where the class is present.
    average: "macro" (default: the mean of the per-class APs, the AudioSet convention) or "micro" (one AP over all
        (clip, class) pairs flattened).

Returns:
    A dict: `mAP` (float in [0, 1]) and `num_classes_evaluated` (classes with a positive; "macro" only). Classes
    without any positive have no defined AP and are left out of the mean.

Examples:
    >>> metric = evaluate.load("hfvision/metrics/mean_average_precision")
    >>> metric.compute(predictions=[[0.9, 0.2], [0.4, 0.8], [0.1, 0.3]], references=[[1, 0], [0, 1], [1, 0]])
    {'mAP': 0.9166666666666666, 'num_classes_evaluated': 2}
"""

_CITATION = """\
@inproceedings{akbari2021vatt,
  title={VATT: Transformers for Multimodal Self-Supervised Learning from Raw Video, Audio and Text},
  author={Akbari, Hassan and Yuan, Liangzhe and Qian, Rui and Chuang, Wei-Hong and Chang, Shih-Fu and Cui, Yin and
    Gong, Boqing},
  booktitle={Advances in Neural Information Processing Systems},
  year={2021}
}
"""


def average_precision_per_column(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AP of every column of `scores` `(N, C)` against 0/1 `labels` `(N, C)`, vectorised over columns.

    Returns:
        `(C,)` APs; NaN for columns without a positive.
    """
    order = np.argsort(-scores, axis=0, kind="stable")
    sorted_scores = np.take_along_axis(scores, order, axis=0)
    true_positives = np.cumsum(np.take_along_axis(labels, order, axis=0), axis=0)  # (N, C)
    # A threshold ends where the next (lower) score differs: the whole tie is ranked at once.
    is_threshold = np.ones_like(sorted_scores, dtype=bool)
    is_threshold[:-1] = sorted_scores[:-1] != sorted_scores[1:]
    precision = true_positives / np.arange(1, len(scores) + 1)[:, None]
    # true positives at the previous threshold: running max of the counts at threshold ends (counts never decrease)
    at_ends = np.where(is_threshold, true_positives, 0)
    previous = np.maximum.accumulate(np.vstack([np.zeros((1, scores.shape[1])), at_ends[:-1]]), axis=0)
    gained = (true_positives - previous) * is_threshold  # positives first reached at each threshold
    num_positives = labels.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(num_positives > 0, (gained * precision).sum(0) / num_positives, np.nan)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanAveragePrecision(evaluate.Metric):
    """Macro (per-class) or micro mean average precision over (N, C) scores and multi-hot labels."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, average: str = "macro") -> dict[str, float]:
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references)
        if scores.dtype == object or scores.ndim != 2 or scores.shape[0] == 0:
            raise ValueError(f"`predictions` must be a non-empty (N, C) matrix of scores, got shape {scores.shape}")
        if labels.shape != scores.shape:
            raise ValueError(f"`references` must be (N, C) multi-hot labels like `predictions` {scores.shape}, "
                             f"got shape {labels.shape}")  # fmt: skip
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("`references` must hold only 0 and 1 (multi-hot labels)")
        if not np.isfinite(scores).all():
            raise ValueError("`predictions` must be finite")
        if average not in ("macro", "micro"):
            raise ValueError(f"`average` must be 'macro' or 'micro', got {average!r}")
        labels = labels.astype(np.float64)
        if average == "micro":
            ap = average_precision_per_column(scores.reshape(-1, 1), labels.reshape(-1, 1))[0]
            if np.isnan(ap):
                raise ValueError("`references` holds no positive label: mAP is undefined")
            return {"mAP": float(ap)}
        per_class = average_precision_per_column(scores, labels)
        evaluated = ~np.isnan(per_class)
        if not evaluated.any():
            raise ValueError("`references` holds no positive label: mAP is undefined")
        return {"mAP": float(per_class[evaluated].mean()), "num_classes_evaluated": int(evaluated.sum())}
