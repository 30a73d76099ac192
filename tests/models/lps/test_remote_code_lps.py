"""Saved LPS models load as remote code without hfvision and serve the classification and segmentation pipelines."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    pipeline,
)

from hfvision.demo import HIDE_HFVISION
from tests.models.lps.conftest import LABELS, random_image

# Runs in a fresh interpreter: hfvision is made unimportable before transformers is imported.
REMOTE_SCRIPT = HIDE_HFVISION + textwrap.dedent(
    """
    import sys
    import numpy as np, torch
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import (
        AutoImageProcessor, AutoModel, AutoModelForImageClassification, AutoModelForSemanticSegmentation, pipeline
    )

    classifier_path, segmenter_path, out = sys.argv[1:4]
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)) for i in range(3)]
    processor = AutoImageProcessor.from_pretrained(classifier_path, trust_remote_code=True)
    classifier = AutoModelForImageClassification.from_pretrained(classifier_path, trust_remote_code=True)
    segmenter = AutoModelForSemanticSegmentation.from_pretrained(segmenter_path, trust_remote_code=True)
    base = AutoModel.from_pretrained(classifier_path, trust_remote_code=True)
    assert type(classifier).__module__.startswith("transformers_modules"), type(classifier).__module__
    inputs = processor(images, return_tensors="pt")
    with torch.no_grad():
        logits = classifier(**inputs).logits
        segmentation = segmenter(**inputs).logits
    top = pipeline("image-classification", model=classifier_path, trust_remote_code=True)(images[0])
    save_file({"logits": logits.contiguous(), "segmentation": segmentation.contiguous()}, out)
    hidden = not any(name.startswith("hfvision") for name in sys.modules)
    print("hfvision hidden:", hidden, type(base).__name__, top[0]["label"])
    """
)


def test_remote_code_in_a_process_without_hfvision(tiny_classifier_checkpoint, tiny_segmenter_checkpoint, tmp_path):
    files = set(os.listdir(tiny_classifier_checkpoint))
    assert {"configuration_lps.py", "modeling_lps.py", "image_processing_lps.py", "model.safetensors"} <= files
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    out = tmp_path / "remote.safetensors"
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, str(script), str(tiny_classifier_checkpoint), str(tiny_segmenter_checkpoint), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hfvision hidden: True LpsResNetModel" in result.stdout

    processor = AutoImageProcessor.from_pretrained(tiny_classifier_checkpoint)
    inputs = processor([random_image(i) for i in range(3)], return_tensors="pt")
    with torch.no_grad():
        logits = AutoModelForImageClassification.from_pretrained(tiny_classifier_checkpoint)(**inputs).logits
        segmentation = AutoModelForSemanticSegmentation.from_pretrained(tiny_segmenter_checkpoint)(**inputs).logits
    remote = load_file(out)
    assert torch.equal(remote["logits"], logits)  # identical outputs with and without hfvision
    assert torch.equal(remote["segmentation"], segmentation)


def test_image_classification_pipeline(tiny_classifier_checkpoint):
    classifier = pipeline("image-classification", model=str(tiny_classifier_checkpoint))
    assert type(classifier.model).__module__.startswith("hfvision")
    for result in classifier([random_image(0), random_image(1, 90, 30)], top_k=3):
        scores = [item["score"] for item in result]
        assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
        assert {item["label"] for item in result} == set(LABELS)


def test_image_segmentation_pipeline(tiny_segmenter_checkpoint):
    segmenter = pipeline("image-segmentation", model=str(tiny_segmenter_checkpoint))
    image = random_image(2, 37, 50)
    segments = segmenter(image)
    assert segments and {item["label"] for item in segments} <= set(LABELS)
    masks = [torch.tensor(list(item["mask"].getdata())).view(37, 50) for item in segments]
    for item in segments:
        assert item["mask"].size == image.size and item["mask"].mode == "L"
    # the masks partition the image
    assert torch.equal(sum(mask // 255 for mask in masks), torch.ones(37, 50, dtype=torch.long))
