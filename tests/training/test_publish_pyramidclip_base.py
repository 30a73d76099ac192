"""The PyramidCLIP base path end to end: an official-format ViT-B/16 checkpoint (random weights) -> converter ->
`org/pyramidclip-base` on the local Hub -> `AutoModel` and the zero-shot pipeline by repo id without hfvision.

Slow: the base model has about 150M parameters (600 MB, written four times); about two minutes on one CPU core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

SCRIPT = Path(__file__).resolve().parents[2] / "training" / "publish_pyramidclip_base.py"


@pytest.mark.slow
def test_base_checkpoint_converts_publishes_and_loads_without_hfvision(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--output_dir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=1200, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads((tmp_path / "loaded_without_hfvision.json").read_text())
    assert loaded["hfvision_hidden"]
    assert loaded["model_class"].startswith("transformers_modules.") and loaded["model_class"].endswith(
        "PyramidClipModel"
    )
    assert loaded["pipeline_model_class"] == "PyramidClipModel"
    scores = [item["score"] for item in loaded["scores"]]
    assert len(scores) == 3 and abs(sum(scores) - 1) < 1e-4 and scores == sorted(scores, reverse=True)

    converted = tmp_path / "pyramidclip-base"
    config = json.loads((converted / "config.json").read_text())
    assert (config["vision_config"]["hidden_size"], config["vision_config"]["patch_size"]) == (768, 16)
    assert config["text_config"]["vocab_size"] == 49408
    card = ModelCard.load(converted / "README.md")
    assert "Converted from an official-format checkpoint with random weights." in card.text
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert not (tmp_path / "PyramidCLIP-random-ViT-B16.pth.tar").exists()  # the pickle input is not kept
