"""Attack success rate of a backdoor, as an `evaluate` metric module.

The measure backdoor papers report beside clean accuracy (Trap and Replace, arXiv 2210.06428, Tables 1-3, as its
official `datasets/cifar.py` computes it): the share of *triggered* test images whose true class is not the target
that the model classifies as the target. Target-class images are left out of the denominator (classifying them as
the target is no success of the attack), whether or not the triggered set already excludes them.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Attack success rate (ASR): among triggered test images whose true label differs from `target_label`, the fraction
predicted as `target_label`. Also returns how many images entered the denominator.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (N, C) class scores of the triggered images (argmax taken, ties to the lower index), or (N,)
        predicted class ids.
    references: (N,) the images' true class ids (before any relabelling by the attack).
    target_label: the attack's target class.

Returns:
    `attack_success_rate` (float in [0, 1]) and `num_triggered` (the non-target images counted).

Examples:
    >>> metric = evaluate.load("hfvision/metrics/attack_success_rate")
    >>> metric.compute(predictions=[0, 0, 3, 0], references=[1, 2, 3, 0], target_label=0)
    {'attack_success_rate': 0.3333333333333333, 'num_triggered': 3}
"""

_CITATION = """\
@inproceedings{wang2022trap,
  title={Trap and Replace: Defending Backdoor Attacks by Trapping Them into an Easy-to-Replace Subnetwork},
  author={Wang, Haotao and Hong, Junyuan and Zhang, Aston and Zhou, Jiayu and Wang, Zhangyang},
  booktitle={Advances in Neural Information Processing Systems},
  year={2022}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AttackSuccessRate(evaluate.Metric):
    """Share of triggered non-target images predicted as the target class."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
                ),
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            ],
        )

    def _compute(self, predictions, references, target_label: int | None = None) -> dict[str, float | int]:
        if target_label is None or isinstance(target_label, bool) or not isinstance(target_label, (int, np.integer)):
            raise ValueError(f"`target_label` must be an int class id, got {target_label!r}")
        scores = np.asarray(predictions)
        labels = np.asarray(references, dtype=np.int64)
        if labels.ndim != 1 or len(labels) != len(scores):
            raise ValueError(f"`references` must be (N,) class ids matching `predictions`, got {labels.shape}")
        if scores.dtype == object:
            raise ValueError("`predictions` rows must all have the same number of classes")
        predicted = scores.argmax(axis=1) if scores.ndim == 2 else scores.astype(np.int64)  # (N,)
        source = labels != int(target_label)
        if not source.any():
            raise ValueError(
                f"`references` hold no image outside the target class {target_label}: the ASR is undefined"
            )
        return {
            "attack_success_rate": float((predicted[source] == int(target_label)).mean()),
            "num_triggered": int(source.sum()),
        }
