"""The `hfvision` command: instant --help/--version (no torch), one-line errors, plot and publish-metrics wiring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import hfvision
from hfvision.cli import main
from tests.models.autolink.conftest import tiny_model, tiny_processor

HEAVY = ("torch", "transformers", "huggingface_hub", "hfvision")


def imported_modules(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `hfvision *args` as the console script does, with `-X importtime`; the top-level modules it imported."""
    code = f"import hfvision_cli; hfvision_cli.main({list(args)!r})"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120
    )
    modules = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return result, modules


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_neither_torch_nor_the_package(flag):
    result, modules = imported_modules(flag)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "argparse" in modules  # the importtime listing was read
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    if flag == "--version":
        assert result.stdout.strip() == f"hfvision {hfvision.__version__}"
    else:
        assert "publish-metrics" in result.stdout and "plot" in result.stdout


def test_the_console_script_is_installed():
    script = Path(sys.executable).with_name("hfvision")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"hfvision {hfvision.__version__}"


@pytest.mark.parametrize(
    ("repo_id", "revision", "message"),
    [
        ("no-namespace", None, "repo_id must be 'namespace/name'"),
        ("org/branchy", "not a branch", "Invalid branch name: 'not a branch'"),
        ("someone-else/model", None, "403 Forbidden: local-user may not write to the namespace 'someone-else'"),
    ],
)
def test_publish_errors_are_one_line(local_hub, tmp_path, capsys, repo_id, revision, message):
    checkpoint = tmp_path / "ckpt"
    tiny_model().save_pretrained(checkpoint)
    tiny_processor().save_pretrained(checkpoint)
    (checkpoint / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    capsys.readouterr()
    argv = ["publish", str(checkpoint), repo_id] + (["--revision", revision] if revision else [])
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hfvision publish: error: ") and message in err
    assert "Traceback" not in err


def test_plot_draws_the_training_curves_of_a_run(tmp_path, capsys):
    log = [
        {"step": 10, "train/loss": 2.0, "train/learning_rate": 1e-3, "train/epoch": 0},
        {"step": 20, "train/loss": 1.5, "train/learning_rate": 5e-4, "train/epoch": 0},
        {"step": 20, "eval/loss": 1.7, "eval/top1_accuracy": 0.4},
        {"step": 20, "data/skipped": []},
    ]
    (tmp_path / "log_history.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in log))
    main(["plot", str(tmp_path)])
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'training_curves.png'}"
    with Image.open(tmp_path / "training_curves.png") as image:  # three panels: loss, learning rate, accuracy
        assert image.format == "PNG" and image.width > 2 * image.height

    with pytest.raises(SystemExit):
        main(["plot", str(tmp_path / "missing")])
    assert "no log_history.jsonl or trainer_state.json" in capsys.readouterr().err
