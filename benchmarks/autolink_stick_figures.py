"""Faithfulness run: AutoLink on stick figures against its no-graph ablation, trained the same way.

The paper's claims (AutoLink, NeurIPS 2022): with reconstruction as the only signal, the learned graph's strongest
edges form the object's skeleton, and the keypoints become semantically stable. Here, on seeded stick figures with a
known 7-joint, 6-bone skeleton (`hfvision.data.build_stick_figures`):
1. `graph`: `training/train_autolink.py` as configured (K = 7 keypoints, the edge map feeds the decoder);
2. `no-graph`: the same run with `--use_edge_map false` (the decoder sees an all-zero edge map, so the detector gets no
   gradient: its keypoints stay at initialisation quality);
both evaluated on held-out figures: keypoint error after linear regression to the true joints (NME, normalised by
the figure's box diagonal; first half fits, second half scores) against the mean-pose baseline, and how many of the
graph's 6 strongest edges are true bones (after Hungarian matching of keypoints to joints, and reading each keypoint
as its nearest joint).

    python benchmarks/autolink_stick_figures.py [--max_steps 4000] [--seeds 0 1] [--output_dir DIR]

The config is `training/configs/train_autolink_stick_figures.yaml`: the tiny preset on 32x32 dark-on-light figures
(about 15 minutes per 4000-step run on one core).

Each run is its own process (`OMP_NUM_THREADS=1` recommended on shared cores); finished runs are re-used. Extra
flags go to the training script (e.g. `--stick_figures_backgrounds flat`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "train_autolink_stick_figures.yaml"
VARIANTS = {"graph": [], "no-graph": ["--use_edge_map", "false"]}
COLUMNS = (
    "reconstruction_loss",
    "keypoint_nme",
    "mean_pose_nme",
    "edge_precision",
    "nearest_joint_bone_recall",
    "bone_to_nonbone_weight_ratio",
)


def run(config: Path, output_dir: Path, seed: int, max_steps: int, flags: list[str]) -> dict:
    """One training run; returns its final metrics (re-used when the run already finished)."""
    results = output_dir / "final" / "eval_results.json"
    if not results.exists():
        command = [
            sys.executable, str(REPO / "training" / "train_autolink.py"), "--config", str(config),
            "--output_dir", str(output_dir), "--seed", str(seed), "--max_steps", str(max_steps),
            "--eval_steps", str(max_steps), "--checkpointing_steps", "500", "--resume_from_checkpoint", "latest",
            *flags,
        ]  # fmt: skip
        subprocess.run(command, check=True)
    return json.loads(results.read_text())["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/faithfulness_autolink")
    parser.add_argument("--max_steps", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--config", type=Path, default=CONFIG, help="training config")
    args, training_flags = parser.parse_known_args()

    table: dict[str, dict[str, list[float]]] = {}
    for variant, flags in VARIANTS.items():
        for seed in args.seeds:
            output_dir = Path(args.output_dir) / f"{variant}-seed{seed}"
            metrics = run(args.config, output_dir, seed, args.max_steps, flags + training_flags)
            for column in COLUMNS:
                table.setdefault(variant, {}).setdefault(column, []).append(metrics[f"eval/{column}"])
            print(f"{variant} seed {seed}: " + ", ".join(f"{c} {metrics[f'eval/{c}']:.3f}" for c in COLUMNS))

    print(f"\nheld-out stick figures ({args.max_steps} steps, seeds {args.seeds})")
    print(
        "| run | held-out reconstruction loss | keypoint NME | mean-pose NME | strongest-edge precision (Hungarian) "
        "| bones among the strongest edges (nearest joint) | bone / non-bone weight |"
    )
    print("|---|---|---|---|---|---|---|")
    for variant, columns in table.items():
        cells = []
        for column in COLUMNS:
            values = columns[column]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3f}{spread}")
        print(f"| {variant} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
