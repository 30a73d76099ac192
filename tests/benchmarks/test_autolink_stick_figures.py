"""benchmarks/autolink_stick_figures.py: the table (strict reading first, chance beside, the controls as rows, mean ±
sd over seeds) and the real `main([...])` at a tiny budget (slow).

The script is loaded from its path (`benchmarks/` is not a package).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.training.conftest import load_script_file, load_training_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "autolink_stick_figures.py"


def load_script() -> ModuleType:
    return load_script_file(SCRIPT)


def fake_metrics(value: float) -> dict[str, float]:
    """Every metric a run reports, the learned graph's at `value`, the shuffled control's at `value + 10`."""
    script = load_script()
    names = {name for _, learned, shuffled in script.COLUMNS for name in (learned, shuffled)}
    return {name: value + 10 * name.startswith("shuffled_graph_") for name in names}


def test_table_reads_each_row_from_its_own_runs_strict_reading_first():
    script = load_script()
    results = {"graph": [fake_metrics(0.0), fake_metrics(1.0)], "no-graph": [fake_metrics(5.0), fake_metrics(5.0)]}
    rows = dict(script.summarise(results))
    assert list(rows) == [
        "graph",
        "shuffled (graph runs, edge weights permuted at evaluation)",
        "no graph (untrained detector and graph)",
    ]  # no frozen runs: no frozen row
    strict = "strict: strongest-edge precision (Hungarian)"
    assert list(rows["graph"])[:2] == [strict, "strict chance"]
    assert rows["graph"][strict] == [0.0, 1.0]
    shuffled = rows["shuffled (graph runs, edge weights permuted at evaluation)"]
    assert shuffled[strict] == [10.0, 11.0]  # the permuted graph's score
    assert shuffled["keypoint NME"] == [0.0, 1.0]  # the graph runs' detector
    table = script.markdown_table(list(rows.items()))
    assert "| graph | 0.500 ± 0.707 | 0.500 ± 0.707 |" in table  # mean ± sample sd
    assert "| no graph (untrained detector and graph) | 5.000 ± 0.000 |" in table


def test_settings_are_training_flags_the_training_script_accepts():
    script = load_script()
    training = load_training_script("train_autolink")
    for name, flags in script.SETTINGS.items():
        arguments = [flag.format(output_dir="runs/x") for flag in flags]
        model_args, _, _ = training.parse_args(
            ["--config", str(script.CONFIG), "--output_dir", "unused", *arguments, *script.VARIANTS["frozen"]]
        )
        assert model_args.freeze_graph, name
    model_args, _, training_args = training.parse_args(
        ["--config", str(script.CONFIG), "--output_dir", "unused", *script.SETTINGS["paper-lr"]]
    )
    assert (training_args.learning_rate, model_args.graph_lr_scale) == (1e-4, 512)
    assert (training_args.lr_schedule, training_args.warmup_steps) == ("constant", 0)


@pytest.mark.slow
def test_main_writes_the_table_with_the_controls(tmp_path):
    """Two seeds of the graph and frozen runs at the paper's mask grid, 3 steps on 64 figures (about 1.5 minutes on
    a shared core)."""
    tiny = ["--stick_figures_num_train", "64", "--stick_figures_num_eval", "40", "--shuffle_buffer", "16"]
    options = ["--max_steps", "3", "--seeds", "0", "1", "--settings", "paper-mask", "--variants", "graph", "frozen"]
    rows = load_script().main(["--output_dir", str(tmp_path), *options, *tiny])
    assert [name for name, _ in rows][2] == "frozen (trained detector, untrained graph)"
    summary = json.loads((tmp_path / "paper-mask" / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and len(summary["runs"]["frozen"]) == 2
    config = json.loads((tmp_path / "paper-mask" / "graph-seed1" / "final" / "config.json").read_text())
    assert config["mask_grid_size"] == 16
