"""VATT vs VATT-MA and DropToken 50% vs 0%, pretrained on the synthetic video + audio + text clips on a CPU budget.

Three runs of the real pretraining script (`training/pretrain_vatt.py`, its tiny config
`training/configs/pretrain_vatt_tiny.yaml`) on the same clips, steps, batches and seed; only the model differs:

- `VATT, DropToken 50%`: the modality-specific towers (`vatt-tiny`), DropToken at the paper's rate;
- `VATT-MA, DropToken 50%`: one transformer shared by video, audio and text (`vatt-ma-tiny`);
- `VATT, DropToken 0%`: the modality-specific towers without DropToken (the paper's Table 1 trade-off).

Each is evaluated on held-out clips without DropToken: video->text recall in the video-text space (a caption matches
a clip when it names its colour, size, shape and motion) and video->audio recall in the video-audio space (a
soundtrack matches when it has the clip's shape, size and motion; colour is silent). Chance is the mean share of
matching candidates. Time per step is the training loop's compute time (forward, backward, optimizer; data loading
excluded) per step, measured in the same process one run after the other.

    python benchmarks/vatt_synthetic.py --output_dir runs/vatt_synthetic            # ~15 min on one CPU core
    python benchmarks/vatt_synthetic.py --output_dir runs/vatt_synthetic --reuse    # reprint from finished runs

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

TRAINING = Path(__file__).resolve().parents[1] / "training"
sys.path.insert(0, str(TRAINING))

import pretrain_vatt  # noqa: E402  (the training script, importable from training/)

from hfvision.data import build_av_clips, load_av_clip_stream  # noqa: E402

CONFIG = TRAINING / "configs" / "pretrain_vatt_tiny.yaml"
RUNS = {
    "VATT, DropToken 50%": ["--model_preset", "vatt-tiny", "--droptoken_rate", "0.5"],
    "VATT-MA, DropToken 50%": ["--model_preset", "vatt-ma-tiny", "--droptoken_rate", "0.5"],
    "VATT, DropToken 0%": ["--model_preset", "vatt-tiny", "--droptoken_rate", "0.0"],
}
DATA = {  # the tiny config's synthetic clips, built once and shared by the runs
    "num_train": 4096,
    "num_eval": 256,
    "num_shards": 2,
    "num_eval_shards": 1,
    "text_fraction": 0.8,
    "num_frames": 8,
    "image_size": 32,
    "sampling_rate": 8000,
    "num_samples": 1280,
}


def chance_recall_at_1(eval_dir: Path) -> dict[str, float]:
    """Expected recall@1 of a random ranking: the mean share of candidates that match each held-out clip."""
    shards = sorted(str(path) for path in eval_dir.glob("*.tar"))
    clips = [clip for clip in load_av_clip_stream(shards) if clip["has_text"]]
    chance = {}
    for name, attributes in (("text", pretrain_vatt.DESCRIBED), ("audio", pretrain_vatt.AUDIBLE)):
        matches = pretrain_vatt.matching_indices(clips, attributes)
        chance[name] = float(np.mean([len(row) for row in matches]) / len(clips))
    return chance


def run(name: str, flags: list[str], args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """One pretraining run (or its saved results with `--reuse`); returns its final metrics."""
    output_dir = Path(args.output_dir) / name.lower().replace(",", "").replace("%", "").replace(" ", "_")
    results = output_dir / "final" / "eval_results.json"
    if args.reuse and results.is_file():
        return json.loads(results.read_text())["metrics"]
    argv = [
        "--config", str(CONFIG), *flags,
        "--synthetic", "false", "--train_data", str(data_dir),
        "--output_dir", str(output_dir), "--overwrite_output_dir",
        "--max_steps", str(args.max_steps), "--eval_steps", str(args.max_steps),
        "--checkpointing_steps", str(args.max_steps), "--seed", str(args.seed),
        "--image_size", str(args.image_size), "--num_frames", str(args.num_frames),
    ]  # fmt: skip
    print(f"== {name}: python training/pretrain_vatt.py {' '.join(argv)}", flush=True)
    return pretrain_vatt.main(argv)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run (or reload) the three pretraining runs and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/vatt_synthetic")
    parser.add_argument("--max_steps", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--image_size", type=int, default=16, help="frame side the model sees (the clips are 32 px)")
    parser.add_argument("--num_frames", type=int, default=4, help="frames the model sees (the clips have 8)")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs' eval_results.json")
    args = parser.parse_args(argv)

    data_dir = Path(args.output_dir) / "data"
    if not (data_dir / "build_info.json").is_file():
        build_av_clips(data_dir, seed=args.seed, overwrite=True, **DATA)
    metrics = {name: run(name, flags, args, data_dir) for name, flags in RUNS.items()}
    chance = chance_recall_at_1(data_dir / "eval")

    batch = 32  # per_device_train_batch_size of the tiny config
    print(f"\n{args.max_steps} steps of {batch} clips, seed {args.seed}, {int(DATA['num_eval'])} held-out clips")
    print("| model | video→text R@1 | R@5 | video→audio R@1 | R@5 | ms / step | step time vs DropToken 0% |")
    print("|---|---|---|---|---|---|---|")
    step_ms = {name: 1000 * batch / values["train/compute_samples_per_second"] for name, values in metrics.items()}
    for name, values in metrics.items():
        print(
            f"| {name} | {values['eval/video_to_text_recall@1']:.3f} | {values['eval/video_to_text_recall@5']:.3f} | "
            f"{values['eval/video_to_audio_recall@1']:.3f} | {values['eval/video_to_audio_recall@5']:.3f} | "
            f"{step_ms[name]:.1f} | {step_ms[name] / step_ms['VATT, DropToken 0%']:.2f}x |"
        )
    print(f"| chance | {chance['text']:.3f} | | {chance['audio']:.3f} | | | |")
    return {"metrics": metrics, "chance": chance, "step_ms": step_ms}


if __name__ == "__main__":
    main()
