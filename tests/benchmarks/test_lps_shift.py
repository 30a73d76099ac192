"""benchmarks/lps_shift.py: the real `main([...])` at a tiny budget on Fashion-MNIST.

The script is loaded from its path (`benchmarks/` is not a package). Two training steps are enough for the paper's
property: with circular padding and 32x32 inputs, LPS (and APS) predictions cannot change under circular shifts,
trained or not, in the paper's protocol (two random shifts) and ours (diagonal shifts).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch
from PIL import Image

from hfvision.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR
from hfvision.metrics.shift_consistency.shift_consistency import ShiftConsistency
from hfvision.models.lps import gumbel_tau_at_step
from tests.training.conftest import load_script_file

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "lps_shift.py"

pytestmark = pytest.mark.skipif(
    not DEFAULT_FASHION_MNIST_DIR.is_dir(),
    reason=f"{DEFAULT_FASHION_MNIST_DIR} missing: run `apt-get install -y dataset-fashion-mnist`",
)


def load_script() -> ModuleType:
    return load_script_file(SCRIPT)


TINY = ["--max_steps", "2", "--train_samples", "64", "--eval_samples", "24", "--width", "8", "--max_offset", "4"]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script()


def run(script: ModuleType, output_dir: Path, *flags: str) -> dict:
    """`main` at the tiny budget, batch 16 unless `flags` say otherwise."""
    return script.main([*TINY, "--batch_size", "16", "--output_dir", str(output_dir), *flags])


@pytest.fixture(scope="module")
def tiny_run(script, tmp_path_factory) -> tuple[dict, Path, str]:
    """Four methods at two seeds; also the markdown table as this invocation wrote it."""
    output_dir = tmp_path_factory.mktemp("lps_shift")
    rows = run(script, output_dir, "--methods", "lps", "aps", "stride", "ddac", "--seeds", "0", "1")
    return rows, output_dir, (output_dir / "lps_shift.md").read_text()


def test_lps_and_aps_are_circularly_consistent(tiny_run):
    rows, _, _ = tiny_run
    assert list(rows) == ["lps", "aps", "stride", "ddac"]
    for method in ("lps", "aps"):
        for result in rows[method]:  # both seeds, both protocols
            assert result["circular_consistency"] == 1.0 and result["paper_circular"] == 1.0
            assert result["circular_by_offset"] == [1.0] * 5
    for results in rows.values():
        assert len(results) == 2
        for result in results:
            assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["paper_standard"] <= 1.0
            assert len(result["standard_by_offset"]) == 5 and result["standard_by_offset"][0] == 1.0


def test_gumbel_temperature_follows_the_callback_schedule(script, tiny_run):
    """Annealed runs end at the temperature `gumbel_tau_at_step` gives for the last step; the fixed setting keeps 1
    and is saved as its own run, while models without LPS layers are shared by both settings."""
    rows, output_dir, _ = tiny_run
    # 2 steps, 25 decays -> a decay every step: tau before the second step is 0.85
    assert rows["lps"][0]["final_gumbel_tau"] == pytest.approx(gumbel_tau_at_step(1, 1.0, 0.85, 1, 0.025))
    fixed = run(script, output_dir, "--methods", "lps", "stride", "--anneal_gumbel_tau", "false")
    assert list(fixed) == ["lps (fixed tau)", "stride"]
    assert fixed["lps (fixed tau)"][0]["final_gumbel_tau"] == 1.0
    assert fixed["stride"][0]["final_gumbel_tau"] is None  # no LPS layer: no temperature
    assert fixed["stride"][0] == rows["stride"][0]  # reused, not retrained
    saved = sorted(path.name for path in (output_dir / "runs").glob("lps*"))
    assert saved == ["lps-fixed_tau-seed0.json", "lps-seed0.json", "lps-seed1.json"]


def test_saved_runs_are_reused_only_with_the_same_settings(script, tiny_run):
    rows, output_dir, _ = tiny_run
    assert run(script, output_dir, "--methods", "aps", "--seeds", "1")["aps"] == [rows["aps"][1]]
    with pytest.raises(ValueError, match="other settings"):
        run(script, output_dir, "--methods", "aps", "--batch_size", "8")


def test_plot_and_results_are_written(tiny_run):
    _, output_dir, table = tiny_run
    with Image.open(output_dir / "lps_shift.png") as plot:
        assert plot.format == "PNG" and plot.width > 400
    assert (output_dir / "lps_shift.json").is_file()
    assert "| lps | 2 | " in table and "100.00 ± 0.00" in table  # mean ± sd over the two seeds


def test_per_image_shifts_match_the_metric_and_the_paper_offsets(script):
    images = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    for mode in ("circular", "standard"):
        for shift in [(0, 0), (2, -3), (-1, 5)]:
            offsets = torch.tensor([shift] * 3)
            assert torch.equal(
                script.shift_each(images, offsets, mode), ShiftConsistency.shift_images(images, shift, mode=mode)
            )
    mixed = script.shift_each(images, torch.tensor([[0, 0], [1, 0], [0, -2]]), "circular")
    assert torch.equal(mixed[1], images[1].roll(1, dims=1)) and torch.equal(mixed[2], images[2].roll(-2, dims=2))
    offsets = script.paper_offsets(5000, seed=0)
    assert offsets.shape == (2, 5000, 2) and set(offsets.unique().tolist()) == set(range(-3, 3))
    assert torch.equal(offsets, script.paper_offsets(5000, seed=0))
