"""Every training script ends in a complete model card: one real tiny run per method (a few steps, seconds each), its
`final/README.md` read back field by field, validated by the local Hub's YAML check, published, and its usage
snippets run as written with and without hfvision.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard

from hfvision.cli import main as cli_main
from hfvision.demo import HIDE_HFVISION
from hfvision.hub.card import DATASETS, card_from_checkpoint
from hfvision.hub.publish import publish
from tests.training.conftest import load_training_script, one_thread

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "org"


def _pyramidclip(root: Path) -> Path:
    load_training_script("pretrain_pyramidclip").main(
        [
            "--config", str(REPO / "training" / "configs" / "pretrain_pyramidclip_tiny.yaml"),
            "--image_size", "32", "--synthetic_image_size", "32", "--synthetic_num_train", "64",
            "--synthetic_num_eval", "16", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16",
            "--shuffle_buffer", "16", "--tokenizer_vocab_size", "300", "--tokenizer_train_samples", "64",
            "--max_steps", "2", "--eval_steps", "2", "--checkpointing_steps", "2", "--warmup_steps", "1",
            "--output_dir", str(root), "--push_to_hub", f"{NAMESPACE}/card-pyramidclip",
        ]
    )  # fmt: skip
    return root / "final"


def _mcmae(root: Path) -> Path:
    load_training_script("pretrain_mcmae").main(
        [
            "--fashion_mnist", "--fashion_mnist_num_train", "64", "--fashion_mnist_num_eval", "16",
            "--model_preset", "mcmae-tiny", "--image_size", "32", "--per_device_train_batch_size", "16",
            "--per_device_eval_batch_size", "16", "--shuffle_buffer", "16", "--max_steps", "2", "--eval_steps", "2",
            "--warmup_steps", "1", "--output_dir", str(root),
        ]
    )  # fmt: skip
    return root / "final"


def _autolink(root: Path) -> Path:
    load_training_script("train_autolink").main(
        [
            "--stick_figures", "--stick_figures_num_train", "64", "--stick_figures_num_eval", "32",
            "--stick_figures_image_size", "32", "--model_preset", "autolink-tiny", "--num_keypoints", "7",
            "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16", "--shuffle_buffer", "16",
            "--max_steps", "2", "--eval_steps", "2", "--warmup_steps", "1", "--output_dir", str(root),
        ]
    )  # fmt: skip
    return root / "final"


def _vatt(root: Path) -> Path:
    load_training_script("pretrain_vatt").main(
        [
            "--synthetic", "--synthetic_num_train", "32", "--synthetic_num_eval", "16",
            "--synthetic_shards_per_process", "2", "--model_preset", "vatt-tiny", "--audio_num_samples", "1280",
            "--tokenizer_vocab_size", "100", "--tokenizer_train_samples", "32", "--per_device_train_batch_size", "16",
            "--per_device_eval_batch_size", "16", "--shuffle_buffer", "16", "--max_steps", "2", "--eval_steps", "2",
            "--warmup_steps", "1", "--output_dir", str(root), "--hub_model_id", f"{NAMESPACE}/card-vatt",
        ]
    )  # fmt: skip
    return root / "final"


def _trap_replace(root: Path) -> Path:
    """Stage 1 (trap), then stage 2 (replace) from it: the defended model's card shows the trap stage's numbers."""
    script = load_training_script("train_trap_replace")
    common = [
        "--dataset", "synthetic", "--num_train", "200", "--num_test", "60", "--num_shards", "2",
        "--backdoor_data", str(root / "data"), "--model_preset", "trap-replace-tiny", "--num_channels", "1",
        "--per_device_eval_batch_size", "60", "--shuffle_buffer", "16", "--max_steps", "2", "--eval_steps", "2",
    ]  # fmt: skip
    script.main([*common, "--per_device_train_batch_size", "16", "--output_dir", str(root / "trap")])
    script.main(
        [
            *common, "--per_device_train_batch_size", "4", "--output_dir", str(root / "replace"), "--stage", "replace",
            "--model_name_or_path", str(root / "trap" / "final"), "--learning_rate", "0.03",
        ]
    )  # fmt: skip
    return root / "replace" / "final"


def _score_sde(root: Path) -> Path:
    load_training_script("train_score_sde").main(
        [
            "--model_preset", "score-sde-tiny", "--manifold_ambient_dim", "10", "--manifold_num_train", "32",
            "--manifold_num_eval", "32", "--per_device_train_batch_size", "16", "--shuffle_buffer", "1",
            "--eval_num_samples", "32", "--eval_num_inference_steps", "10", "--eval_energy_points", "8",
            "--max_steps", "2", "--eval_steps", "2", "--warmup_steps", "1", "--output_dir", str(root),
        ]
    )  # fmt: skip
    return root / "final"


def _scaffold(root: Path) -> Path:
    load_training_script("train_scaffold").main(
        [
            "--config", str(REPO / "training" / "configs" / "train_scaffold_digits.yaml"),
            "--output_dir", str(root), "--data_dir", str(root.parent / "digits"), "--teacher_epochs", "1",
            "--num_student_examples", "16", "--student_epochs", "1", "--checkpoint_epochs", "1", "--baselines", "none",
        ]
    )  # fmt: skip
    return root / "final" / "teacher"


def _finetune(root: Path) -> Path:
    """Fine-tunes the pyramidclip run's checkpoint, published as `org/card-pyramidclip`, by its repo id."""
    load_training_script("finetune_image_classification").main(
        [
            "--model_name_or_path", f"{NAMESPACE}/card-pyramidclip", "--dataset", "synthetic",
            "--max_train_samples", "32", "--max_eval_samples", "16", "--max_steps", "2",
            "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16", "--save_strategy", "no",
            "--use_cpu", "--report_to", "none", "--output_dir", str(root),
            "--push_to_hub", "--hub_model_id", f"{NAMESPACE}/card-finetuned",
        ]
    )  # fmt: skip
    return root


TRAIN: dict[str, Callable[[Path], Path]] = {
    "pyramidclip": _pyramidclip,
    "mcmae": _mcmae,
    "autolink": _autolink,
    "vatt": _vatt,
    "trap_replace": _trap_replace,
    "score_sde": _score_sde,
    "scaffold": _scaffold,
    "finetune": _finetune,  # after pyramidclip, which it fine-tunes by repo id
}
# What each checkpoint does, as the Hub's pipeline tag; the data set each card names; the tag of the method.
EXPECTED = {
    "pyramidclip": ("zero-shot-image-classification", "synthetic_scenes", "pyramidclip"),
    "mcmae": ("image-feature-extraction", "fashion_mnist", "mcmae"),  # a pretraining checkpoint: no trained head
    "autolink": ("keypoint-detection", "stick_figures", "autolink"),
    "vatt": (None, "av_clips", "vatt"),
    "trap_replace": ("image-classification", None, "trap-and-replace"),
    "score_sde": (None, "manifold_points", "score-based-generative-model"),
    "scaffold": ("image-classification", "digits", "scaffold"),
    "finetune": ("image-classification", "synthetic_colours", "pyramidclip"),
}
# Runs that measure a baseline beside a headline number, and the text it starts with.
BASELINES = {
    "autolink": "mean pose",
    "finetune": "before fine-tuning",
    "score_sde": "fresh points of the law",
    "trap_replace": "trap stage (undefended)",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, local_hub) -> dict[str, Path]:
    """Every method's tiny real run (each script's own `main`), in order; a dict method -> checkpoint folder."""
    root = tmp_path_factory.mktemp("card-runs")
    folders = {}
    with one_thread():
        for method, train in TRAIN.items():
            folders[method] = train(root / method)
    return folders


def _model_id(method: str) -> str:
    return f"{NAMESPACE}/card-{method.replace('_', '-')}"


@pytest.mark.parametrize("method", list(TRAIN))
def test_training_run_ends_with_a_complete_card(runs, method):
    checkpoint = runs[method]
    pipeline_tag, dataset_key, tag = EXPECTED[method]
    text = (checkpoint / "README.md").read_text()
    card = ModelCard(text)  # raises on an invalid model-index
    data = card.data

    assert data.library_name == "transformers" and data.license == "apache-2.0" and data.language == "en"
    assert data.pipeline_tag == pipeline_tag
    assert tag in data.tags and "hfvision" in data.tags
    if dataset_key is not None:
        dataset = DATASETS[dataset_key]
        assert data.datasets == ([dataset.hub_id] if dataset.hub_id else None)
        assert {result.dataset_type for result in data.eval_results} == {dataset.type}
    assert data.base_model == (f"{NAMESPACE}/card-pyramidclip" if method == "finetune" else None)

    # the model-index holds exactly the numbers of eval_results.json
    results_file = checkpoint / "eval_results.json"
    if not results_file.exists():
        results_file = checkpoint.parent / "eval_results.json"
    saved = json.loads(results_file.read_text())
    measured = saved.get("metrics", saved)
    values = {json.dumps(value) for value in _numbers(measured)}
    assert data.eval_results, "the card has no results"
    assert data.metrics == sorted({result.metric_type for result in data.eval_results})
    for result in data.eval_results:
        assert json.dumps(result.metric_value) in values, (result.metric_name, result.metric_value)

    # body: results table with the run's baseline, training data and hyperparameters, usage, deviations, citation
    assert "| Task | Dataset | Split | Metric | Value |" in text
    if method in BASELINES:
        assert "Baseline |" in text and f"| {BASELINES[method]}" in text
    assert "**Training data:**" in text and "[More Information Needed]" not in text
    config_block = re.search(r"```yaml\n(.*?)```", text, flags=re.DOTALL).group(1)
    hyperparameters = yaml.safe_load(config_block)
    assert "learning_rate" in hyperparameters or "teacher_lr" in hyperparameters
    assert "output_dir" not in hyperparameters
    assert str(checkpoint.parents[1]) not in text and "/tmp/" not in text  # no local paths
    assert "trust_remote_code=True" in text and "import hfvision" in text
    assert "Deviations" in text or "deviations" in text
    assert "@inproceedings" in text
    if method not in ("finetune", "scaffold"):  # runs ending in `save_final` draw their logged curves (matplotlib: dev)
        assert (checkpoint / "training_curves.png").is_file() and "](training_curves.png)" in text
    assert "{{" not in text and "None dataset" not in text


def _numbers(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, float | int) and not isinstance(value, bool):
        yield value


def test_cards_pass_the_hub_yaml_check(runs):
    for checkpoint in runs.values():
        ModelCard.load(checkpoint / "README.md").validate()  # the local Hub's /api/validate-yaml


def test_push_to_hub_publishes_the_card_and_no_pickles(runs):
    api = HfApi()
    for repo_id in (f"{NAMESPACE}/card-pyramidclip", f"{NAMESPACE}/card-finetuned"):
        files = api.list_repo_files(repo_id)
        assert "README.md" in files and "model.safetensors" in files
        assert not [name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl"))]
        card = ModelCard.load(repo_id)
        assert card.data.library_name == "transformers" and "trained from scratch" not in card.text
        assert f'"{repo_id}"' in card.text  # the usage snippets name the repo they are in


def test_card_command_rerenders_for_a_repo_id(runs, tmp_path, capsys):
    checkpoint = runs["autolink"]
    before = (checkpoint / "README.md").read_text()
    cli_main(["card", str(checkpoint), "--repo-id", "org/other-autolink", "--output", str(tmp_path / "README.md")])
    assert "pipeline tag keypoint-detection" in capsys.readouterr().out
    rendered = (tmp_path / "README.md").read_text()
    assert '"org/other-autolink"' in rendered and rendered.replace("org/other-autolink", "") != before
    assert ModelCard(rendered).data.eval_results == ModelCard(before).data.eval_results
    with pytest.raises(SystemExit):
        cli_main(["card", str(tmp_path)])  # no config.json: one clear line, exit status 2


def test_card_of_a_checkpoint_without_a_run_says_so(runs, tmp_path):
    checkpoint = tmp_path / "converted"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text((runs["autolink"] / "config.json").read_text())
    card = card_from_checkpoint(checkpoint, model_id="org/converted-autolink")
    assert card.data.eval_results is None and card.data.datasets is None
    assert "No evaluation results were recorded" in card.text and "**Training data:** Not recorded" in card.text


def test_card_of_an_unknown_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="model_type 'vit'"):
        card_from_checkpoint(tmp_path)


# The usage snippets of every card, run as written: published under their card's repo id, then every ```python block
# executed, once with hfvision importable and once in a process where it is not (trust_remote_code blocks only).
SNIPPET_RUNNER = """
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
failures = []
for name, code in blocks:
    try:
        exec(compile(code, name, "exec"), {"__name__": "__card__"})
    except Exception:
        failures.append(name + "\\n" + traceback.format_exc(limit=3))
print("FAILURES:", json.dumps(failures))
"""


def _snippets(runs: dict[str, Path], with_hfvision: bool) -> list[tuple[str, str]]:
    blocks = []
    for method, checkpoint in runs.items():
        text = (checkpoint / "README.md").read_text()
        for index, code in enumerate(re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)):
            if ("import hfvision" in code) == with_hfvision:
                blocks.append((f"{method}[{index}]", code))
    return blocks


@pytest.mark.slow
def test_usage_snippets_run_as_written_with_and_without_hfvision(runs, tmp_path):
    explainer_id = f"{NAMESPACE}/card-scaffold-explainer"  # the teacher's card explains with this repo's explainer
    explainer = runs["scaffold"].parent / "teacher_explainer"
    (explainer / "README.md").write_text(str(card_from_checkpoint(explainer, model_id=explainer_id)))
    publish(explainer, explainer_id)
    for method, checkpoint in runs.items():
        repo_id = _model_id(method)
        if method not in ("pyramidclip", "finetune", "vatt"):  # those name their repo already (push / hub_model_id)
            card = card_from_checkpoint(checkpoint, model_id=repo_id, explainer_repo_id=explainer_id)
            (checkpoint / "README.md").write_text(str(card))
        repo_id = {"finetune": f"{NAMESPACE}/card-finetuned"}.get(method, repo_id)
        publish(checkpoint, repo_id)
    for with_hfvision in (True, False):
        blocks = tmp_path / f"blocks_{with_hfvision}.json"
        blocks.write_text(json.dumps(_snippets(runs, with_hfvision)))
        script = ("" if with_hfvision else HIDE_HFVISION) + SNIPPET_RUNNER
        result = subprocess.run(
            [sys.executable, "-c", script, str(blocks)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": "" if not with_hfvision else os.environ.get("PYTHONPATH", "")},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        failures = json.loads(result.stdout.split("FAILURES:")[-1])
        assert not failures, "\n".join(failures)
