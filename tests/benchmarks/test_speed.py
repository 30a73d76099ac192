"""benchmarks/speed.py: the real `main([...])` on tiny configs writes the table with consistent FLOPs and ratios."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"


def load_speed():
    spec = importlib.util.spec_from_file_location("speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_tiny_rows_measure_flops_ratios_and_write_the_table(tmp_path):
    pytest.importorskip("diffusers")
    speed = load_speed()
    output = tmp_path / "speed.md"
    rows = speed.main(["--tiny", "--rows", "lps,lps-stride,score-sde", "--repeats", "1", "--output", str(output)])
    by_key = {row["key"]: row for row in rows}
    assert list(by_key) == ["lps", "lps-stride", "score-sde"]
    # LPS scores 4 components and runs its downsampling convs at full resolution; the strided path does the
    # ResNet's work; both samplers run the same network the same number of times
    assert by_key["lps"]["flop_ratio"] > 2
    assert by_key["lps-stride"]["flop_ratio"] == pytest.approx(1.0, rel=0.05)
    assert by_key["score-sde"]["flop_ratio"] == pytest.approx(1.0)
    for row in rows:
        assert row["time_ratio"] == pytest.approx(row["ms"]["ours"] / row["ms"]["peer"])
        assert row["time_per_flop_ratio"] == pytest.approx(row["time_ratio"] / row["flop_ratio"])
        assert (row["profile"] is None) == row["met"]  # a missed goal names its profile line
    table = output.read_text()
    assert table.count("\n| ") == 1 + len(rows) and "time/FLOP ratio" in table


def test_unknown_rows_are_refused():
    with pytest.raises(SystemExit):
        load_speed().main(["--rows", "lps,resnet"])
