"""Simulability, as an `evaluate` metric module: how well a student reproduces its teacher's outputs.

The measure of the simulation framework of Pruthi et al. (TACL 2022) and of Learning to Scaffold (SMaT; Fernandes et
al., NeurIPS 2022, arXiv 2204.10810): on held-out inputs that come with no explanation, the agreement of the student's
predictions with the teacher's. Classification (default config): the fraction of inputs where the student predicts
the teacher's class. Regression (`config_name="regression"`, the paper's MLQE-PE): the Pearson correlation between
the student's and the teacher's scores.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Simulability: agreement between a student's and its teacher's predictions on the same held-out inputs.
`simulability` is the fraction of equal class predictions (default config) or the Pearson correlation of the scores
(`config_name="regression"`).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (N,) the student's predicted class ids (or scores, for "regression").
    references: (N,) the teacher's predicted class ids (or scores) on the same inputs, not the gold labels.

Returns:
    {"simulability": float}: in [0, 1] for classification, in [-1, 1] (Pearson r) for regression.

Examples:
    >>> metric = evaluate.load("hfvision/metrics/simulability")
    >>> metric.compute(predictions=[1, 2, 0, 0], references=[1, 2, 1, 0])
    {'simulability': 0.75}
"""

_CITATION = """\
@inproceedings{fernandes2022learning,
  title={Learning to Scaffold: Optimizing Model Explanations for Teaching},
  author={Fernandes, Patrick and Treviso, Marcos and Pruthi, Danish and Martins, Andr{\\'e} F. T. and Neubig, Graham},
  booktitle={Advances in Neural Information Processing Systems},
  year={2022}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Simulability(evaluate.Metric):
    """Student-teacher agreement (classification) or correlation (regression) on held-out inputs."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in ("default", "classification", "regression"):
            raise ValueError(
                f"`config_name` must be 'classification' (default) or 'regression', got {self.config_name!r}"
            )
        dtype = "float64" if self.config_name == "regression" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
        )

    def _compute(self, predictions, references) -> dict:
        student = np.asarray(predictions)
        teacher = np.asarray(references)
        if student.size == 0:
            raise ValueError("`predictions` is empty; expected the student's outputs on at least one input.")
        if self.config_name == "regression":
            if student.size < 2 or student.std() == 0 or teacher.std() == 0:
                raise ValueError(
                    "`predictions` and `references` need at least 2 values each, not all equal, for a correlation."
                )
            return {"simulability": float(np.corrcoef(student, teacher)[0, 1])}
        return {"simulability": float((student == teacher).mean())}
