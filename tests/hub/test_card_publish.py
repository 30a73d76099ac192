"""Tests of model-card rendering (`hfvision.hub.card`) and Hub-folder building (`hfvision.hub.publish`).

No upload reaches a server here: `publish` is run with `dry_run=True` or against a recording stand-in for `HfApi`.
"""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import EvalResult, ModelCard
from transformers import AutoModel, ViTConfig, ViTModel

from hfvision.hub import publish as publish_module
from hfvision.hub.card import find_card_template, render_model_card
from hfvision.hub.publish import build_hub_folder, publish

MODEL_ID = "org/tiny-pyramidclip"

EVAL_RESULTS = [
    {
        "task_type": "zero-shot-image-classification",
        "task_name": "Zero-shot image classification",
        "dataset_type": "org/tuxpaint-stamps",
        "dataset_name": "TuxPaint stamps",
        "dataset_split": "test",
        "metric_type": "accuracy",
        "metric_name": "Top-1 accuracy",
        "metric_value": 0.4375,
    },
    {
        "task_type": "image-text-retrieval",
        "dataset_type": "org/tuxpaint-stamps",
        "dataset_name": "TuxPaint stamps",
        "dataset_split": "test",
        "metric_type": "recall",
        "metric_name": "Image-to-text R@1",
        "metric_config": "image_to_text_recall@1",
        "metric_value": 0.8125,
    },
]

TRAINING_CONFIG = {
    "learning_rate": 5e-4,
    "num_epochs": 3,
    "batch_size": 32,
    "softening_alpha": 0.2,
    "betas": [0.9, 0.98],
}


def render(**overrides):
    kwargs = {
        "model_id": MODEL_ID,
        "eval_results": EVAL_RESULTS,
        "training_config": TRAINING_CONFIG,
        "datasets": ["org/tuxpaint-captions"],
        **overrides,
    }
    return render_model_card("pyramidclip", **kwargs)


# --- model card ---


def test_template_is_found_in_the_source_checkout():
    assert find_card_template("pyramidclip") == Path(__file__).resolve().parents[2] / "model_cards" / "pyramidclip.md"
    with pytest.raises(FileNotFoundError, match="no_such_method"):
        find_card_template("no_such_method")


def test_card_metadata():
    data = render().data
    assert data.license == "apache-2.0"
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "zero-shot-image-classification"
    assert data.tags == ["vision", "pyramidclip", "clip", "hfvision"]
    assert data.datasets == ["org/tuxpaint-captions"]


def test_card_round_trips_with_the_given_eval_results():
    card = render()
    reparsed = ModelCard(str(card))  # raises on an invalid model-index
    expected = [EvalResult(**result) for result in EVAL_RESULTS]
    assert reparsed.data.eval_results == expected
    assert reparsed.data.model_name == "tiny-pyramidclip"
    assert str(reparsed) == str(card)


def test_card_body_has_results_table_and_loading_snippets():
    text = str(render())
    assert "| Zero-shot image classification | TuxPaint stamps | test | Top-1 accuracy | 0.4375 |" in text
    assert "| image-text-retrieval | TuxPaint stamps | test | Image-to-text R@1 | 0.8125 |" in text
    assert "import hfvision" in text
    assert f'AutoModel.from_pretrained("{MODEL_ID}")' in text
    assert f'AutoModel.from_pretrained("{MODEL_ID}", trust_remote_code=True)' in text
    assert f'pipeline("zero-shot-image-classification", model="{MODEL_ID}", trust_remote_code=True)' in text
    assert "arxiv.org/abs/2204.14095" in text
    assert "Yuting-Gao/PyramidCLIP" in text
    assert "@inproceedings{gao2022pyramidclip" in text


def test_card_states_the_deviations():
    text = str(render(extra_deviations=["Trained for 3 epochs only."]))
    assert "pixel-crop" in text and "VinVL" in text
    assert "falls back to the original caption" in text
    assert "non-padding tokens only" in text
    assert "- Trained for 3 epochs only." in text


def test_card_training_config_block_parses_back():
    text = str(render())
    block = re.search(r"```yaml\n(.*?)```", text, flags=re.DOTALL).group(1)
    assert yaml.safe_load(block) == TRAINING_CONFIG


def test_card_forwards_numpy_values():
    results = [{**EVAL_RESULTS[0], "metric_value": np.float32(0.5)}]
    assert ModelCard(str(render(eval_results=results))).data.eval_results[0].metric_value == 0.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metric_value": None}, "lacks"),
        ({"metric_value": math.nan}, "finite"),
        ({"metric_value": np.float64("inf")}, "finite"),
        ({"metric_value": "0.5"}, "finite"),
        ({"value": 0.5}, "unknown eval result keys"),
    ],
)
def test_card_rejects_bad_eval_values(change, message):
    with pytest.raises(ValueError, match=message):
        render(eval_results=[{**EVAL_RESULTS[0], **change}])


def test_card_rejects_a_result_without_its_value():
    result = {key: value for key, value in EVAL_RESULTS[0].items() if key != "metric_value"}
    with pytest.raises(ValueError, match="metric_value"):
        render(eval_results=[result])


# --- Hub folder and publish ---

REMOTE_CODE = {
    "configuration_toy.py": (
        "from transformers import ViTConfig\n\n\nclass ToyConfig(ViTConfig):\n    model_type = 'hfvision_toy'\n"
    ),
    "modeling_toy.py": (
        "from transformers import ViTModel\n\n"
        "from .configuration_toy import ToyConfig\n"
        "from .layers_toy import SCALE  # noqa: F401\n\n\n"
        "class ToyModel(ViTModel):\n    config_class = ToyConfig\n"
    ),
    "layers_toy.py": "SCALE = 2.0\n",
    "pipeline_toy.py": "from transformers import Pipeline\n\n\nclass ToyPipeline(Pipeline):\n    pass\n",
    "image_processing_toy.py": (
        "from transformers import ViTImageProcessorPil\n\n\nclass ToyImageProcessor(ViTImageProcessorPil):\n    pass\n"
    ),
}


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A tiny ViT saved with save_pretrained, rewired as remote code (auto_map, custom_pipelines, processor map)."""
    directory = tmp_path / "checkpoint"
    config = ViTConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, image_size=8, patch_size=4
    )
    ViTModel(config).save_pretrained(directory)
    for name, source in REMOTE_CODE.items():
        (directory / name).write_text(source)
    config_json = json.loads((directory / "config.json").read_text())
    config_json["model_type"] = "hfvision_toy"
    config_json["auto_map"] = {"AutoConfig": "configuration_toy.ToyConfig", "AutoModel": "modeling_toy.ToyModel"}
    config_json["custom_pipelines"] = {
        "toy-task": {"impl": "pipeline_toy.ToyPipeline", "pt": ["AutoModel"], "type": "image"}
    }
    (directory / "config.json").write_text(json.dumps(config_json))
    preprocessor = {
        "image_processor_type": "ToyImageProcessor",
        "auto_map": {"AutoImageProcessor": "image_processing_toy.ToyImageProcessor"},
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    (directory / "unrelated_script.py").write_text("print('not remote code')\n")
    (directory / "training_args.bin").write_bytes(b"pickled TrainingArguments, not weights")
    (directory / "trainer_state.json").write_text("{}")
    (directory / "samples.png").write_bytes(b"\x89PNG picture the card shows")
    (directory / "logs").mkdir()
    (directory / "logs" / "curve.png").write_bytes(b"\x89PNG not top level")
    return directory


EXPECTED_FILES = [
    "README.md",
    "config.json",
    "configuration_toy.py",
    "image_processing_toy.py",
    "layers_toy.py",
    "model.safetensors",
    "modeling_toy.py",
    "pipeline_toy.py",
    "preprocessor_config.json",
    "samples.png",
]


def test_build_hub_folder_copies_exactly_what_the_hub_needs(checkpoint, tmp_path):
    out = tmp_path / "hub"
    card = render()
    files = build_hub_folder(checkpoint, out, card)
    assert files == EXPECTED_FILES
    assert sorted(path.name for path in out.iterdir()) == EXPECTED_FILES
    assert ModelCard.load(out / "README.md").data.eval_results == [EvalResult(**r) for r in EVAL_RESULTS]
    assert (out / "model.safetensors").read_bytes() == (checkpoint / "model.safetensors").read_bytes()


def test_hub_folder_loads_as_remote_code(checkpoint, tmp_path):
    out = tmp_path / "toy_remote_hub"
    build_hub_folder(checkpoint, out, None)
    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    assert type(model).__name__ == "ToyModel"
    assert type(model).__module__.startswith("transformers_modules")


def test_build_hub_folder_without_card_keeps_the_checkpoint_readme(checkpoint, tmp_path):
    (checkpoint / "README.md").write_text("# my card\n")
    build_hub_folder(checkpoint, tmp_path / "hub", None)
    assert (tmp_path / "hub" / "README.md").read_text() == "# my card\n"


@pytest.mark.parametrize("stray", ["pytorch_model.bin", "weights.pth", "state.pkl", "model.ckpt"])
def test_build_hub_folder_refuses_pickle_files(checkpoint, tmp_path, stray):
    (checkpoint / stray).write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match=re.escape(stray)):
        build_hub_folder(checkpoint, tmp_path / "hub", None)
    assert not (tmp_path / "hub").exists()


def test_build_hub_folder_leaves_trainer_state_pickles_behind(checkpoint, tmp_path):
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "rng_state_0.pth", "scaler.pt"):
        (checkpoint / name).write_bytes(b"\x80\x04pickle")
    assert build_hub_folder(checkpoint, tmp_path / "hub", render()) == EXPECTED_FILES


def test_build_hub_folder_refuses_a_checkpoint_without_safetensors(checkpoint, tmp_path):
    (checkpoint / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="safetensors"):
        build_hub_folder(checkpoint, tmp_path / "hub", None)


def test_build_hub_folder_refuses_missing_remote_code(checkpoint, tmp_path):
    (checkpoint / "layers_toy.py").unlink()  # imported by modeling_toy.py
    with pytest.raises(ValueError, match=r"layers_toy\.py"):
        build_hub_folder(checkpoint, tmp_path / "hub", None)


def test_build_hub_folder_refuses_a_non_empty_out_dir(checkpoint, tmp_path):
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "old.txt").write_text("stale")
    with pytest.raises(ValueError, match="not empty"):
        build_hub_folder(checkpoint, tmp_path / "hub", None)


class ForbiddenApi:
    def __init__(self, *args, **kwargs):
        raise AssertionError("dry_run must not contact the Hub")


class RecordingApi:
    """Stands in for HfApi: records the calls and what the upload folder held at upload time."""

    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("HfApi", token, {}))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        uploaded = sorted(path.name for path in Path(folder_path).iterdir())
        self.calls.append(("upload_folder", repo_id, {**kwargs, "files": uploaded}))


def test_publish_dry_run_lists_files_and_uploads_nothing(checkpoint, monkeypatch):
    monkeypatch.setattr(publish_module, "HfApi", ForbiddenApi)
    assert publish(checkpoint, MODEL_ID, dry_run=True, card=render()) == EXPECTED_FILES
    without_card = [name for name in EXPECTED_FILES if name != "README.md"]
    with pytest.warns(UserWarning, match="no README.md model card"):
        assert publish(checkpoint, MODEL_ID, dry_run=True, allow_no_card=True) == without_card


def test_publish_dry_run_refuses_pickles(checkpoint, monkeypatch):
    monkeypatch.setattr(publish_module, "HfApi", ForbiddenApi)
    (checkpoint / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match="pickle"):
        publish(checkpoint, MODEL_ID, dry_run=True, card=render())


def test_publish_creates_repo_branch_and_uploads_the_folder(checkpoint, monkeypatch):
    monkeypatch.setattr(publish_module, "HfApi", RecordingApi)
    monkeypatch.setattr(RecordingApi, "calls", [])
    files = publish(checkpoint, MODEL_ID, private=True, revision="dev", commit_message="v1", card=render())
    assert files == EXPECTED_FILES
    upload = {"revision": "dev", "commit_message": "v1", "delete_patterns": list(publish_module.STALE_PATTERNS)}
    assert RecordingApi.calls == [
        ("HfApi", None, {}),
        ("create_repo", MODEL_ID, {"private": True, "exist_ok": True}),
        ("create_branch", MODEL_ID, {"branch": "dev", "exist_ok": True}),
        ("upload_folder", MODEL_ID, {**upload, "files": EXPECTED_FILES}),
    ]
