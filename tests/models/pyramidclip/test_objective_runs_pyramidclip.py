"""The ablation objectives through the real training script (`training/pretrain_pyramidclip.py` `main([...])`).

What `benchmarks/pyramidclip_noisy_captions.py` relies on: runs that differ only in `--objective` share one build of
the synthetic scenes (`--synthetic_data_dir`; reused when `build_args.json` matches, rebuilt otherwise), each trains
with its objective's settings (saved in its config) and logs its own loss terms.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.training.conftest import load_training_script, one_thread

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "training" / "configs" / "pretrain_pyramidclip_tiny.yaml"


def _args(data_dir: Path, output_dir: Path, objective: str, mismatch: float) -> list[str]:
    return [
        "--config", str(CONFIG), "--image_size", "32", "--synthetic_image_size", "32",
        "--synthetic_num_train", "64", "--synthetic_num_eval", "16", "--synthetic_mismatch_fraction", str(mismatch),
        "--synthetic_data_dir", str(data_dir), "--per_device_train_batch_size", "16",
        "--per_device_eval_batch_size", "16", "--shuffle_buffer", "16", "--tokenizer_vocab_size", "400",
        "--max_steps", "4", "--warmup_steps", "1", "--logging_steps", "2", "--checkpointing_steps", "4",
        "--eval_steps", "4", "--seed", "0", "--objective", objective, "--output_dir", str(output_dir),
    ]  # fmt: skip


def _logged_terms(output_dir: Path) -> set[str]:
    lines = (output_dir / "log_history.jsonl").read_text().splitlines()
    return {key for entry in map(json.loads, lines) for key in entry if key.startswith("train/loss_")}


def test_objectives_share_one_scene_build_and_train_with_their_own_settings(tmp_path):
    script = load_training_script("pretrain_pyramidclip")
    data_dir = tmp_path / "scenes"
    with one_thread():
        script.main(_args(data_dir, tmp_path / "clip_multi", "clip_multi", 0.5))
        built = {path: path.stat().st_mtime_ns for path in data_dir.rglob("*.tar")}
        script.main(_args(data_dir, tmp_path / "clip_soft", "clip_soft", 0.5))
        assert built and {path: path.stat().st_mtime_ns for path in data_dir.rglob("*.tar")} == built  # reused

        # Each run's saved config carries its objective's settings; each logs its own terms and no others.
        for name, alpha, objective in (("clip_multi", 0.0, "multi_caption"), ("clip_soft", 0.2, "pyramid")):
            config = json.loads((tmp_path / name / "final" / "config.json").read_text())
            assert (config["softening_alpha"], config["objective"]) == (alpha, objective), name
        multi_terms = {"train/loss_global_text", "train/loss_global_summary", "train/loss_global_attribute"}
        assert _logged_terms(tmp_path / "clip_multi") == multi_terms
        assert _logged_terms(tmp_path / "clip_soft") == set()
