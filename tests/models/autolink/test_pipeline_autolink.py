"""The keypoint-detection pipeline (in process and as remote code) and Auto-class loading without hfvision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel, AutoModelForPreTraining, pipeline

from hfvision.demo import HIDE_HFVISION
from hfvision.models.autolink import (
    AutoLinkForSelfSupervisedKeypoints,
    AutoLinkModel,
    KeypointDetectionPipeline,
    draw_keypoints,
)
from tests.models.autolink.conftest import STRONG_EDGES, random_image

SIZES = ((40, 48), (90, 30), (32, 32))  # (height, width): wide, tall and square


def images() -> list:
    return [random_image(seed, height, width) for seed, (height, width) in enumerate(SIZES)]


def mask_noise() -> torch.Tensor:
    return torch.rand(len(SIZES), 8, 8, generator=torch.Generator().manual_seed(0))


def test_pipeline_returns_pixel_keypoints_inside_the_image_and_the_strong_edges(tiny_checkpoint):
    # every checkpoint declares its pipeline (`custom_pipelines`): hfvision's class is named, or trust_remote_code
    detector = pipeline("keypoint-detection", model=str(tiny_checkpoint), pipeline_class=KeypointDetectionPipeline)
    assert isinstance(detector, KeypointDetectionPipeline) and isinstance(detector.model, AutoLinkModel)
    results = detector(images())
    processor = AutoImageProcessor.from_pretrained(tiny_checkpoint)
    model = AutoModel.from_pretrained(tiny_checkpoint)
    for image, result in zip(images(), results, strict=True):
        keypoints = torch.tensor(result["keypoints"])
        assert keypoints.shape == (6, 2)
        assert (keypoints >= 0).all() and (keypoints[:, 0] <= image.width - 1).all()
        assert (keypoints[:, 1] <= image.height - 1).all()
        # the same numbers as processor -> model -> post-processing by hand
        with torch.no_grad():
            normalised = model(**processor(image, return_tensors="pt")).keypoints[0]  # (x, y) in [-1, 1]
        expected = (normalised + 1) / 2 * torch.tensor([image.width - 1, image.height - 1])
        torch.testing.assert_close(keypoints, expected)
        # strong edges 0-1, 1-2, 2-3 weigh softplus(1, 2, 3) = 1.31, 2.13, 3.05: half the strongest keeps two
        assert [(i, j) for i, j, _ in result["edges"]] == [(2, 3), (1, 2)]
        assert result["edges"][0][2] == pytest.approx(3.0486, abs=1e-4)
        assert draw_keypoints(image, **result).size == image.size
    lenient = detector(images()[0], edge_threshold=0.4)
    assert sorted((i, j) for i, j, _ in lenient["edges"]) == sorted(STRONG_EDGES)
    batched = detector(images(), batch_size=2)
    for single, in_batch in zip(results, batched, strict=True):
        torch.testing.assert_close(torch.tensor(single["keypoints"]), torch.tensor(in_batch["keypoints"]))
        assert single["edges"] == in_batch["edges"]


def test_pipeline_save_pretrained_ships_the_pipeline_code(pipeline_checkpoint):
    files = set(os.listdir(pipeline_checkpoint))
    expected_files = {"configuration_autolink.py", "modeling_autolink.py", "image_processing_autolink.py"}
    assert expected_files | {"pipeline_autolink.py", "model.safetensors", "processor_config.json"} <= files
    config = json.loads((pipeline_checkpoint / "config.json").read_text())
    assert config["custom_pipelines"] == {
        "keypoint-detection": {
            "impl": "pipeline_autolink.KeypointDetectionPipeline",
            "pt": ["AutoModel"],
            "type": "image",
        }
    }
    assert config["auto_map"]["AutoModelForPreTraining"] == "modeling_autolink.AutoLinkForSelfSupervisedKeypoints"
    # the self-supervised weights: the same checkpoint opens the base model and the training model
    assert isinstance(AutoModelForPreTraining.from_pretrained(pipeline_checkpoint), AutoLinkForSelfSupervisedKeypoints)
    # with `custom_pipelines` transformers asks for trust_remote_code, or a pipeline class given by hand
    detector = pipeline("keypoint-detection", model=str(pipeline_checkpoint), pipeline_class=KeypointDetectionPipeline)
    assert type(detector.model).__module__.startswith("hfvision")
    assert len(detector(images()[0])["keypoints"]) == 6


# Runs in a fresh interpreter: hfvision is made unimportable before transformers is imported.
REMOTE_SCRIPT = HIDE_HFVISION + textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import AutoImageProcessor, AutoModel, AutoModelForPreTraining, pipeline

    checkpoint, out = sys.argv[1:3]
    sizes = ((40, 48), (90, 30), (32, 32))
    images = [
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
        for seed, (h, w) in enumerate(sizes)
    ]
    noise = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    processor = AutoImageProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    base = AutoModel.from_pretrained(checkpoint, trust_remote_code=True)
    head = AutoModelForPreTraining.from_pretrained(checkpoint, trust_remote_code=True)
    for model in (base, head):
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    inputs = processor(images, return_tensors="pt")
    with torch.no_grad():
        keypoints = base(**inputs).keypoints
        reconstruction = head(**inputs, noise=noise).reconstruction
    detector = pipeline(model=checkpoint, trust_remote_code=True)  # the task comes from custom_pipelines
    results = detector(images)
    save_file({"keypoints": keypoints, "reconstruction": reconstruction}, out + ".safetensors")
    with open(out + ".json", "w") as f:
        json.dump({"task": detector.task, "results": results}, f)
    hidden = not any(name.startswith("hfvision") for name in sys.modules)
    print("hfvision hidden:", hidden, type(base).__name__, type(detector).__name__)
    """
)


def test_remote_code_in_a_process_without_hfvision(pipeline_checkpoint, tmp_path):
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    out = tmp_path / "remote"
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, str(script), str(pipeline_checkpoint), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hfvision hidden: True AutoLinkModel KeypointDetectionPipeline" in result.stdout

    # identical numbers with hfvision's own classes
    processor = AutoImageProcessor.from_pretrained(pipeline_checkpoint)
    inputs = processor(images(), return_tensors="pt")
    with torch.no_grad():
        keypoints = AutoModel.from_pretrained(pipeline_checkpoint)(**inputs).keypoints
        head = AutoModelForPreTraining.from_pretrained(pipeline_checkpoint)
        reconstruction = head(**inputs, noise=mask_noise()).reconstruction
    remote = load_file(f"{out}.safetensors")
    assert torch.equal(remote["keypoints"], keypoints)
    assert torch.equal(remote["reconstruction"], reconstruction)
    remote_results = json.loads(out.with_suffix(".json").read_text())
    assert remote_results["task"] == "keypoint-detection"
    local = pipeline("keypoint-detection", model=str(pipeline_checkpoint), pipeline_class=KeypointDetectionPipeline)
    for mine, theirs in zip(local(images()), remote_results["results"], strict=True):
        assert mine["keypoints"] == theirs["keypoints"]
        assert [list(edge) for edge in mine["edges"]] == theirs["edges"]
