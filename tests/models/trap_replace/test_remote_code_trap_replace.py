"""Both stages' checkpoints, published to the local Hub, load by repo id as remote code in a process without
hfvision; stage 2 (the defended model) serves the image-classification pipeline there and here."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from hfvision.demo import HIDE_HFVISION
from hfvision.hub.publish import publish
from tests.models.trap_replace.conftest import LABELS, random_image

REMOTE_SCRIPT = HIDE_HFVISION + textwrap.dedent(
    """
    import sys
    import numpy as np, torch
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

    stage1, stage2, out = sys.argv[1:4]
    images = [
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 24), dtype=np.uint8), mode="L")
        for i in range(3)
    ]
    processor = AutoImageProcessor.from_pretrained(stage2, trust_remote_code=True)
    trapped = AutoModelForImageClassification.from_pretrained(stage1, trust_remote_code=True).eval()
    defended = AutoModelForImageClassification.from_pretrained(stage2, trust_remote_code=True).eval()
    stem = AutoModel.from_pretrained(stage2, trust_remote_code=True)
    assert type(defended).__module__.startswith("transformers_modules"), type(defended).__module__
    inputs = processor(images, return_tensors="pt")
    with torch.no_grad():
        first = trapped(**inputs)
        logits = defended(**inputs).logits
    top = pipeline("image-classification", model=stage2, trust_remote_code=True)(images[0])
    save_file(
        {
            "pixel_values": inputs["pixel_values"].contiguous(),
            "trap_logits": first.logits.contiguous(),
            "reconstruction": first.reconstruction.contiguous(),
            "logits": logits.contiguous(),
        },
        out,
    )
    hidden = not any(name.startswith("hfvision") for name in sys.modules)
    print("hfvision hidden:", hidden, type(stem).__name__, defended.config.head_replaced, top[0]["label"])
    """
)


def test_remote_code_of_both_stages_by_repo_id_in_a_process_without_hfvision(local_hub, tiny_checkpoints, tmp_path):
    stage1, stage2 = tiny_checkpoints
    repo_ids = []
    for stage, checkpoint in (("stage1", stage1), ("stage2", stage2)):
        files = set(os.listdir(checkpoint))
        expected = {"configuration_trap_replace.py", "modeling_trap_replace.py", "image_processing_trap_replace.py"}
        assert expected | {"model.safetensors"} <= files
        repo_id = f"org/trap-replace-tiny-{stage}-hub-test"
        card = ModelCard(
            f"---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# tiny Trap and Replace, {stage}\n"
        )
        uploaded = publish(checkpoint, repo_id, card=card, commit_message=f"tiny Trap and Replace {stage}")
        assert "model.safetensors" in uploaded and not any(name.endswith((".bin", ".pkl")) for name in uploaded)
        repo_ids.append(repo_id)
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    out = tmp_path / "remote.safetensors"
    # a fresh cache: the subprocess downloads both repos from the local Hub (HF_ENDPOINT is inherited)
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(script), *repo_ids, str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hfvision hidden: True TrapReplaceModel True" in result.stdout

    remote = load_file(out)
    processor = AutoImageProcessor.from_pretrained(stage2)
    inputs = processor([random_image(i) for i in range(3)], return_tensors="pt")
    assert inputs["pixel_values"].shape == (3, 1, 16, 16)
    assert torch.equal(remote["pixel_values"], inputs["pixel_values"])
    # one thread, as the subprocess: the CPU convolution's summation order depends on the thread count
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            first = AutoModelForImageClassification.from_pretrained(stage1).eval()(**inputs)
            logits = AutoModelForImageClassification.from_pretrained(stage2).eval()(**inputs).logits
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(remote["trap_logits"], first.logits)  # identical outputs with and without hfvision
    assert torch.equal(remote["reconstruction"], first.reconstruction)
    assert torch.equal(remote["logits"], logits)


def test_image_classification_pipeline_on_the_defended_model(tiny_checkpoints):
    _, stage2 = tiny_checkpoints
    classifier = pipeline("image-classification", model=str(stage2))
    assert type(classifier.model).__module__.startswith("hfvision")
    for result in classifier([random_image(0), random_image(1, 40, 30).convert("RGB")], top_k=3):
        scores = [item["score"] for item in result]
        assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
        assert {item["label"] for item in result} == set(LABELS)
