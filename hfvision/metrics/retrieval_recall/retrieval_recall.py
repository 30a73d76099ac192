"""Image-text retrieval Recall@K, as an `evaluate` metric module.

The measure CLIP-style papers report for zero-shot retrieval on MS-COCO and Flickr30K (PyramidCLIP, arXiv
2204.14095, Table 4): for each image query, whether any of its captions is among the K texts most similar to it
(image -> text), and for each caption query, whether its image is among the K most similar images (text -> image).

Input is one row per image: `predictions` is that image's similarity to every text (a row of the
(N_images, N_texts) matrix) and `references` says which texts match it. Ties are broken towards the lower index
(a stable descending sort), as in `argmax`.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Image->text and text->image Recall@K from an (N_images, N_texts) similarity matrix, fed one row per image. A query
counts as a hit at K when at least one of its ground-truth matches is among its K highest-scoring candidates.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (N_images, N_texts) similarities; row i is image i against every text.
    references: the ground-truth pairing, one entry per image, either
        - an int per image: with `text_to_image` unset, the index of the text that matches it (the usual
          one-caption-per-image case is `references = range(N)`: image i matches text i); with `text_to_image`
          set, the image's id, and the image matches every text j with `text_to_image[j] == id`; or
        - a list of ints per image: the indices of all the texts that match it (then `text_to_image` must be unset).
    text_to_image: optional (N_texts,) ints, the image id each text describes; several captions per image share an
        id (e.g. COCO's 5 captions per image: `text_to_image = [0, 0, 0, 0, 0, 1, ...]`, `references = range(N)`).
    recall_at: tuple of K values (default (1, 5, 10)).

Returns:
    A dict of floats in [0, 1]: `image_to_text_recall@{k}` and `text_to_image_recall@{k}` for each k. Texts that
    match no image are distractors for the image->text direction and are not used as text->image queries.

Examples:
    >>> metric = evaluate.load("hfvision/metrics/retrieval_recall")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.8, 0.2]], references=[0, 1], recall_at=(1,))
    {'image_to_text_recall@1': 0.5, 'text_to_image_recall@1': 1.0}
"""

_CITATION = """\
@inproceedings{gao2022pyramidclip,
  title={PyramidCLIP: Hierarchical Feature Alignment for Vision-language Model Pretraining},
  author={Gao, Yuting and Liu, Jinfeng and Xu, Zihan and Zhang, Jun and Li, Ke and Ji, Rongrong and Shen, Chunhua},
  booktitle={Advances in Neural Information Processing Systems},
  year={2022}
}
"""


def _best_match_rank(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Rank (0 = first) of the best-placed positive in each row of a stable descending sort.

    Args:
        scores: (Q, C) float scores of Q queries against C candidates.
        positives: (Q, C) bool, True where the candidate matches the query; every row has at least one True.

    Returns:
        (Q,) int ranks.
    """
    # The best-placed positive has the highest score and, among equal scores, the lowest index.
    best_score = np.where(positives, scores, -np.inf).max(1, keepdims=True)  # (Q, 1)
    best_index = np.argmax(positives & (scores == best_score), axis=1)[:, None]  # (Q, 1), first such column
    lower_index = np.arange(scores.shape[1])[None, :] < best_index
    return (scores > best_score).sum(1) + ((scores == best_score) & lower_index).sum(1)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RetrievalRecall(evaluate.Metric):
    """Bidirectional Recall@K from a similarity matrix given one row per image."""

    def _info(self) -> evaluate.MetricInfo:
        # float32 rows: similarity matrices get large (COCO 5k x 25k) and models produce float32 anyway.
        row = datasets.Sequence(datasets.Value("float32"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # Two accepted schemas, tried in order on the first example: one matching text (or image id) per image,
            # or a list of matching text indices per image.
            features=[
                datasets.Features({"predictions": row, "references": datasets.Value("int64")}),
                datasets.Features({"predictions": row, "references": datasets.Sequence(datasets.Value("int64"))}),
            ],
        )

    def _compute(
        self,
        predictions,
        references,
        text_to_image: list[int] | None = None,
        recall_at: tuple[int, ...] = (1, 5, 10),
    ) -> dict[str, float]:
        similarity = np.asarray(predictions)
        if similarity.dtype == object or similarity.ndim != 2:
            raise ValueError("`predictions` must be an (N_images, N_texts) matrix: every row the same length")
        num_images, num_texts = similarity.shape
        recall_at = (recall_at,) if isinstance(recall_at, int) else tuple(recall_at)
        if not recall_at or any(int(k) < 1 for k in recall_at):
            raise ValueError(f"`recall_at` must be positive integers, got {recall_at}")

        # (N_images, N_texts) bool: which texts match which image.
        references = list(references)
        if references and np.ndim(references[0]) == 1:  # a list of matching text indices per image
            if text_to_image is not None:
                raise ValueError("pass either lists of text indices as `references` or `text_to_image`, not both")
            rows = np.repeat(np.arange(num_images), [len(r) for r in references])
            cols = np.concatenate([np.asarray(r, dtype=np.int64) for r in references])
        else:
            image_ids = np.asarray(references, dtype=np.int64)
            if text_to_image is None:  # the reference is the matching text's index
                rows, cols = np.arange(num_images), image_ids
            else:
                text_ids = np.asarray(text_to_image, dtype=np.int64)
                if text_ids.shape != (num_texts,):
                    raise ValueError(
                        f"`text_to_image` must hold one image id per text ({num_texts}), got {text_ids.shape}"
                    )
                rows, cols = np.nonzero(image_ids[:, None] == text_ids[None, :])
        if len(cols) and (cols.min() < 0 or cols.max() >= num_texts):
            raise ValueError(f"text indices in `references` must lie in [0, {num_texts})")
        matches = np.zeros((num_images, num_texts), dtype=bool)
        matches[rows, cols] = True
        if not matches.any(1).all():
            raise ValueError(f"images {np.flatnonzero(~matches.any(1)).tolist()[:10]} have no matching text")

        image_rank = _best_match_rank(similarity, matches)  # (N_images,)
        text_queries = matches.any(0)  # texts that match no image are distractors only
        text_rank = _best_match_rank(similarity.T[text_queries], matches.T[text_queries])  # (N_text_queries,)
        results = {}
        for direction, rank in (("image_to_text", image_rank), ("text_to_image", text_rank)):
            for k in recall_at:
                results[f"{direction}_recall@{int(k)}"] = float((rank < int(k)).mean())
        return results
