"""Faithfulness run: AutoLink's skeleton on stick figures, beside chance and three controls, over seeds.

The paper's claims (AutoLink, NeurIPS 2022): with reconstruction as the only signal, the learned graph's strongest
edges form the object's skeleton, and the keypoints become semantically stable. Here, on seeded stick figures with a
known 7-joint, 6-bone skeleton (`hfvision.data.build_stick_figures`), every seed trains three runs of
`training/train_autolink.py` (the seed also draws the figures):
1. `graph`: the configured model (K = 7 keypoints; the edge map feeds the decoder);
2. `frozen`: the same, with the graph's edge scores frozen at their random initial values (`--freeze_graph`): a
   trained detector with an untrained graph;
3. `no-graph`: the decoder sees an all-zero edge map (`--use_edge_map false`), so neither the detector nor the graph
   gets a gradient: untrained keypoints with the untrained initial graph;
and the `graph` runs are also scored with their learned edge weights permuted among the keypoint pairs (`shuffled`:
a seeded permutation, at evaluation; the training script reports it as `shuffled_graph_*`): a trained detector with
the learned weights on the wrong pairs.

Every row is scored on held-out figures, strict reading first: the fraction of the 6 strongest edges that are true
bones after one-to-one (Hungarian) matching of keypoints to joints, then the nearest-joint reading (each keypoint read
as its nearest joint; the 6 strongest joint pairs), each beside its chance level computed exactly by
`skeleton_recovery` for those keypoints; the bone / non-bone weight ratio; the keypoint error after linear regression
to the true joints (NME, box-diagonal normalised; first half fits, second half scores) beside the mean pose's; and the
held-out reconstruction loss. Cells are mean ± sd (sample sd) over the seeds.

    python benchmarks/autolink_stick_figures.py --seeds 0 1 2 3 4 [--settings ours] [--max_steps 4000]

`--settings` moves the run toward the paper's protocol, one change each (several combine):
- `ours`: `training/configs/train_autolink_stick_figures.yaml` as is: the tiny preset, 32x32 dark figures on a light
  flat background, a 4x4 mask grid (8-pixel cells), lr 1e-3 with warmup and cosine decay (graph scale 51.2, so the
  graph's step is the paper's 512 x 1e-4), multi-scale L1 + SSIM;
- `paper-mask`: the paper's relative mask cell, a 16x16 grid of the image (2-pixel cells at 32 px);
- `paper-lr`: the paper's constant learning rate 1e-4 with graph scale 512, no warmup, no decay;
- `64px`: 64x64 figures (the head, 3 pixels from the neck at 32 px, becomes resolvable), the same relative sizes;
- `colours`: the generator's defaults, random figure and background colours and flat, gradient and noise
  backgrounds;
- `feature-loss`: the paper's feature loss (`perceptual_loss="vgg"`, no pixel term) on a small VGG-style network
  trained as a Fashion-MNIST classifier (random colours) standing in for VGG16; trained once, by the first run that
  needs it, into `OUTPUT_DIR/feature_network` and shared by every run.

Each run is its own process (`OMP_NUM_THREADS=1` recommended on shared cores; about 15 minutes per 4000-step run on
one core at 32 px); finished runs are re-used and interrupted ones resume from their last checkpoint. Further flags go
to the training script. The table is printed and written to `OUTPUT_DIR/<settings>/summary.json` with every seed's
values.
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
FEATURE_NETWORK = "feature_network"
SETTINGS = {
    "ours": [],
    "paper-mask": ["--mask_grid_size", "16"],
    "paper-lr": [
        "--learning_rate", "1e-4", "--graph_lr_scale", "512", "--lr_schedule", "constant", "--warmup_steps", "0"
    ],
    "64px": ["--stick_figures_image_size", "64", "--image_size", "64"],
    "colours": ["--stick_figures_fixed_colors", "false", "--stick_figures_backgrounds", "flat,gradient,noise"],
    "feature-loss": ["--perceptual_backbone", f"{{output_dir}}/{FEATURE_NETWORK}"],
}  # fmt: skip
VARIANTS = {"graph": [], "frozen": ["--freeze_graph", "true"], "no-graph": ["--use_edge_map", "false"]}
# (column, metric of the graph runs, metric of the shuffled row), strict reading first; the shuffled row has the
# graph runs' detector, so the same keypoints (and chance levels) under other edge weights.
COLUMNS = (
    ("strict: strongest-edge precision (Hungarian)", "edge_precision", "shuffled_graph_edge_precision"),
    ("strict chance", "edge_precision_chance", "shuffled_graph_edge_precision_chance"),
    (
        "nearest joint: bones among the 6 strongest pairs",
        "nearest_joint_bone_recall",
        "shuffled_graph_nearest_joint_bone_recall",
    ),
    (
        "nearest-joint chance",
        "nearest_joint_bone_recall_chance",
        "shuffled_graph_nearest_joint_bone_recall_chance",
    ),
    ("bone / non-bone weight", "bone_to_nonbone_weight_ratio", "shuffled_graph_bone_to_nonbone_weight_ratio"),
    ("keypoint NME", "keypoint_nme", "keypoint_nme"),
    ("mean-pose NME", "mean_pose_nme", "mean_pose_nme"),
    ("held-out reconstruction loss", "reconstruction_loss", "shuffled_graph_reconstruction_loss"),
)
ROWS = (
    ("graph", "graph", 1),
    ("shuffled (graph runs, edge weights permuted at evaluation)", "graph", 2),
    ("frozen (trained detector, untrained graph)", "frozen", 1),
    ("no graph (untrained detector and graph)", "no-graph", 1),
)


def run(config: Path, output_dir: Path, seed: int, max_steps: int, flags: list[str]) -> dict[str, float]:
    """One training run; returns its final eval metrics without the `eval/` prefix (re-used when it finished)."""
    results = output_dir / "final" / "eval_results.json"
    if not results.exists():
        command = [
            sys.executable, str(REPO / "training" / "train_autolink.py"), "--config", str(config),
            "--output_dir", str(output_dir), "--seed", str(seed), "--max_steps", str(max_steps),
            "--eval_steps", str(max_steps), "--checkpointing_steps", "500", "--resume_from_checkpoint", "latest",
            *flags,
        ]  # fmt: skip
        subprocess.run(command, check=True)
    metrics = json.loads(results.read_text())["metrics"]
    return {name.removeprefix("eval/"): value for name, value in metrics.items() if name.startswith("eval/")}


def mean_sd(values: list[float]) -> str:
    """`mean ± sd` (sample sd) to 3 decimals; the mean alone for one value."""
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.3f}{spread}"


def summarise(results: dict[str, list[dict[str, float]]]) -> list[tuple[str, dict[str, list[float]]]]:
    """Per row of `ROWS` (variants without results left out): its name and, per column, the values of every seed."""
    rows = []
    for name, variant, which in ROWS:
        if variant in results:
            rows.append(
                (name, {column[0]: [metrics[column[which]] for metrics in results[variant]] for column in COLUMNS})
            )
    return rows


def markdown_table(rows: list[tuple[str, dict[str, list[float]]]]) -> str:
    """The rows as a Markdown table of mean ± sd cells."""
    lines = ["| run | " + " | ".join(column[0] for column in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, columns in rows:
        lines.append(f"| {name} | " + " | ".join(mean_sd(columns[column[0]]) for column in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[tuple[str, dict[str, list[float]]]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/faithfulness_autolink")
    parser.add_argument("--max_steps", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["ours"])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--config", type=Path, default=CONFIG, help="training config")
    args, training_flags = parser.parse_known_args(argv)

    output_root = Path(args.output_dir)
    setting_flags = [flag.format(output_dir=output_root) for setting in args.settings for flag in SETTINGS[setting]]
    setting_dir = output_root / "+".join(args.settings)
    results: dict[str, list[dict[str, float]]] = {}
    for variant in args.variants:
        for seed in args.seeds:
            output_dir = setting_dir / f"{variant}-seed{seed}"
            flags = VARIANTS[variant] + setting_flags + training_flags
            metrics = run(args.config, output_dir, seed, args.max_steps, flags)
            results.setdefault(variant, []).append(metrics)
            print(
                f"{variant} seed {seed}: strict {metrics['edge_precision']:.3f} "
                f"(chance {metrics['edge_precision_chance']:.3f}), nearest joint "
                f"{metrics['nearest_joint_bone_recall']:.3f} "
                f"(chance {metrics['nearest_joint_bone_recall_chance']:.3f}), "
                f"keypoint NME {metrics['keypoint_nme']:.3f}",
                flush=True,
            )
    rows = summarise(results)
    table = markdown_table(rows)
    print(f"\nheld-out stick figures, settings {'+'.join(args.settings)}, {args.max_steps} steps, seeds {args.seeds}")
    print(table)
    summary = {
        "settings": args.settings,
        "seeds": args.seeds,
        "max_steps": args.max_steps,
        "training_flags": training_flags,
        "rows": dict(rows),
        "runs": results,
    }
    (setting_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
