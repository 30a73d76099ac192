"""Keypoint error after linear regression to the ground truth, as an `evaluate` metric module.

The standard evaluation of unsupervised keypoints (Thewlis et al. 2017, Zhang et al. 2018, Jakab et al. 2018, and
AutoLink, He, Wandt, Rhodin, NeurIPS 2022, https://arxiv.org/abs/2205.10636): learned keypoints carry no names, so a
linear map from all K learned keypoints (flattened to 2K numbers) to all J annotated joints (2J numbers) is fitted by
least squares on a fit split, and the mean L2 error of the mapped keypoints is measured on the held-out samples,
normalised per sample (inter-ocular distance on faces, the figure's size on bodies). AutoLink's CelebA/MAFL protocol
fits without an intercept, on keypoints mapped to [0, 1], and normalises by the distance between landmarks 0 and 1
(the eyes); its Taichi protocol fits with an intercept. Missing annotations (Taichi's -1) are not supported here.

Frames: with `fit_intercept=True` (default) the result does not change under any affine change of the predictions'
frame (e.g. [-1, 1] normalised vs pixels), so any consistent frame works. Without an intercept only linear changes
leave it unchanged: use a frame whose origin is not inside the data (AutoLink's [0, 1]) or the fit cannot represent
an offset. The references' frame is scored as given; a per-sample normaliser computed from the references ("bbox_*",
"inter_joint") makes the result independent of their scale too.
"""

import datasets
import evaluate
import numpy as np

NORMALIZERS = ("bbox_diagonal", "bbox_height", "inter_joint")

_DESCRIPTION = """\
Keypoint regression error: fit a least-squares linear map (optionally with an intercept) from learned keypoints
(N, K, 2) to ground-truth keypoints (N, J, 2) on the first `num_fit` samples, then report on the remaining samples the
mean over samples of (mean over joints of the L2 error) / (the sample's normaliser) as `nme`, and the same error of
the mean fit pose as `mean_pose_nme`, the baseline any useful keypoints must beat.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per sample, the (K, 2) learned keypoints, in any consistent frame (see the module docstring).
    references: per sample, the (J, 2) ground-truth keypoints, e.g. pixel (x, y).
    num_fit: the first `num_fit` samples fit the regression and the rest are scored; the fit needs more samples
        than regression inputs (2K, plus 1 with an intercept) and at least one sample must remain.
    fit_intercept: fit an offset as well (default True). AutoLink's CelebA protocol uses False.
    normalizer: per-sample scale the errors are divided by: "bbox_diagonal" (default; diagonal of the box around
        the sample's ground-truth joints), "bbox_height" (its height), "inter_joint" (distance between the ground-truth
        joints `normalizer_joints`, e.g. the eyes), a positive number (the same for all samples, e.g. the image side),
        or a sequence of N positive numbers aligned with the samples (e.g. a stick figure's `figure_height`).
    normalizer_joints: the two joint indices for "inter_joint".

Returns:
    A dict with `nme` and `mean_pose_nme` (floats, on the held-out samples), `fit_nme` (the fitted map's error on the
    fit samples), `nme_per_joint` (list of J floats, held-out), `num_fit` and `num_eval` (ints).

Examples:
    >>> metric = evaluate.load("hfvision/metrics/keypoint_regression_error")
    >>> learned = [[[0.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]], [[0.5, 0.5]]]
    >>> truth = [[[2 * x + 1, 3 * y]] for [[x, y]] in learned]
    >>> metric.compute(predictions=learned, references=truth, num_fit=4, normalizer=1.0)["nme"] < 1e-9
    True
"""

_CITATION = """\
@inproceedings{he2022autolink,
  title={AutoLink: Self-supervised Learning of Human Skeletons and Object Outlines by Linking Keypoints},
  author={He, Xingzhe and Wandt, Bastian and Rhodin, Helge},
  booktitle={Advances in Neural Information Processing Systems},
  year={2022}
}
"""


def _normalizers(references: np.ndarray, normalizer, normalizer_joints) -> np.ndarray:
    """Per-sample positive scales (N,) from the `normalizer` argument."""
    if isinstance(normalizer, str):
        if normalizer not in NORMALIZERS:
            raise ValueError(f"`normalizer` must be one of {NORMALIZERS}, a number or N numbers, got {normalizer!r}")
        if normalizer == "inter_joint":
            if normalizer_joints is None or len(normalizer_joints) != 2:
                raise ValueError(f"`normalizer_joints` must be two joint indices, got {normalizer_joints!r}")
            first, second = (int(joint) for joint in normalizer_joints)
            if not (0 <= first < references.shape[1] and 0 <= second < references.shape[1]) or first == second:
                raise ValueError(f"`normalizer_joints` must be two distinct joints < {references.shape[1]}")
            scales = np.linalg.norm(references[:, first] - references[:, second], axis=-1)
        else:
            extent = references.max(axis=1) - references.min(axis=1)  # (N, 2): box width, height
            scales = extent[:, 1] if normalizer == "bbox_height" else np.linalg.norm(extent, axis=-1)
    else:
        if np.ndim(normalizer) not in (0, 1) or np.size(normalizer) not in (1, len(references)):
            raise ValueError(f"`normalizer` must be a number or N = {len(references)} numbers, got {normalizer!r}")
        scales = np.broadcast_to(np.asarray(normalizer, dtype=np.float64), (len(references),))
    if not (np.isfinite(scales) & (scales > 0)).all():
        raise ValueError("every sample's normaliser must be finite and > 0 (coincident joints or a bad `normalizer`)")
    return scales


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class KeypointRegressionError(evaluate.Metric):
    """Normalised keypoint error after a least-squares map from learned to ground-truth keypoints."""

    def _info(self) -> evaluate.MetricInfo:
        points = datasets.Sequence(datasets.Sequence(datasets.Value("float64")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": points, "references": points}),
        )

    def _compute(
        self,
        predictions,
        references,
        num_fit: int,
        fit_intercept: bool = True,
        normalizer="bbox_diagonal",
        normalizer_joints=None,
    ) -> dict:
        try:
            learned = np.asarray(predictions, dtype=np.float64)
            truth = np.asarray(references, dtype=np.float64)
        except ValueError as error:  # ragged
            raise ValueError("every sample needs the same number of keypoints and of joints") from error
        if learned.ndim != 3 or learned.shape[-1] != 2 or truth.ndim != 3 or truth.shape[-1] != 2:
            raise ValueError(
                f"`predictions` must be (N, K, 2) and `references` (N, J, 2), got {learned.shape} and {truth.shape}"
            )
        if not (np.isfinite(learned).all() and np.isfinite(truth).all()):
            raise ValueError("`predictions` and `references` must be finite (missing annotations are not supported)")
        num_samples, num_keypoints, num_joints = len(learned), learned.shape[1], truth.shape[1]
        num_inputs = 2 * num_keypoints + int(bool(fit_intercept))
        if not num_inputs < num_fit < num_samples:
            raise ValueError(
                f"`num_fit` must exceed the {num_inputs} regression inputs and leave samples to score "
                f"(N = {num_samples}), got {num_fit}"
            )
        scales = _normalizers(truth, normalizer, normalizer_joints)

        inputs = learned.reshape(num_samples, -1)  # (N, 2K)
        if fit_intercept:
            inputs = np.concatenate([inputs, np.ones((num_samples, 1))], axis=1)
        targets = truth.reshape(num_samples, -1)  # (N, 2J)
        weights, *_ = np.linalg.lstsq(inputs[:num_fit], targets[:num_fit], rcond=None)  # (2K [+1], 2J)
        regressed = (inputs @ weights).reshape(num_samples, num_joints, 2)
        mean_pose = truth[:num_fit].mean(axis=0)  # (J, 2)

        fit, held_out = slice(None, num_fit), slice(num_fit, None)

        def normalised_errors(estimate: np.ndarray, rows: slice) -> np.ndarray:  # (n, J) L2 errors / sample scale
            return np.linalg.norm(estimate - truth[rows], axis=-1) / scales[rows, None]

        errors = normalised_errors(regressed[held_out], held_out)
        return {
            "nme": float(errors.mean()),
            "mean_pose_nme": float(normalised_errors(mean_pose, held_out).mean()),
            "fit_nme": float(normalised_errors(regressed[fit], fit).mean()),
            "nme_per_joint": errors.mean(axis=0).tolist(),
            "num_fit": int(num_fit),
            "num_eval": int(num_samples - num_fit),
        }
