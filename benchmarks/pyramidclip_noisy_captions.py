"""Faithfulness run: which part of PyramidCLIP's objective carries its robustness to caption noise.

Same encoders (the tiny PyramidCLIP towers), same data, same steps and seeds; only `--objective` of
`training/pretrain_pyramidclip.py` differs:
- `pyramid`: the paper's objective (peer + cross-level terms over the whole pyramid, softened negatives, alpha 0.2);
- `pyramid_hard`: the same pyramid with alpha = 0 (the pyramid without the softening);
- `clip_multi`: CLIP with the summary S and attribute text A as extra captions (the pyramid's texts, CLIP's single
  view, plain InfoNCE);
- `clip_soft`: CLIP's single image-caption pair with the softened negatives (alpha 0.2, the softening alone);
- `clip`: CLIP's InfoNCE between the global view and the caption, the control.
A `--mismatch` fraction of the synthetic training scenes carries another scene's caption and summary (the paper's
noisy web pairs); the attribute text A always names the image's own objects, as the paper's detector tags do. Region
features come from the scenes' ground-truth boxes, not a detector. Zero-shot top-1 is measured on clean held-out
one-object scenes (48 classes, chance 2.1%).

    python benchmarks/pyramidclip_noisy_captions.py [--objectives pyramid clip ...] [--mismatch 0.0 0.3 0.6] \
        [--seeds 0 1 2] [--max_steps 300] [--output_dir runs/faithfulness_pyramidclip]

Each run is the training script with `training/configs/pretrain_pyramidclip_tiny.yaml` in its own process; the runs of
one (seed, mismatch) share one build of the scenes (`--synthetic_data_dir`). A finished run (its
`final/eval_results.json`, with the same `--max_steps`) is reused, so an interrupted sweep continues where it
stopped. Prints a table of mean zero-shot top-1 ± sample standard deviation over the seeds and writes it, with every
run's value, to `output_dir/summary.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "pretrain_pyramidclip_tiny.yaml"
OBJECTIVES = {
    "pyramid": "PyramidCLIP (alpha 0.2)",
    "pyramid_hard": "pyramid, alpha 0",
    "clip_multi": "CLIP + S, A captions",
    "clip_soft": "CLIP, alpha 0.2",
    "clip": "CLIP InfoNCE",
}
METRIC = "eval/zero_shot_top1_accuracy"


def run(output_dir: Path, objective: str, mismatch: float, seed: int, max_steps: int) -> float:
    """One pretraining run; returns its final zero-shot top-1 (re-used when the run already finished)."""
    run_dir = output_dir / f"{objective}-mismatch{round(mismatch * 100)}-seed{seed}"
    results = run_dir / "final" / "eval_results.json"
    if not results.exists():
        data_dir = output_dir / f"data-mismatch{round(mismatch * 100)}-seed{seed}"  # shared by the objectives
        command = [
            sys.executable, str(REPO / "training" / "pretrain_pyramidclip.py"), "--config", str(CONFIG),
            "--output_dir", str(run_dir), "--overwrite_output_dir", "true", "--objective", objective,
            "--seed", str(seed), "--synthetic_mismatch_fraction", str(mismatch), "--synthetic_data_dir", str(data_dir),
            "--max_steps", str(max_steps), "--checkpointing_steps", str(max_steps), "--eval_steps", str(max_steps),
        ]  # fmt: skip
        subprocess.run(command, check=True)
    finished = json.loads(results.read_text())
    if finished["global_step"] != max_steps:
        raise SystemExit(
            f"{run_dir} holds a {finished['global_step']}-step run, not {max_steps}; use another --output_dir"
        )
    return finished["metrics"][METRIC]


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=Path("runs/faithfulness_pyramidclip"))
    parser.add_argument("--objectives", nargs="+", choices=list(OBJECTIVES), default=list(OBJECTIVES))
    parser.add_argument("--mismatch", type=float, nargs="+", default=[0.0, 0.3, 0.6])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max_steps", type=int, default=300)
    args = parser.parse_args()
    if any(not 0.0 <= mismatch <= 1.0 for mismatch in args.mismatch):
        parser.error(f"--mismatch values must be in [0, 1], got {args.mismatch}")

    table: dict[tuple[str, float], list[float]] = {}
    for mismatch in args.mismatch:
        for seed in args.seeds:
            for objective in args.objectives:
                top1 = run(args.output_dir, objective, mismatch, seed, args.max_steps)
                table.setdefault((objective, mismatch), []).append(top1)
                print(f"{objective} mismatch {mismatch:.0%} seed {seed}: zero-shot top-1 {top1:.3f}", flush=True)

    print(
        f"\nzero-shot top-1 on clean held-out scenes, mean ± std over seeds {args.seeds} "
        f"({args.max_steps} steps; chance 0.021)"
    )
    print("| mismatched training captions | " + " | ".join(OBJECTIVES[name] for name in args.objectives) + " |")
    print("|---" * (len(args.objectives) + 1) + "|")
    for mismatch in args.mismatch:
        cells = [cell(table[objective, mismatch]) for objective in args.objectives]
        print(f"| {mismatch:.0%} | " + " | ".join(cells) + " |")
    summary = {
        "max_steps": args.max_steps,
        "seeds": args.seeds,
        "metric": METRIC,
        "runs": {f"{objective}@{mismatch}": values for (objective, mismatch), values in table.items()},
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
