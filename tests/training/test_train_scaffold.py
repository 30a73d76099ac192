"""training/train_scaffold.py: the real `main([...])` briefly on the digits shards, its outputs and exact resume."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from hfvision.models.scaffold import AttentionExplainer, ScaffoldVitForImageClassification

REPO = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("train_scaffold", REPO / "training" / "train_scaffold.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return load_script()


def common_flags(output_dir: Path, data_dir: Path) -> list[str]:
    return [
        "--config", str(REPO / "training" / "configs" / "train_scaffold_digits.yaml"),
        "--output_dir", str(output_dir), "--data_dir", str(data_dir),
        "--teacher_epochs", "1", "--num_student_examples", "24", "--student_epochs", "3", "--checkpoint_epochs", "1",
    ]  # fmt: skip


def test_main_trains_teacher_and_smat_student_and_writes_final(script, tmp_path):
    results = script.main([*common_flags(tmp_path / "run", tmp_path / "data"), "--baselines", "none"])
    final = tmp_path / "run" / "final"
    saved = json.loads((final / "eval_results.json").read_text())
    assert set(saved) >= {"teacher_test_accuracy", "smat", "none", "teacher_head_weights", "history"}
    assert 0.0 <= saved["smat"]["test_simulability"] <= 1.0 and len(saved["history"]) == 3
    assert saved == json.loads(json.dumps(results))
    explainer = AttentionExplainer.from_pretrained(final / "teacher_explainer")
    assert explainer.head_coeffs.shape == (16,)
    assert not torch.allclose(explainer.head_weights(), torch.full((16,), 1 / 16))  # meta-learned, not uniform
    teacher = ScaffoldVitForImageClassification.from_pretrained(final / "teacher")
    assert teacher.config.id2label[3] == "3"
    config = json.loads((final / "teacher" / "config.json").read_text())
    assert "image-explanation" in config["custom_pipelines"]
    card = (final / "teacher_explainer" / "README.md").read_text()
    assert "simulability (smat)" in card and "simulability (none)" in card


def test_resume_continues_exactly(script, tmp_path):
    data = tmp_path / "data"
    straight = script.main([*common_flags(tmp_path / "straight", data), "--baselines", ""])
    stopped = script.main([*common_flags(tmp_path / "resumed", data), "--baselines", "", "--stop_after_epoch", "1"])
    assert stopped == {"stopped_after_epoch": 1}
    resumed = script.main(
        [*common_flags(tmp_path / "resumed", data), "--baselines", "", "--resume_from_checkpoint", "latest"]
    )
    assert resumed["history"] == straight["history"]
    assert resumed["smat"] == straight["smat"]


def test_bad_arguments(script, tmp_path):
    with pytest.raises(ValueError, match="teacher_explainer"):
        script.main(["--output_dir", str(tmp_path), "--teacher_explainer", "lime"])
    with pytest.raises(ValueError, match="baselines"):
        script.main(["--output_dir", str(tmp_path), "--baselines", "none,shap"])
