"""Tests of the shipped `evaluate` metric modules, against hand-worked cases and independent pure-Python versions."""

import time

import numpy as np
import pytest

from hfvision.metrics import available_metrics, load_metric


def reference_top_k(scores: list[list[float]], labels: list[int], k: int) -> float:
    """Top-k accuracy by sorting each row in pure Python (ties: lower class index first, as argmax)."""
    hits = 0
    for row, label in zip(scores, labels, strict=True):
        ranked = sorted(range(len(row)), key=lambda c: (-row[c], c))
        hits += label in ranked[:k]
    return hits / len(labels)


def reference_recall(similarity: list[list[float]], positives: list[set[int]], k: int) -> float:
    """Recall@k of queries (rows) with their sets of matching candidates, by sorting each row in pure Python."""
    hits = 0
    for row, matches in zip(similarity, positives, strict=True):
        ranked = sorted(range(len(row)), key=lambda c: (-row[c], c))
        hits += bool(matches & set(ranked[:k]))
    return hits / len(similarity)


@pytest.fixture(scope="module")
def zero_shot_accuracy():
    return load_metric("zero_shot_accuracy")


@pytest.fixture(scope="module")
def retrieval_recall():
    return load_metric("retrieval_recall")


def test_available_metrics_lists_shipped_modules():
    assert {"zero_shot_accuracy", "retrieval_recall"} <= set(available_metrics())


def test_a_failed_compute_leaves_the_metric_usable(retrieval_recall):
    with pytest.raises(ValueError, match="no matching text"):
        retrieval_recall.compute(predictions=[[0.1, 0.2], [0.3, 0.4]], references=[0, 1], text_to_image=[0, 0])
    start = time.perf_counter()
    result = retrieval_recall.compute(predictions=[[0.9, 0.1], [0.8, 0.2]], references=[0, 1], recall_at=(1,))
    # A file-backed module keeps its cache-file lock after an error and the next compute waits ~1 s for it.
    assert time.perf_counter() - start < 0.5
    assert result == {"image_to_text_recall@1": 0.5, "text_to_image_recall@1": 1.0}


def test_load_metric_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("accuracy")


# --- zero_shot_accuracy ---


def test_zero_shot_hand_checked(zero_shot_accuracy):
    scores = [
        [0.1, 0.7, 0.2],  # label 1 ranked 1st
        [0.5, 0.3, 0.2],  # label 2 ranked 3rd
        [0.2, 0.5, 0.3],  # label 2 ranked 2nd
        [0.6, 0.4, 0.0],  # label 0 ranked 1st
    ]
    labels = [1, 2, 2, 0]
    result = zero_shot_accuracy.compute(predictions=scores, references=labels, top_k=(1, 2, 3))
    assert result == {"top1_accuracy": 0.5, "top2_accuracy": 0.75, "top3_accuracy": 1.0}


def test_zero_shot_default_reports_top1_and_top5(zero_shot_accuracy):
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(20, 10)), rng.integers(0, 10, size=20)
    result = zero_shot_accuracy.compute(predictions=scores, references=labels)
    assert set(result) == {"top1_accuracy", "top5_accuracy"}
    assert result["top1_accuracy"] == pytest.approx(float((scores.argmax(1) == labels).mean()))


def test_zero_shot_matches_pure_python_with_ties(zero_shot_accuracy):
    # Small integer scores make many ties; the metric must break them like argmax (lower index first).
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(50, 8)).astype(float).tolist()
    labels = rng.integers(0, 8, size=50).tolist()
    result = zero_shot_accuracy.compute(predictions=scores, references=labels, top_k=(1, 3, 5))
    for k in (1, 3, 5):
        assert result[f"top{k}_accuracy"] == pytest.approx(reference_top_k(scores, labels, k))
    assert result["top1_accuracy"] == pytest.approx(float((np.argmax(scores, 1) == np.array(labels)).mean()))


def test_zero_shot_clips_k_to_number_of_classes(zero_shot_accuracy):
    scores = [[0.9, 0.1, 0.0], [0.0, 0.1, 0.9], [0.5, 0.3, 0.2]]
    labels = [2, 2, 2]  # ranks 3, 1, 3
    result = zero_shot_accuracy.compute(predictions=scores, references=labels, top_k=(1, 5))
    assert result == {"top1_accuracy": pytest.approx(1 / 3), "top5_accuracy": 1.0}  # top-5 of 3 classes = top-3


def test_zero_shot_accepts_class_ids(zero_shot_accuracy):
    result = zero_shot_accuracy.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    assert result == {"top1_accuracy": 0.75}


def test_zero_shot_class_ids_have_no_top5(zero_shot_accuracy):
    with pytest.raises(ValueError, match="only give top-1"):
        zero_shot_accuracy.compute(predictions=[0, 1], references=[0, 1], top_k=(5,))


def test_zero_shot_rejects_out_of_range_labels(zero_shot_accuracy):
    with pytest.raises(ValueError, match="class ids"):
        zero_shot_accuracy.compute(predictions=[[0.1, 0.9]], references=[2])


# --- retrieval_recall ---


def test_retrieval_hand_checked_one_caption_per_image(retrieval_recall):
    similarity = [
        [0.9, 0.1, 0.0],  # image 0: text 0 ranked 1st
        [0.8, 0.5, 0.6],  # image 1: text 1 ranked 3rd
        [0.1, 0.2, 0.7],  # image 2: text 2 ranked 1st
    ]
    # Columns, text -> image: text 0 [0.9, 0.8, 0.1] -> image 0 1st; text 1 [0.1, 0.5, 0.2] -> image 1 1st;
    # text 2 [0.0, 0.6, 0.7] -> image 2 1st.
    result = retrieval_recall.compute(predictions=similarity, references=[0, 1, 2], recall_at=(1, 2, 3))
    assert result == {
        "image_to_text_recall@1": pytest.approx(2 / 3),
        "image_to_text_recall@2": pytest.approx(2 / 3),
        "image_to_text_recall@3": 1.0,
        "text_to_image_recall@1": 1.0,
        "text_to_image_recall@2": 1.0,
        "text_to_image_recall@3": 1.0,
    }


def test_retrieval_default_keys(retrieval_recall):
    result = retrieval_recall.compute(predictions=np.eye(4), references=range(4))
    assert result == {f"{d}_recall@{k}": 1.0 for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)}


def test_retrieval_several_captions_per_image(retrieval_recall):
    # 2 images x 4 captions: texts 0, 1 describe image 0; texts 2, 3 describe image 1.
    similarity = [
        [0.1, 0.8, 0.9, 0.0],  # image 0: best caption (text 1) ranked 2nd
        [0.3, 0.2, 0.1, 0.7],  # image 1: best caption (text 3) ranked 1st
    ]
    # text -> image: text 0 [0.1, 0.3] wrong; text 1 [0.8, 0.2] right; text 2 [0.9, 0.1] wrong; text 3 right.
    expected = {
        "image_to_text_recall@1": 0.5,
        "image_to_text_recall@2": 1.0,
        "text_to_image_recall@1": 0.5,
        "text_to_image_recall@2": 1.0,
    }
    by_id = retrieval_recall.compute(
        predictions=similarity, references=[0, 1], text_to_image=[0, 0, 1, 1], recall_at=(1, 2)
    )
    by_lists = retrieval_recall.compute(predictions=similarity, references=[[0, 1], [2, 3]], recall_at=(1, 2))
    assert by_id == expected
    assert by_lists == expected


def test_retrieval_matches_pure_python_with_ties(retrieval_recall):
    # 6 images, 5 captions each (COCO layout), integer similarities so ties happen.
    rng = np.random.default_rng(2)
    num_images, captions = 6, 5
    similarity = rng.integers(0, 5, size=(num_images, num_images * captions)).astype(float)
    text_to_image = np.repeat(np.arange(num_images), captions)
    result = retrieval_recall.compute(
        predictions=similarity, references=list(range(num_images)), text_to_image=text_to_image.tolist()
    )
    image_positives = [set(np.flatnonzero(text_to_image == i).tolist()) for i in range(num_images)]
    text_positives = [{int(i)} for i in text_to_image]
    for k in (1, 5, 10):
        assert result[f"image_to_text_recall@{k}"] == pytest.approx(
            reference_recall(similarity.tolist(), image_positives, k)
        )
        assert result[f"text_to_image_recall@{k}"] == pytest.approx(
            reference_recall(similarity.T.tolist(), text_positives, k)
        )


def test_retrieval_distractor_texts_are_not_queries(retrieval_recall):
    # Text 2 matches no image: it can outrank the true caption but is not a text -> image query.
    similarity = [[0.2, 0.1, 0.9], [0.1, 0.8, 0.0]]
    result = retrieval_recall.compute(predictions=similarity, references=[0, 1], recall_at=(1,))
    assert result == {"image_to_text_recall@1": 0.5, "text_to_image_recall@1": 1.0}


def test_retrieval_rejects_lists_together_with_text_to_image(retrieval_recall):
    with pytest.raises(ValueError, match="not both"):
        retrieval_recall.compute(predictions=[[0.1, 0.2]], references=[[0, 1]], text_to_image=[0, 0])


def test_retrieval_rejects_image_without_caption(retrieval_recall):
    with pytest.raises(ValueError, match="no matching text"):
        retrieval_recall.compute(predictions=[[0.1, 0.2], [0.3, 0.4]], references=[0, 1], text_to_image=[0, 0])
