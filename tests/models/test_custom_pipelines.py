"""Custom pipelines travel with every checkpoint: plain `model.save_pretrained` writes the pipeline's file and its
`custom_pipelines` entry, so a published checkpoint runs `pipeline(task, model=repo_id, trust_remote_code=True)` in a
process without hfvision (issue 17, section 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel, pipeline
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.pipelines import PIPELINE_REGISTRY

from hfvision.demo import HIDE_HFVISION
from hfvision.hub.publish import publish
from hfvision.models.autolink import (
    AutoLinkConfig,
    AutoLinkForSelfSupervisedKeypoints,
    AutoLinkImageProcessor,
    AutoLinkModel,
    KeypointDetectionPipeline,
)
from hfvision.models.scaffold import ScaffoldVitConfig, ScaffoldVitForImageClassification, ScaffoldVitModel
from hfvision.models.score_sde import EmpiricalScoreConfig, EmpiricalScoreModel, ScoreSdeConfig, ScoreSdeModel
from hfvision.models.vatt import VattConfig, VattForPreTraining, VattForVideoClassification, VattModel
from tests.models.autolink.conftest import random_image, tiny_model, tiny_processor

# Every model class that ships a custom pipeline, by task: a tiny instance of each.
SHIPPING: dict[str, list[Callable[[], PreTrainedModel]]] = {
    "keypoint-detection": [
        lambda: AutoLinkModel(AutoLinkConfig.from_preset("autolink-tiny")),
        lambda: AutoLinkForSelfSupervisedKeypoints(AutoLinkConfig.from_preset("autolink-tiny")),
    ],
    "image-explanation": [
        lambda: ScaffoldVitForImageClassification(ScaffoldVitConfig.from_preset("scaffold-vit-tiny"))
    ],
    "unconditional-sample-generation": [
        lambda: ScoreSdeModel(ScoreSdeConfig.from_preset("score-sde-tiny")),
        lambda: EmpiricalScoreModel(EmpiricalScoreConfig(data_dim=3, num_training_points=4)),
    ],
    "video-text-retrieval": [
        lambda: VattModel(VattConfig.from_preset("vatt-tiny")),
        lambda: VattForPreTraining(VattConfig.from_preset("vatt-tiny")),
    ],
}
# Checkpoints of the same methods whose task is another one: no custom pipeline (it would become their default task).
NOT_SHIPPING = [
    lambda: ScaffoldVitModel(ScaffoldVitConfig.from_preset("scaffold-vit-tiny")),
    lambda: VattForVideoClassification(VattConfig.from_preset("vatt-tiny", num_labels=3)),
]


def _hfvision_tasks() -> dict[str, dict]:
    """The tasks `import hfvision` registered with pipeline classes of its own."""
    tasks = {}
    for task in PIPELINE_REGISTRY.get_supported_tasks():
        info = PIPELINE_REGISTRY.supported_tasks.get(task)
        impl = info and info.get("impl")
        if isinstance(impl, type) and impl.__module__.startswith("hfvision.models."):
            tasks[task] = info
    return tasks


def test_every_registered_pipeline_is_shipped_by_some_model():
    assert set(_hfvision_tasks()) == set(SHIPPING)


@pytest.mark.parametrize(
    ("task", "make_model"),
    [(task, make) for task, makers in SHIPPING.items() for make in makers],
    ids=[f"{task}-{index}" for task, makers in SHIPPING.items() for index in range(len(makers))],
)
def test_save_pretrained_writes_the_pipeline_file_and_entry(task, make_model, tmp_path):
    make_model().save_pretrained(tmp_path)
    info = _hfvision_tasks()[task]
    module_file = Path(sys.modules[info["impl"].__module__].__file__)
    expected = {
        "impl": f"{module_file.stem}.{info['impl'].__name__}",
        "pt": [auto_class.__name__ for auto_class in info["pt"]],
        "type": info["type"],
    }
    assert json.loads((tmp_path / "config.json").read_text())["custom_pipelines"] == {task: expected}
    # the pipeline's file and every sibling it imports, so that transformers can import it from the checkpoint
    needed = {module_file.name, *(Path(name).name for name in get_relative_import_files(module_file))}
    assert needed <= {path.name for path in tmp_path.iterdir()}


@pytest.mark.parametrize("make_model", NOT_SHIPPING, ids=["scaffold-base", "vatt-video-classifier"])
def test_checkpoints_for_other_tasks_declare_no_custom_pipeline(make_model, tmp_path):
    make_model().save_pretrained(tmp_path)
    assert "custom_pipelines" not in json.loads((tmp_path / "config.json").read_text())


# Runs in a fresh interpreter where hfvision cannot be imported: by repo id, through the checkpoint's own code only.
REMOTE_PIPELINE = HIDE_HFVISION + textwrap.dedent(
    """
    import json
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    repo_id, out = sys.argv[1:3]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    detector = pipeline("keypoint-detection", model=repo_id, trust_remote_code=True)
    with open(out, "w") as f:
        json.dump({"result": detector(image), "module": type(detector).__module__}, f)
    assert not any(name.startswith("hfvision") for name in sys.modules)
    """
)


def test_plainly_saved_autolink_runs_its_pipeline_by_repo_id_without_hfvision(local_hub, tmp_path):
    """`model.save_pretrained` + processor (never a pipeline object), published, then used by repo id elsewhere."""
    checkpoint = tmp_path / "checkpoint"
    model = tiny_model()
    model.save_pretrained(checkpoint)
    tiny_processor().save_pretrained(checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no model card: this test is about the code, not the card
        publish(checkpoint, "org/autolink-plain-pipeline", allow_no_card=True)

    out = tmp_path / "remote.json"
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_PIPELINE, "org/autolink-plain-pipeline", str(out)],
        cwd=tmp_path,
        env={**os.environ, "HF_HOME": str(tmp_path / "home"), "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(out.read_text())
    assert remote["module"].startswith("transformers_modules.") and remote["module"].endswith(".pipeline_autolink")

    # the same keypoints and edges as hfvision's own pipeline on the in-memory model
    local = pipeline("keypoint-detection", model=model.eval(), image_processor=tiny_processor())(random_image(0))
    torch.testing.assert_close(torch.tensor(remote["result"]["keypoints"]), torch.tensor(local["keypoints"]))
    assert [tuple(edge[:2]) for edge in remote["result"]["edges"]] == [edge[:2] for edge in local["edges"]]


def test_with_hfvision_the_custom_entry_needs_trust_remote_code_or_the_class(tmp_path):
    """transformers' rule for any `custom_pipelines` checkpoint; hfvision's class is one argument away."""
    tiny_model().save_pretrained(tmp_path)
    AutoLinkImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("keypoint-detection", model=str(tmp_path))
    detector = pipeline("keypoint-detection", model=str(tmp_path), pipeline_class=KeypointDetectionPipeline)
    assert isinstance(detector.model, AutoLinkModel) and len(detector(random_image(1))["keypoints"]) == 6
