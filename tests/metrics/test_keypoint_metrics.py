"""The keypoint metric modules (AutoLink evaluation): constructed cases with known answers and independent checks."""

import itertools
import sys

import numpy as np
import pytest
import torch

from hfvision.data import STICK_FIGURE_BONES, STICK_FIGURE_JOINTS, StickFigures, pixel_to_normalized
from hfvision.metrics import available_metrics, load_metric


@pytest.fixture(scope="module")
def regression():
    return load_metric("keypoint_regression_error")


@pytest.fixture(scope="module")
def skeleton():
    return load_metric("skeleton_recovery")


def _linear_case(num_samples=300, num_keypoints=5, num_joints=4, offset=True, noise=0.0, seed=0):
    """Learned keypoints in [-1, 1] and ground truth that is an exact (or noisy) affine function of them."""
    rng = np.random.default_rng(seed)
    learned = rng.uniform(-1, 1, size=(num_samples, num_keypoints, 2))
    mapping = rng.normal(size=(2 * num_keypoints, 2 * num_joints)) * 10
    shift = rng.uniform(20, 40, size=2 * num_joints) if offset else np.zeros(2 * num_joints)
    truth = learned.reshape(num_samples, -1) @ mapping + shift + noise * rng.normal(size=(num_samples, 2 * num_joints))
    return learned, truth.reshape(num_samples, num_joints, 2)


# --- keypoint_regression_error ---


def test_registered():
    assert {"keypoint_regression_error", "skeleton_recovery"} <= set(available_metrics())


def test_exact_linear_relation_has_zero_error(regression):
    learned, truth = _linear_case()
    result = regression.compute(predictions=learned, references=truth, num_fit=200)
    assert result["nme"] < 1e-10 and result["fit_nme"] < 1e-10
    assert result["mean_pose_nme"] > 0.1 and len(result["nme_per_joint"]) == 4
    assert (result["num_fit"], result["num_eval"]) == (200, 100)
    # Without an intercept an offset cannot be fitted from keypoints centred on 0 ...
    assert regression.compute(predictions=learned, references=truth, num_fit=200, fit_intercept=False)["nme"] > 0.05
    # ... but a purely linear relation still can.
    learned, truth = _linear_case(offset=False)
    assert regression.compute(predictions=learned, references=truth, num_fit=200, fit_intercept=False)["nme"] < 1e-10


def test_any_affine_frame_of_the_predictions_gives_the_same_error(regression):
    learned, truth = _linear_case(noise=2.0)
    normalised = regression.compute(predictions=learned, references=truth, num_fit=200)
    pixels = (learned + 1) * 63 / 2  # the same keypoints in a 64-pixel frame
    in_pixels = regression.compute(predictions=pixels, references=truth, num_fit=200)
    assert in_pixels["nme"] == pytest.approx(normalised["nme"], rel=1e-8)
    assert 0.01 < normalised["nme"] < normalised["mean_pose_nme"]


def _independent_errors(learned, truth, num_fit):
    """Held-out per-sample mean joint errors (unnormalised) of the fitted map and of the mean pose, by the normal
    equations and a per-sample, per-joint loop."""
    num_samples, num_joints = len(truth), truth.shape[1]
    inputs = np.concatenate([learned.reshape(num_samples, -1), np.ones((num_samples, 1))], axis=1)
    fit_inputs, fit_targets = inputs[:num_fit], truth[:num_fit].reshape(num_fit, -1)
    weights = np.linalg.solve(fit_inputs.T @ fit_inputs, fit_inputs.T @ fit_targets)
    mean_pose = truth[:num_fit].mean(0)
    errors, baseline = [], []
    for sample in range(num_fit, num_samples):
        estimate = (inputs[sample] @ weights).reshape(num_joints, 2)
        errors.append(np.mean([np.hypot(*(estimate[j] - truth[sample, j])) for j in range(num_joints)]))
        baseline.append(np.mean([np.hypot(*(mean_pose[j] - truth[sample, j])) for j in range(num_joints)]))
    return np.array(errors), np.array(baseline)


def test_matches_an_independent_computation(regression):
    learned, truth = _linear_case(num_samples=60, num_keypoints=2, num_joints=3, noise=3.0, seed=1)
    errors, baseline = _independent_errors(learned, truth, num_fit=40)
    held_out = truth[40:]
    extent = held_out.max(axis=1) - held_out.min(axis=1)
    per_sample = np.random.default_rng(2).uniform(1, 3, size=60)
    expected_scales = {
        "bbox_height": extent[:, 1],
        "bbox_diagonal": np.hypot(extent[:, 0], extent[:, 1]),
        "inter_joint": np.hypot(*(held_out[:, 0] - held_out[:, 2]).T),
        2.5: np.full(20, 2.5),
        "per_sample": per_sample[40:],
    }
    for name, scales in expected_scales.items():
        normalizer = per_sample if name == "per_sample" else name
        result = regression.compute(
            predictions=learned, references=truth, num_fit=40, normalizer=normalizer, normalizer_joints=(0, 2)
        )
        assert result["nme"] == pytest.approx(np.mean(errors / scales), rel=1e-9), name
        assert result["mean_pose_nme"] == pytest.approx(np.mean(baseline / scales), rel=1e-9), name


def test_random_keypoints_score_like_the_mean_pose(regression):
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(2000, 4, 2)) * 5 + 30
    learned = rng.uniform(-1, 1, size=(2000, 4, 2))  # unrelated to the truth
    result = regression.compute(predictions=learned, references=truth, num_fit=1500, normalizer=10.0)
    assert result["nme"] == pytest.approx(result["mean_pose_nme"], rel=0.03)
    assert result["nme"] > 0.99 * result["mean_pose_nme"]  # held-out, a useless regressor cannot beat the mean


def test_rejects_bad_arguments(regression):
    learned, truth = _linear_case()
    with pytest.raises(ValueError, match="normalizer_joints"):
        regression.compute(predictions=learned, references=truth, num_fit=200, normalizer="inter_joint")
    with pytest.raises(ValueError, match="normalizer"):
        regression.compute(predictions=learned, references=truth, num_fit=200, normalizer=[1.0, 2.0])
    with pytest.raises(ValueError, match="normalizer"):
        regression.compute(predictions=learned, references=truth, num_fit=200, normalizer="torso")
    scales = np.ones(300)
    scales[-1] = np.inf  # a sample that would silently count for nothing
    with pytest.raises(ValueError, match="finite"):
        regression.compute(predictions=learned, references=truth, num_fit=200, normalizer=scales)
    with pytest.raises(ValueError, match="num_fit"):
        regression.compute(predictions=learned, references=truth, num_fit=5)  # fewer than 2K + 1 = 11 inputs
    with pytest.raises(ValueError, match="num_fit"):
        regression.compute(predictions=learned, references=truth, num_fit=300)  # nothing left to score
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        regression.compute(predictions=learned[..., :1], references=truth, num_fit=200)


def test_stick_figure_joints_as_learned_keypoints(regression):
    """Keypoints that are the true joints in another order and frame regress perfectly; the mean pose does not."""
    figures = StickFigures(200, image_size=64, seed=0)
    truth = np.stack([figures[index]["keypoints"] for index in range(200)]).astype(np.float64)
    heights = [figures[index]["figure_height"] for index in range(200)]
    learned = pixel_to_normalized(torch.from_numpy(truth[:, ::-1].copy()), 64).numpy()  # reversed, in [-1, 1]
    result = regression.compute(predictions=learned, references=truth, num_fit=150, normalizer=heights)
    assert result["nme"] < 1e-6
    assert result["mean_pose_nme"] > 0.15  # poses, positions and sizes vary


# --- skeleton_recovery ---


def _figure_case(num_samples=50, seed=0):
    figures = StickFigures(num_samples, image_size=64, seed=seed)
    truth = np.stack([figures[index]["keypoints"] for index in range(num_samples)]).astype(np.float64)
    adjacency = np.zeros((len(STICK_FIGURE_JOINTS),) * 2)
    for a, b in STICK_FIGURE_BONES:
        adjacency[a, b] = adjacency[b, a] = 1.0
    return truth, adjacency


def test_true_adjacency_is_recovered_perfectly(skeleton):
    truth, adjacency = _figure_case()
    result = skeleton.compute(predictions=truth, references=truth, edge_weights=adjacency, bones=STICK_FIGURE_BONES)
    assert result["edge_precision"] == 1.0 and result["spanning_tree_match"] is True
    assert result["bone_to_nonbone_weight_ratio"] == float("inf")
    assert result["matched_joints"] == list(range(7)) and result["num_bones_evaluated"] == 6


def test_permuted_and_noisy_keypoints_are_matched(skeleton):
    truth, adjacency = _figure_case()
    rng = np.random.default_rng(0)
    order = rng.permutation(7)  # learned keypoint k sits on joint order[k]
    learned = truth[:, order] + rng.normal(size=truth.shape)  # 1 px noise
    weights = adjacency[np.ix_(order, order)] * 2 + 0.1 * rng.uniform(size=(7, 7))  # bones 2, others <= 0.1
    weights = (weights + weights.T) / 2
    np.fill_diagonal(weights, 0)
    result = skeleton.compute(predictions=learned, references=truth, edge_weights=weights, bones=STICK_FIGURE_BONES)
    assert result["matched_joints"] == order.tolist()
    assert result["edge_precision"] == 1.0 and result["spanning_tree_match"]
    assert result["bone_to_nonbone_weight_ratio"] > 10
    assert 0.5 < result["mean_match_distance"] < 2.0  # ~ the 1 px noise
    # An upper-triangular matrix holds the same graph.
    upper = skeleton.compute(
        predictions=learned, references=truth, edge_weights=np.triu(weights), bones=STICK_FIGURE_BONES
    )
    assert upper == result


def test_one_wrong_edge(skeleton):
    truth, adjacency = _figure_case()
    head, neck, pelvis, left_hand = 0, 1, 2, 3
    weights = adjacency.copy()
    weights[neck, left_hand] = weights[left_hand, neck] = 0.0  # a missed bone ...
    weights[pelvis, left_hand] = weights[left_hand, pelvis] = 1.0  # ... replaced by a wrong one
    weights[head, pelvis] = weights[pelvis, head] = 0.5
    result = skeleton.compute(predictions=truth, references=truth, edge_weights=weights, bones=STICK_FIGURE_BONES)
    assert result["edge_precision"] == pytest.approx(5 / 6)
    assert result["spanning_tree_match"] is False
    # bones: five weigh 1, one 0 -> 5/6; the 15 non-bones: 1 + 0.5 -> 1.5/15
    assert result["bone_to_nonbone_weight_ratio"] == pytest.approx((5 / 6) / (1.5 / 15))


def test_nearest_joint_reading_survives_a_missing_and_a_doubled_joint(skeleton):
    """The case AutoLink produced on 32-pixel figures: no keypoint on the head, two on the pelvis, and the five other
    bones drawn. Hungarian matching must give the head to one of the pelvis keypoints and so misreads its edges; the
    nearest-joint reading finds the five bones among the six strongest joint pairs."""
    truth, adjacency = _figure_case()
    neck, pelvis = 1, 2  # no keypoint on the head (0)
    on = [pelvis, neck, pelvis, 3, 4, 5, 6]  # keypoint k sits on joint on[k]; keypoint 0 doubles the pelvis
    learned = truth[:, on] + np.array([1.0, 0.0])  # 1 px off
    weights = adjacency[np.ix_(on, on)] * 2.0
    weights[0, 1:] = weights[1:, 0] = 0.0  # the double draws no edges of its own
    weights[0, 3] = weights[3, 0] = 0.5  # ... but one weak, wrong one (pelvis-left hand)
    np.fill_diagonal(weights, 0.0)
    result = skeleton.compute(predictions=learned, references=truth, edge_weights=weights, bones=STICK_FIGURE_BONES)
    assert result["edge_precision"] < 5 / 6
    assert result["nearest_joint_bone_recall"] == pytest.approx(5 / 6)
    perfect = skeleton.compute(predictions=truth, references=truth, edge_weights=adjacency, bones=STICK_FIGURE_BONES)
    assert perfect["nearest_joint_bone_recall"] == 1.0


def test_more_and_fewer_keypoints_than_joints(skeleton):
    truth, adjacency = _figure_case()
    # K = 9: two extra keypoints far off every joint, with strong edges between them, are left unmatched.
    extra = np.concatenate([truth, np.full((len(truth), 2, 2), 500.0)], axis=1)
    weights = np.zeros((9, 9))
    weights[:7, :7] = adjacency
    weights[7, 8] = weights[8, 7] = weights[7, 0] = 5.0
    result = skeleton.compute(predictions=extra, references=truth, edge_weights=weights, bones=STICK_FIGURE_BONES)
    assert result["matched_joints"] == [*range(7), -1, -1]
    assert result["edge_precision"] == 1.0 and result["spanning_tree_match"]
    # K = 4 on head, neck, pelvis, left foot: bones head-neck, neck-pelvis, pelvis-left foot are evaluable.
    kept = [0, 1, 2, 5]
    result = skeleton.compute(
        predictions=truth[:, kept],
        references=truth,
        edge_weights=adjacency[np.ix_(kept, kept)],
        bones=STICK_FIGURE_BONES,
    )
    assert result["matched_joints"] == kept and result["num_bones_evaluated"] == 3
    assert result["edge_precision"] == 1.0 and result["spanning_tree_match"] is False  # 4 keypoints cannot span 7


def test_rejects_bad_input(skeleton):
    truth, adjacency = _figure_case(num_samples=4)
    with pytest.raises(ValueError, match="edge_weights"):
        skeleton.compute(predictions=truth, references=truth, edge_weights=-adjacency, bones=STICK_FIGURE_BONES)
    with pytest.raises(ValueError, match="edge_weights"):
        skeleton.compute(predictions=truth, references=truth, edge_weights=adjacency[:3], bones=STICK_FIGURE_BONES)
    with pytest.raises(ValueError, match="bones"):
        skeleton.compute(predictions=truth, references=truth, edge_weights=adjacency, bones=[[0, 7]])


def test_hungarian_matches_brute_force(skeleton):
    module = sys.modules[type(skeleton).__module__]
    rng = np.random.default_rng(0)
    for trial in range(200):
        rows, columns = (int(n) for n in rng.integers(1, 6, size=2))
        # Integer costs make ties common, the hard case for augmenting-path bookkeeping.
        cost = rng.normal(size=(rows, columns)) if trial % 2 else rng.integers(0, 3, size=(rows, columns)) * 1.0
        assigned_rows, assigned_columns = module.linear_sum_assignment(cost)
        assert len(assigned_rows) == min(rows, columns) == len(set(assigned_columns)) == len(set(assigned_rows))
        if rows <= columns:
            best = min(cost[range(rows), list(p)].sum() for p in itertools.permutations(range(columns), rows))
        else:
            best = min(cost[list(p), range(columns)].sum() for p in itertools.permutations(range(rows), columns))
        assert cost[assigned_rows, assigned_columns].sum() == pytest.approx(best, abs=1e-12)


def test_maximum_spanning_tree(skeleton):
    module = sys.modules[type(skeleton).__module__]
    weights = np.array([[0, 3, 1, 0], [3, 0, 2, 4], [1, 2, 0, 5], [0, 4, 5, 0]], dtype=float)
    assert module.maximum_spanning_tree(weights) == {(0, 1), (1, 3), (2, 3)}  # 3 + 4 + 5
