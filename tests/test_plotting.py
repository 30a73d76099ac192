"""`hfvision.plotting`: run logs of both trainers read alike, and the plots refuse what they cannot draw."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from hfvision.plotting import plot_image_grid, plot_matrix, plot_training_curves, read_log_history


def test_trainer_state_reads_like_the_stream_log(tmp_path):
    state = {
        "log_history": [
            {"step": 5, "loss": 2.3, "learning_rate": 1e-3, "epoch": 0.5},
            {"step": 10, "eval_loss": 2.0, "eval_top1_accuracy": 0.3, "epoch": 1.0},
        ]
    }
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text(json.dumps(state))
    assert read_log_history(tmp_path) == [
        {"step": 5, "train/loss": 2.3, "train/learning_rate": 1e-3, "train/epoch": 0.5},
        {"step": 10, "eval/loss": 2.0, "eval/top1_accuracy": 0.3, "train/epoch": 1.0},
    ]
    with Image.open(plot_training_curves(tmp_path)) as image:
        assert image.format == "PNG"


def test_a_log_without_curves_is_refused(tmp_path):
    (tmp_path / "log_history.jsonl").write_text(json.dumps({"step": 1, "data/skipped": []}) + "\n")
    with pytest.raises(ValueError, match="no loss"):
        plot_training_curves(tmp_path)


def test_grid_and_matrix_plots(tmp_path):
    cells = [[np.zeros((8, 8, 3), dtype=np.uint8), np.ones((8, 8), dtype=np.float32)]] * 3
    with Image.open(plot_image_grid(cells, tmp_path / "grid.png", column_titles=["a", "b"])) as image:
        assert image.height > image.width  # 3 rows of 2
    with pytest.raises(ValueError, match="column_titles"):
        plot_image_grid(cells, tmp_path / "bad.png", column_titles=["a"])
    weights = np.array([[0.0, 2.0, 0.1], [2.0, 0.0, 1.0], [0.1, 1.0, 0.0]])
    with Image.open(plot_matrix(weights, tmp_path / "graph.png", title="graph")) as image:
        assert image.format == "PNG"
    with pytest.raises(ValueError, match="square"):
        plot_matrix(np.zeros((2, 3)), tmp_path / "bad.png", title="x")
