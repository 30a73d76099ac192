"""benchmarks/scaffold_digits.py: the planted-distractor heads, and the real `main([...])` at a tiny budget.

The script is loaded from its path (`benchmarks/` is not a package).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.training.conftest import load_script_file

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scaffold_digits.py"


def load_script() -> ModuleType:
    return load_script_file(SCRIPT)


def test_token_distractors_score_each_key_once_and_leave_the_global_stream_alone():
    distractors = load_script().DistractorHeads(num_heads=4, heads_per_layer=2, std=3.0, seed=0, per="token")
    real = (torch.zeros(5, 2, 17, 17),) * 3
    state = torch.get_rng_state()
    scores = distractors(real)
    assert torch.equal(state, torch.get_rng_state())
    assert len(scores) == 5 and all(layer.shape == (5, 2, 17, 17) for layer in scores)
    noise = torch.cat(scores[3:], dim=1)
    assert torch.equal(noise, noise[:, :, :1].expand_as(noise))  # the same key scores in every query row
    assert 2.5 < noise[:, :, 0].std().item() < 3.5
    assert not torch.equal(noise, torch.cat(distractors(real)[3:], dim=1))  # fresh per call


def test_image_distractors_give_each_image_its_own_fixed_scores():
    distractors = load_script().DistractorHeads(num_heads=4, heads_per_layer=2, std=3.0, seed=0)
    first = torch.randn(6, 2, 17, 17)  # stands for the teacher's first-layer scores of 6 images
    real = (first, torch.randn(6, 2, 17, 17))
    state = torch.get_rng_state()
    noise = torch.cat(distractors(real)[2:], dim=1)
    assert torch.equal(state, torch.get_rng_state())
    assert noise.shape == (6, 4, 17, 17) and torch.equal(noise, noise[:, :, :1].expand_as(noise))
    # The same image gets the same scores at every call, whatever else is in the batch; other images other scores.
    order = torch.tensor([4, 1, 5])
    again = torch.cat(distractors((first[order], real[1][order]))[2:], dim=1)
    assert torch.equal(again, noise[order])
    assert all(not torch.equal(noise[i], noise[j]) for i in range(6) for j in range(i))
    assert 2.0 < noise[:, :, 0].std().item() < 4.0


def test_entry_distractors_draw_every_score():
    distractors = load_script().DistractorHeads(num_heads=2, heads_per_layer=2, std=3.0, seed=0, per="entry")
    noise = distractors((torch.zeros(4, 2, 17, 17),))[1]
    assert noise.shape == (4, 2, 17, 17)
    assert noise.std(dim=2).min().item() > 1.0  # query rows differ
    # The explainer's mean over the 17 query rows shrinks the per-key noise to std 3 / sqrt(17).
    assert 0.5 < noise.mean(dim=2).std().item() < 1.0


@pytest.mark.slow
def test_smat_moves_the_explainer_onto_the_real_heads(tmp_path):
    """The README run's seed-0 SMaT + distractors student (full teacher and student budget, 1 CPU minute): all of the
    teacher explainer's weight ends on the 16 real heads. (With a 3-epoch teacher it does not, 0.25 after 8 student
    epochs: the real heads must carry information for the meta-gradient to prefer them.)"""
    argv = ["--seeds", "0", "--conditions", "smat+distractors", "--output-dir", str(tmp_path)]
    (row,) = load_script().main(argv)
    assert row["condition"] == "smat+distractors" and row["real_head_mass"][0] > 0.95
    assert row["heads_kept"][0] < 16  # sparse: fewer heads than the real ones
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["teacher_test_accuracy"] > 0.8
    (run,) = report["runs"]
    assert run["test_simulability"] > 0.4  # the no-explanation students of the README reach 0.29-0.45
    assert (tmp_path / "teacher_explainer_smat+distractors" / "model.safetensors").is_file()
