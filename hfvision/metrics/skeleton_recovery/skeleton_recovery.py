"""Skeleton recovery of a learned keypoint graph, as an `evaluate` metric module.

AutoLink (He, Wandt, Rhodin, NeurIPS 2022, https://arxiv.org/abs/2205.10636) learns one weight per pair of keypoints;
the strongest edges should form the object's skeleton. This module scores a learned (K, K) edge-weight matrix against
a known skeleton (J joints, a list of bones): each learned keypoint is first matched one-to-one to a ground-truth
joint by the Hungarian algorithm on the mean distance between the two over the samples (an exact O(n^3) solver
written here, so the module needs only numpy), and the learned edges between matched keypoints are then read as edges
between their joints. The paper reports skeletons qualitatively; these numbers are our quantitative stand-in.

- `edge_precision`: among the edges between matched keypoints, the fraction of the top-B by weight that are true
  bones, where B is the number of true bones whose two joints are both matched (B = J - 1 when K >= J).
- `spanning_tree_match`: whether the maximum-weight spanning tree over the matched keypoints is exactly the true
  skeleton (always False when K < J, since the tree cannot reach every joint).
- `bone_to_nonbone_weight_ratio`: mean weight of the true-bone edges over the mean weight of the other edges between
  matched keypoints (inf if those are all 0).

- `nearest_joint_bone_recall`: a reading that tolerates two keypoints on one joint and none on another: every
  keypoint is read as its nearest joint (mean distance; several keypoints may share one), each joint pair keeps the
  strongest learned edge between keypoints read as those two joints, and the score is the fraction of the true bones
  among the top-B such pairs (B = the number of bones). The Hungarian matching has to hand a joint that no keypoint
  sits on (say a head 3 pixels from the neck) to a keypoint elsewhere, which turns that keypoint's edges into wrong
  ones; this reading does not.

Chance levels, computed exactly (not sampled): `edge_precision_chance` and `nearest_joint_bone_recall_chance` are
the expected scores of a graph whose K(K-1)/2 edge weights are i.i.d. continuous random numbers (a uniformly random
ranking of the keypoint pairs) on the same keypoints, a graph that knows nothing of the figures. For the Hungarian
reading that is the number of evaluable bones over the number of candidate pairs (6 / 21 = 0.286 for 7 keypoints on
a 7-joint, 6-bone tree). For the nearest-joint reading a joint pair read from n keypoint pairs keeps the largest of n
random weights, so pairs read many times rank high more often; `top_group_probabilities` integrates that exactly.

Unmatched keypoints (K > J) and their edges are left out of the Hungarian scores; a keypoint that relays a bone (a
learned elbow between hand and shoulder) therefore hides that bone. Predictions and references must be in the same
frame for the distances to mean anything: convert the model's normalised keypoints to pixels first
(`hfvision.data.normalized_to_pixel`).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Skeleton recovery: match learned keypoints to ground-truth joints (Hungarian, mean distance), then score the learned
edge weights against the true bones: precision of the top-|bones| edges, whether the maximum spanning tree equals the
true tree, and the mean bone / mean non-bone weight ratio; also the nearest-joint bone recall, and the exact chance
level of both readings (the expected score of i.i.d. random edge weights on the same keypoints).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per sample, the (K, 2) learned keypoints.
    references: per sample, the (J, 2) ground-truth joints, in the same frame as the predictions.
    edge_weights: the (K, K) learned edge weights, >= 0; the weight of edge {i, j} is max(w[i, j], w[j, i]), so an
        upper-triangular or a symmetric matrix both work; the diagonal is ignored.
    bones: the true skeleton, pairs of joint indices (a tree over the J joints for `spanning_tree_match`).

Returns:
    A dict with `edge_precision` (float in [0, 1]), `spanning_tree_match` (bool), `bone_to_nonbone_weight_ratio`
    (float), `nearest_joint_bone_recall` (float in [0, 1]), `edge_precision_chance` and
    `nearest_joint_bone_recall_chance` (the expected value of each reading for i.i.d. random edge weights on the same
    keypoints), `matched_joints` (list of K ints: the joint each learned keypoint was matched to, -1 if none),
    `mean_match_distance` (float, mean over matched pairs, in the input frame) and `num_bones_evaluated` (int).

Examples:
    >>> metric = evaluate.load("hfvision/metrics/skeleton_recovery")
    >>> joints = [[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]]
    >>> weights = [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    >>> result = metric.compute(predictions=joints, references=joints, edge_weights=weights, bones=[[0, 1], [1, 2]])
    >>> result["edge_precision"], result["spanning_tree_match"]
    (1.0, True)
"""

_CITATION = """\
@inproceedings{he2022autolink,
  title={AutoLink: Self-supervised Learning of Human Skeletons and Object Outlines by Linking Keypoints},
  author={He, Xingzhe and Wandt, Bastian and Rhodin, Helge},
  booktitle={Advances in Neural Information Processing Systems},
  year={2022}
}
"""


def linear_sum_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact minimum-cost one-to-one assignment (Hungarian method with shortest augmenting paths and potentials).

    Args:
        cost: (R, C) finite costs.

    Returns:
        `(rows, columns)`, two int arrays of length min(R, C) sorted by row: row `rows[i]` is assigned column
        `columns[i]`, and the total cost is the smallest over all such assignments.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or not np.isfinite(cost).all():
        raise ValueError(f"`cost` must be a finite 2-D matrix, got shape {cost.shape}")
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:  # the method below assigns every row, so it needs rows <= columns
        cost = cost.T
    num_rows, num_columns = cost.shape
    # Column 0 is a virtual start column; row_of[j] is the row holding column j (0 = free), rows numbered from 1.
    row_potential, column_potential = np.zeros(num_rows + 1), np.zeros(num_columns + 1)
    row_of = np.zeros(num_columns + 1, dtype=np.int64)
    for row in range(1, num_rows + 1):
        # Grow a shortest-path tree over the columns from the new row until it reaches a free column.
        row_of[0] = row
        current_column = 0
        slack = np.full(num_columns + 1, np.inf)
        previous = np.zeros(num_columns + 1, dtype=np.int64)
        visited = np.zeros(num_columns + 1, dtype=bool)
        while True:
            visited[current_column] = True
            current_row = row_of[current_column]
            reduced = cost[current_row - 1] - row_potential[current_row] - column_potential[1:]  # (C,)
            improved = ~visited[1:] & (reduced < slack[1:])
            slack[1:][improved] = reduced[improved]
            previous[1:][improved] = current_column
            candidates = np.where(visited[1:], np.inf, slack[1:])
            next_column = int(np.argmin(candidates)) + 1
            delta = candidates[next_column - 1]
            row_potential[row_of[visited]] += delta  # visited columns hold distinct rows
            column_potential[visited] -= delta
            slack[~visited] -= delta
            current_column = next_column
            if row_of[current_column] == 0:
                break
        while current_column:  # flip the matching along the path back to the start column
            previous_column = previous[current_column]
            row_of[current_column] = row_of[previous_column]
            current_column = previous_column
    assigned = np.flatnonzero(row_of[1:])
    rows, columns = row_of[1:][assigned] - 1, assigned
    if transposed:
        rows, columns = columns, rows
    order = np.argsort(rows)
    return rows[order], columns[order]


def top_group_probabilities(group_sizes: np.ndarray, num_top: int) -> np.ndarray:
    """Chance that each group is among the `num_top` groups of largest maximum, for i.i.d. random item weights.

    Every item of every group draws an i.i.d. continuous weight and a group weighs its largest item. With
    V_g = max over its n_g items, P(V_g <= v) = v^n_g on [0, 1] (the weights' quantiles), so

        P(g in top) = int_0^1 n_g v^(n_g - 1) P(fewer than num_top other groups have V_h > v) dv,

    where the count of other groups above v is Poisson-binomial with P(V_h > v) = 1 - v^n_h. The integrand is a
    polynomial in v of degree below the total number of items, so Gauss-Legendre quadrature with enough nodes gives
    the integral exactly (up to rounding), and the Poisson-binomial recursion adds only probabilities (no
    cancellation).

    Args:
        group_sizes: (G,) positive item counts.
        num_top: how many groups are taken.

    Returns:
        (G,) probabilities; they sum to min(num_top, G).
    """
    sizes = np.asarray(group_sizes, dtype=np.int64)
    if sizes.ndim != 1 or (sizes < 1).any():
        raise ValueError(f"`group_sizes` must be a 1-D array of positive counts, got {group_sizes!r}")
    if num_top < 1:
        raise ValueError(f"`num_top` must be at least 1, got {num_top}")
    if num_top >= len(sizes):
        return np.ones(len(sizes))
    nodes, node_weights = np.polynomial.legendre.leggauss(int(sizes.sum()) // 2 + 1)
    nodes, node_weights = (nodes + 1) / 2, node_weights / 2  # on [0, 1]
    below = nodes[None, :] ** sizes[:, None]  # (G, Q): P(V_h <= v) at each node
    # count[g, q, c] = P(exactly c groups other than g lie above nodes[q]), for c < num_top
    count = np.zeros((len(sizes), len(nodes), num_top))
    count[:, :, 0] = 1.0
    for other in range(len(sizes)):
        updated = count * below[other][None, :, None]
        updated[:, :, 1:] += count[:, :, :-1] * (1.0 - below[other])[None, :, None]
        updated[other] = count[other]  # a group does not count itself
        count = updated
    density = sizes[:, None] * nodes[None, :] ** (sizes[:, None] - 1)  # (G, Q): d/dv of v^n_g
    return (node_weights * density * count.sum(axis=2)).sum(axis=1)


def maximum_spanning_tree(weights: np.ndarray) -> set[tuple[int, int]]:
    """Edges `(i, j)`, i < j, of a maximum-weight spanning tree of a complete graph (Prim's algorithm).

    Args:
        weights: (n, n) symmetric edge weights.

    Returns:
        The n - 1 tree edges.
    """
    num_nodes = len(weights)
    in_tree = np.zeros(num_nodes, dtype=bool)
    in_tree[0] = True
    best_weight, best_parent = weights[0].astype(np.float64).copy(), np.zeros(num_nodes, dtype=np.int64)
    edges = set()
    for _ in range(num_nodes - 1):
        node = int(np.argmax(np.where(in_tree, -np.inf, best_weight)))
        edges.add((min(node, int(best_parent[node])), max(node, int(best_parent[node]))))
        in_tree[node] = True
        closer = ~in_tree & (weights[node] > best_weight)
        best_weight[closer], best_parent[closer] = weights[node][closer], node
    return edges


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SkeletonRecovery(evaluate.Metric):
    """How well the strongest edges of a learned keypoint graph reproduce the true skeleton."""

    def _info(self) -> evaluate.MetricInfo:
        points = datasets.Sequence(datasets.Sequence(datasets.Value("float64")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": points, "references": points}),
        )

    def _compute(self, predictions, references, edge_weights, bones) -> dict:
        try:
            learned = np.asarray(predictions, dtype=np.float64)
            truth = np.asarray(references, dtype=np.float64)
        except ValueError as error:  # ragged
            raise ValueError("every sample needs the same number of keypoints and of joints") from error
        if learned.ndim != 3 or learned.shape[-1] != 2 or truth.ndim != 3 or truth.shape[-1] != 2:
            raise ValueError(
                f"`predictions` must be (N, K, 2) and `references` (N, J, 2), got {learned.shape} and {truth.shape}"
            )
        num_keypoints, num_joints = learned.shape[1], truth.shape[1]
        weights = np.asarray(edge_weights, dtype=np.float64)
        if weights.shape != (num_keypoints, num_keypoints) or not np.isfinite(weights).all() or (weights < 0).any():
            raise ValueError(f"`edge_weights` must be a finite, non-negative ({num_keypoints}, {num_keypoints}) matrix")
        bone_array = np.asarray(bones, dtype=np.int64).reshape(-1, 2)
        if len(bone_array) == 0 or bone_array.min() < 0 or bone_array.max() >= num_joints:
            raise ValueError(f"`bones` must be a non-empty list of joint-index pairs < {num_joints}, got {bones!r}")
        if (bone_array[:, 0] == bone_array[:, 1]).any():
            raise ValueError(f"`bones` must join two different joints, got {bones!r}")
        true_edges = {(int(min(a, b)), int(max(a, b))) for a, b in bone_array}
        adjacency = np.zeros((num_joints, num_joints), dtype=bool)
        adjacency[bone_array[:, 0], bone_array[:, 1]] = adjacency[bone_array[:, 1], bone_array[:, 0]] = True

        # Hungarian matching on the mean keypoint-to-joint distance over the samples.
        distance = np.linalg.norm(learned[:, :, None, :] - truth[:, None, :, :], axis=-1).mean(axis=0)  # (K, J)
        keypoints, joints = linear_sum_assignment(distance)
        matched_joints = np.full(num_keypoints, -1, dtype=np.int64)
        matched_joints[keypoints] = joints

        # Learned weights between matched keypoints, re-indexed by their joints; -inf marks unmatched joints.
        symmetric = np.maximum(weights, weights.T)
        joint_weights = np.full((num_joints, num_joints), -np.inf)
        joint_weights[np.ix_(joints, joints)] = symmetric[np.ix_(keypoints, keypoints)]
        first, second = np.triu_indices(num_joints, k=1)
        candidate = np.isfinite(joint_weights[first, second])  # both ends matched
        candidate_weights = joint_weights[first, second][candidate]
        candidate_bones = adjacency[first, second][candidate]
        num_bones = int(candidate_bones.sum())
        top = np.argsort(-candidate_weights, kind="stable")[:num_bones]
        precision = float(candidate_bones[top].mean()) if num_bones else 0.0

        bone_weight = candidate_weights[candidate_bones].mean() if num_bones else 0.0
        nonbone = candidate_weights[~candidate_bones]
        nonbone_weight = nonbone.mean() if len(nonbone) else 0.0
        if nonbone_weight > 0:
            ratio = float(bone_weight / nonbone_weight)
        else:  # no weight off the bones: perfect separation, unless there is no weight at all
            ratio = float("inf") if bone_weight > 0 else float("nan")

        tree_match = num_keypoints >= num_joints and maximum_spanning_tree(joint_weights) == true_edges

        # Nearest-joint reading: the strongest learned edge per pair of (different) joints the keypoints are read as.
        reads = distance.argmin(axis=1)  # (K,)
        first_keypoint, second_keypoint = np.triu_indices(num_keypoints, k=1)
        low = np.minimum(reads[first_keypoint], reads[second_keypoint])
        high = np.maximum(reads[first_keypoint], reads[second_keypoint])
        between = low != high
        read_weights = np.full((num_joints, num_joints), -np.inf)
        np.maximum.at(read_weights, (low[between], high[between]), symmetric[first_keypoint, second_keypoint][between])
        pair_weights = read_weights[first, second]
        read_pairs = np.isfinite(pair_weights)
        strongest = np.argsort(-pair_weights[read_pairs], kind="stable")[: len(true_edges)]
        bone_recall = float(adjacency[first, second][read_pairs][strongest].sum() / len(true_edges))

        # Chance: the same readings of i.i.d. random edge weights on these keypoints.
        precision_chance = num_bones / len(candidate_weights) if num_bones else 0.0
        pair_counts = np.zeros((num_joints, num_joints), dtype=np.int64)
        np.add.at(pair_counts, (low[between], high[between]), 1)
        read_sizes = pair_counts[first, second][read_pairs]
        in_top = top_group_probabilities(read_sizes, len(true_edges))
        bone_recall_chance = float(in_top[adjacency[first, second][read_pairs]].sum() / len(true_edges))
        return {
            "edge_precision": precision,
            "spanning_tree_match": bool(tree_match),
            "bone_to_nonbone_weight_ratio": ratio,
            "nearest_joint_bone_recall": bone_recall,
            "edge_precision_chance": precision_chance,
            "nearest_joint_bone_recall_chance": bone_recall_chance,
            "matched_joints": matched_joints.tolist(),
            "mean_match_distance": float(distance[keypoints, joints].mean()),
            "num_bones_evaluated": num_bones,
        }
