"""A saved PyramidCLIP loads and runs as Hub remote code in a process that cannot import hfvision."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor, pipeline

from hfvision.demo import HIDE_HFVISION
from tests.models.pyramidclip.conftest import CAPTIONS, random_image

# Runs in a fresh interpreter: hfvision is made unimportable before transformers is imported.
REMOTE_SCRIPT = HIDE_HFVISION + textwrap.dedent(
    """
    import sys
    import numpy as np, torch
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoModelForImageClassification, AutoProcessor, pipeline

    checkpoint, out = sys.argv[1], sys.argv[2]
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)) for i in range(4)]
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        logits = model(**processor(text=sys.argv[3:], images=images)).logits_per_image
    head = AutoModelForImageClassification.from_pretrained(checkpoint, trust_remote_code=True, num_labels=3)
    classifier = pipeline("zero-shot-image-classification", model=checkpoint, trust_remote_code=True)
    scores = classifier(images[0], candidate_labels=sys.argv[3:])
    save_file({"logits": logits.contiguous(), "scores": torch.tensor([s["score"] for s in scores])}, out)
    print("hfvision loaded:", any(name.startswith("hfvision") for name in sys.modules), type(head).__name__)
    """
)


def test_remote_code_in_a_process_without_hfvision(tiny_checkpoint, tmp_path):
    files = set(os.listdir(tiny_checkpoint))
    assert {"configuration_pyramidclip.py", "modeling_pyramidclip.py", "processing_pyramidclip.py"} <= files
    assert {"image_processing_pyramidclip.py", "model.safetensors", "processor_config.json", "tokenizer.json"} <= files
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    out = tmp_path / "remote.safetensors"
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, str(script), str(tiny_checkpoint), str(out), *CAPTIONS],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hfvision loaded: False PyramidClipForImageClassification" in result.stdout

    model = AutoModel.from_pretrained(tiny_checkpoint)
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        expected = model(**processor(text=CAPTIONS, images=[random_image(i) for i in range(4)])).logits_per_image
    remote = load_file(out)
    assert torch.equal(remote["logits"], expected)  # identical outputs with and without hfvision
    assert torch.all(remote["scores"][:-1] >= remote["scores"][1:])


def test_zero_shot_pipeline_without_remote_code(tiny_checkpoint):
    classifier = pipeline("zero-shot-image-classification", model=str(tiny_checkpoint))
    assert type(classifier.model).__module__.startswith("hfvision")
    for batch in ([random_image(0)], [random_image(1, 90, 30), random_image(2, 20, 70)]):
        for result in classifier(batch, candidate_labels=["red circle", "blue square", "green triangle"]):
            scores = [item["score"] for item in result]
            assert scores == sorted(scores, reverse=True)
            assert abs(sum(scores) - 1) < 1e-5
            assert {item["label"] for item in result} == {"red circle", "blue square", "green triangle"}
