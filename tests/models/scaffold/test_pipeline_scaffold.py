"""The image-explanation pipeline, the overlay, the image processor and remote-code loading (ViT, explainer and
pipeline) in a process without hfvision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

from hfvision.demo import HIDE_HFVISION
from hfvision.hub.publish import publish
from hfvision.models.scaffold import (
    AttentionExplainer,
    AttentionExplainerConfig,
    ImageExplanationPipeline,
    ScaffoldVitConfig,
    ScaffoldVitForImageClassification,
    ScaffoldVitImageProcessor,
    overlay_saliency,
)

LABELS = ["zero", "one", "two"]


def digit_image(seed: int, size: int = 24) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """`pipeline(...).save_pretrained` of a tiny classifier (+ processor, pipeline code) and a non-uniform explainer."""
    root = tmp_path_factory.mktemp("scaffold")
    torch.manual_seed(0)
    config = ScaffoldVitConfig.from_preset(
        "scaffold-vit-tiny", id2label=dict(enumerate(LABELS)), label2id={v: k for k, v in enumerate(LABELS)}
    )
    model = ScaffoldVitForImageClassification(config).eval()
    processor = ScaffoldVitImageProcessor(size={"height": 8, "width": 8}, num_channels=1)
    pipeline("image-explanation", model=model, image_processor=processor).save_pretrained(root / "vit")
    explainer = AttentionExplainer(AttentionExplainerConfig.for_model(config, init="lecun_normal"))
    explainer.save_pretrained(root / "explainer")
    processor.save_pretrained(root / "explainer")  # as `train_scaffold.py` ships it: publishable on its own
    return root / "vit", root / "explainer"


def test_pipeline_returns_label_score_and_a_saliency_map(checkpoints):
    vit_path, explainer_path = checkpoints
    explain = pipeline("image-explanation", model=str(vit_path), pipeline_class=ImageExplanationPipeline)
    explainer = AutoModel.from_pretrained(explainer_path)
    result = explain(digit_image(0), explainer=explainer, return_overlay=True)
    assert result["label"] in LABELS and 0 < result["score"] <= 1
    saliency = torch.tensor(result["saliency_map"])
    assert saliency.shape == (2, 2) and saliency.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert result["overlay"].size == (24, 24) and result["overlay"].mode == "RGB"
    # the same numbers by hand: processor -> model scores -> explainer
    processor = AutoImageProcessor.from_pretrained(vit_path)
    model = AutoModelForImageClassification.from_pretrained(vit_path).eval()
    with torch.no_grad():
        outputs = model(**processor(digit_image(0), return_tensors="pt"), output_attention_scores=True)
        expected = explainer(outputs.attention_scores)
    torch.testing.assert_close(saliency, expected.saliency_map[0])
    assert LABELS[int(outputs.logits.argmax())] == result["label"]
    # no explainer: uniform head mixing, what a fresh (uniform) AttentionExplainer gives
    uniform = AttentionExplainer(AttentionExplainerConfig.for_model(model.config))
    torch.testing.assert_close(
        torch.tensor(explain(digit_image(0))["explanation"]), uniform(outputs.attention_scores).explanation[0]
    )
    # an explainer given by path
    by_path = explain(digit_image(0), explainer=str(explainer_path))
    assert by_path["saliency_map"] == result["saliency_map"]


def test_overlay_highlights_the_salient_patch_and_rejects_bad_maps():
    image = Image.new("L", (8, 8), color=100)
    overlay = np.asarray(overlay_saliency(image, [[0.0, 1.0], [0.0, 0.0]], alpha=1.0))
    assert tuple(overlay[0, 7]) == (255, 40, 0) and tuple(overlay[7, 0]) == (100, 100, 100)
    with pytest.raises(ValueError, match="saliency_map"):
        overlay_saliency(image, [[-1.0, 1.0]])
    with pytest.raises(ValueError, match="alpha"):
        overlay_saliency(image, [[1.0]], alpha=2.0)


def test_image_processor_gray_and_rgb():
    gray = ScaffoldVitImageProcessor(size={"height": 8, "width": 8}, num_channels=1)
    pixels = gray([digit_image(1), np.zeros((8, 8), dtype=np.uint16) + 65535], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 1, 8, 8) and pixels[1].eq(1.0).all()  # 16-bit white stays white (to_8bit_images)
    assert ScaffoldVitImageProcessor()(digit_image(1), return_tensors="pt")["pixel_values"].shape == (1, 3, 224, 224)
    with pytest.raises(ValueError, match="num_channels"):
        ScaffoldVitImageProcessor(num_channels=2)


# Runs in a fresh interpreter: hfvision is made unimportable before transformers is imported.
REMOTE_SCRIPT = HIDE_HFVISION + textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

    vit_path, explainer_path, out = sys.argv[1:4]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    processor = AutoImageProcessor.from_pretrained(vit_path, trust_remote_code=True)
    classifier = AutoModelForImageClassification.from_pretrained(vit_path, trust_remote_code=True)
    base = AutoModel.from_pretrained(vit_path, trust_remote_code=True)
    explainer = AutoModel.from_pretrained(explainer_path, trust_remote_code=True)
    for model in (classifier, base, explainer):
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        outputs = classifier(**processor(image, return_tensors="pt"), output_attention_scores=True)
        explanation = explainer(outputs.attention_scores).explanation
    explain = pipeline(model=vit_path, trust_remote_code=True)  # the task comes from custom_pipelines
    result = explain(image, explainer=explainer_path)
    save_file({"logits": outputs.logits, "explanation": explanation}, out + ".safetensors")
    with open(out + ".json", "w") as f:
        json.dump({"task": explain.task, "result": result}, f)
    hidden = not any(name.startswith("hfvision") for name in sys.modules)
    print("hfvision hidden:", hidden, type(classifier).__name__, type(explainer).__name__, type(explain).__name__)
    """
)


@pytest.mark.parametrize("source", ["folder", "local_hub"])
def test_remote_code_in_a_process_without_hfvision(checkpoints, tmp_path, source, request):
    """Both checkpoints load as remote code from their folders, and by repo id once published to the local Hub."""
    vit_path, explainer_path = checkpoints
    files = set(os.listdir(vit_path))
    assert {"configuration_scaffold.py", "modeling_scaffold.py", "pipeline_scaffold.py", "model.safetensors"} <= files
    assert {"configuration_scaffold.py", "modeling_scaffold.py"} <= set(os.listdir(explainer_path))
    config = json.loads((vit_path / "config.json").read_text())
    assert config["custom_pipelines"]["image-explanation"]["impl"] == "pipeline_scaffold.ImageExplanationPipeline"
    sources = [str(vit_path), str(explainer_path)]
    if source == "local_hub":
        request.getfixturevalue("local_hub")
        sources = ["org/scaffold-vit-tiny-hub-test", "org/scaffold-vit-tiny-explainer-hub-test"]
        for checkpoint, repo_id in zip((vit_path, explainer_path), sources, strict=True):
            card = ModelCard(f"---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# {repo_id}\n")
            uploaded = publish(checkpoint, repo_id, card=card, commit_message="tiny Scaffold checkpoint")
            assert "model.safetensors" in uploaded and "modeling_scaffold.py" in uploaded
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    out = tmp_path / "remote"
    # a fresh cache: by repo id, the subprocess downloads both repos from the local Hub (HF_ENDPOINT is inherited)
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, str(script), *sources, str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "hfvision hidden: True ScaffoldVitForImageClassification AttentionExplainer ImageExplanationPipeline"
        in result.stdout
    )
    processor = AutoImageProcessor.from_pretrained(vit_path)
    model = AutoModelForImageClassification.from_pretrained(vit_path).eval()
    explainer = AutoModel.from_pretrained(explainer_path)
    with torch.no_grad():
        outputs = model(**processor(digit_image(0), return_tensors="pt"), output_attention_scores=True)
        explanation = explainer(outputs.attention_scores).explanation
    remote = load_file(f"{out}.safetensors")
    assert torch.equal(remote["logits"], outputs.logits)
    assert torch.equal(remote["explanation"], explanation)
    remote_result = json.loads(out.with_suffix(".json").read_text())
    assert remote_result["task"] == "image-explanation"
    local = pipeline("image-explanation", model=str(vit_path), pipeline_class=ImageExplanationPipeline)
    mine = local(digit_image(0), explainer=str(explainer_path))
    assert mine["saliency_map"] == remote_result["result"]["saliency_map"]
    assert mine["label"] == remote_result["result"]["label"]
