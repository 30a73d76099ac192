"""Saved LPS models load as remote code without hfvision and serve the classification and segmentation pipelines."""

from __future__ import annotations

import inspect
import json
import os
import pty
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    pipeline,
)

from hfvision.demo import HIDE_HFVISION
from hfvision.models.autolink import AutoLinkImageProcessor
from hfvision.models.lps import LpsImageProcessor
from hfvision.models.mcmae import McMaeConfig, McMaeForImageClassification, McMaeImageProcessor
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


# Builds the image-classification pipeline of each checkpoint with hfvision imported and `trust_remote_code` unset.
PIPELINE_SCRIPT = textwrap.dedent(
    """
    import sys
    import hfvision
    from PIL import Image
    from transformers import pipeline

    for path in sys.argv[1:]:
        top = pipeline("image-classification", model=path)(Image.new("RGB", (40, 48), "red"))[0]
        print("pipeline ok:", type(hfvision).__name__, top["label"], flush=True)
    """
)
PROMPT = b"Do you wish to run the custom code?"


def run_in_terminal(command: list[str], env: dict[str, str], timeout: float) -> tuple[int, bytes, bool]:
    """Run `command` with a pseudo-terminal as stdin/stdout/stderr, as a user's shell would.

    transformers only asks "run custom code?" when it can read an answer, so a prompt shows up only in a terminal
    (without one, `input()` fails at once and the question is silently answered "no"). Each prompt is answered "n"
    so the run goes on.

    Returns:
        `(return code, everything the command wrote, whether it prompted)`.
    """
    controller, terminal = pty.openpty()
    process = subprocess.Popen(command, stdin=terminal, stdout=terminal, stderr=terminal, env=env, close_fds=True)
    os.close(terminal)
    output, prompted, deadline = b"", False, time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
        if PROMPT in output[-len(chunk) - len(PROMPT) :]:
            prompted = True
            os.write(controller, b"n\n")
    os.close(controller)
    return process.wait(timeout=30), output, prompted


def test_pipelines_do_not_ask_to_run_custom_code(tiny_classifier_checkpoint, tmp_path):
    """Regression: with legacy `preprocessor_config.json` files, transformers 5.24's image pipelines, which also try
    `AutoVideoProcessor`, asked in a terminal whether to run a remote `...VideoProcessor` invented from the image
    processor's `auto_map` (hfvision imported, `trust_remote_code` unset), and waited 15 s for an answer."""
    mcmae = tmp_path / "mcmae-classifier"
    McMaeForImageClassification(McMaeConfig.from_preset("mcmae-tiny", num_labels=3)).save_pretrained(mcmae)
    McMaeImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(mcmae)
    for checkpoint in (tiny_classifier_checkpoint, mcmae):
        files = set(os.listdir(checkpoint))
        assert "processor_config.json" in files and "preprocessor_config.json" not in files
        saved = json.loads((Path(checkpoint) / "processor_config.json").read_text())["image_processor"]
        assert saved["auto_map"]["AutoImageProcessor"].startswith("image_processing_")  # remote code still declared
    script = tmp_path / "pipelines.py"
    script.write_text(PIPELINE_SCRIPT)
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(script), str(tiny_classifier_checkpoint), str(mcmae)]
    returncode, output, prompted = run_in_terminal(command, env, timeout=120)
    text = output.decode(errors="replace")
    assert not prompted, text[-3000:]
    assert returncode == 0 and text.count("pipeline ok: module") == 2, text[-3000:]


def test_image_processors_share_the_nested_save():
    """MCMAE's and AutoLink's save_pretrained are marked as copies of LpsImageProcessor's; they must stay identical."""
    lps_source = inspect.getsource(LpsImageProcessor.save_pretrained)
    assert inspect.getsource(McMaeImageProcessor.save_pretrained) == lps_source
    assert inspect.getsource(AutoLinkImageProcessor.save_pretrained) == lps_source
