"""Zero-shot top-k accuracy, as an `evaluate` metric module.

The measure CLIP-style papers report for zero-shot classification (PyramidCLIP, arXiv 2204.14095, Tables 2-3):
the fraction of images whose true class is among the k classes with the highest image-text similarity.

Ties are broken towards the lower class index (a stable sort of the negated scores), so top-1 equals
``argmax(scores) == label`` exactly as `numpy.argmax` and `torch.argmax` compute it.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Top-k accuracy for zero-shot (or any) classification: a sample counts as correct at k when its reference class is
among the k highest-scoring classes of its prediction row. Reports every k of `top_k` (default top-1 and top-5).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (N, C) class scores (logits, similarities or probabilities), or (N,) predicted class ids.
    references: (N,) true class ids in [0, C).
    top_k: tuple of k values to report (default (1, 5)). A k larger than the number of classes C is clipped to C
        (so top-5 over 3 classes is 1.0); the key keeps the requested k. With (N,) class ids only top-1 exists:
        the k > 1 entries are left out (and a `top_k` without 1 is an error).

Returns:
    A dict with one float per k, keyed `top{k}_accuracy` (e.g. `top1_accuracy`, `top5_accuracy`).

Examples:
    >>> metric = evaluate.load("hfvision/metrics/zero_shot_accuracy")
    >>> metric.compute(predictions=[[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]], references=[1, 2], top_k=(1, 2))
    {'top1_accuracy': 0.5, 'top2_accuracy': 0.5}
"""

_CITATION = """\
@inproceedings{gao2022pyramidclip,
  title={PyramidCLIP: Hierarchical Feature Alignment for Vision-language Model Pretraining},
  author={Gao, Yuting and Liu, Jinfeng and Xu, Zihan and Zhang, Jun and Li, Ke and Ji, Rongrong and Shen, Chunhua},
  booktitle={Advances in Neural Information Processing Systems},
  year={2022}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ZeroShotAccuracy(evaluate.Metric):
    """Top-k accuracy over (N, C) class scores or (N,) class ids."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # Two accepted schemas, tried in order on the first example: a row of class scores, or a class id.
            features=[
                datasets.Features(
                    {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
                ),
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            ],
        )

    def _compute(self, predictions, references, top_k: tuple[int, ...] = (1, 5)) -> dict[str, float]:
        scores = np.asarray(predictions)
        labels = np.asarray(references, dtype=np.int64)
        top_k = (top_k,) if isinstance(top_k, int) else tuple(top_k)
        if not top_k or any(int(k) < 1 for k in top_k):
            raise ValueError(f"`top_k` must be positive integers, got {top_k}")
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError(f"`references` must be a non-empty (N,) array of class ids, got shape {labels.shape}")

        if scores.ndim == 1:  # class ids: only top-1 is defined
            if 1 not in top_k:
                raise ValueError(f"(N,) class-id predictions only give top-1 accuracy, but `top_k` is {top_k}")
            return {"top1_accuracy": float((scores.astype(np.int64) == labels).mean())}
        if scores.dtype == object:
            raise ValueError("`predictions` rows must all have the same number of classes")
        num_classes = scores.shape[1]
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(
                f"`references` must be class ids in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
            )

        # Rank of the true class in its row under a stable descending sort: classes scoring strictly higher,
        # plus equal-scoring classes with a lower index (the same tie rule as argmax).
        true_scores = scores[np.arange(len(labels)), labels][:, None]
        lower_index = np.arange(num_classes)[None, :] < labels[:, None]
        rank = (scores > true_scores).sum(1) + ((scores == true_scores) & lower_index).sum(1)  # (N,)
        return {f"top{int(k)}_accuracy": float((rank < min(int(k), num_classes)).mean()) for k in top_k}
