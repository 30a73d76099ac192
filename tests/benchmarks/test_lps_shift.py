"""benchmarks/lps_shift.py: the real `main([...])` at a tiny budget on Fashion-MNIST.

The script is loaded from its path (`benchmarks/` is not a package). Two training steps are enough for the paper's
property: with circular padding and 32x32 inputs, LPS (and APS) predictions cannot change under circular shifts,
trained or not.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from hfvision.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "lps_shift.py"

pytestmark = pytest.mark.skipif(
    not DEFAULT_FASHION_MNIST_DIR.is_dir(),
    reason=f"{DEFAULT_FASHION_MNIST_DIR} missing: run `apt-get install -y dataset-fashion-mnist`",
)


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lps_shift", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and HfArgumentParser resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[dict, Path]:
    output_dir = tmp_path_factory.mktemp("lps_shift")
    argv = ["--max_steps", "2", "--train_samples", "64", "--eval_samples", "24", "--width", "4", "--max_offset", "4"]
    argv += ["--batch_size", "16", "--methods", "lps", "aps", "stride", "--output_dir", str(output_dir)]
    return load_script().main(argv), output_dir


def test_lps_and_aps_are_circularly_consistent(tiny_run):
    rows, _ = tiny_run
    assert list(rows) == ["lps", "aps", "stride"]
    for method in ("lps", "aps"):
        assert rows[method]["circular_consistency"] == 1.0
        assert rows[method]["circular_by_offset"] == [1.0] * 5
    for row in rows.values():
        assert 0.0 <= row["accuracy"] <= 1.0
        assert len(row["standard_by_offset"]) == 5 and row["standard_by_offset"][0] == 1.0


def test_plot_and_results_are_written(tiny_run):
    _, output_dir = tiny_run
    with Image.open(output_dir / "lps_shift.png") as plot:
        assert plot.format == "PNG" and plot.width > 400
    assert (output_dir / "lps_shift.json").is_file()
