"""Trap and Replace against backdoors on Fashion-MNIST padded to 32x32: the paper's claim and its controls.

Digest §3d/§3g, on CPU. For each trigger and seed, with the same data, split and stage-2 recipe:

- **A** normal training: the WRN-16-1 with lambda = mu = 0 on the poisoned training split (expect ASR >= 90%);
- **B** Trap and Replace: stage 1 with lambda = 10, mu = 1 (its trap head's ASR is reported too: the backdoor should
  be trapped there), then `replace_head` and a new head trained on the clean holdout with the stem frozen;
- **C** the lambda = 0 ablation: the same head replacement on A's stem (A *is* the lambda = mu = 0 stage 1, so C
  reuses it instead of training it twice). The paper's point: without the reconstruction bait the stem learns the
  trigger, and a new head trained on clean data still reads it;
- **D** fine-tuning the whole of A on the holdout with the stage-2 recipe (a baseline defence).

Every run is `training/train_trap_replace.py`'s real `main([...])` on one thread; finished runs are reused and
interrupted ones resumed, so the benchmark can be run again to continue. Numbers are the final models' (no selection
on the test set). Pass criteria (digest §3d, mean over seeds): ASR_B <= 10%, ASR_C - ASR_B >= 20 points,
ACC_A - ACC_B <= 5 points.

    OMP_NUM_THREADS=1 python benchmarks/trap_replace_fashion_mnist.py --seeds 0 --triggers badnet_sq --stage1_steps 600
    OMP_NUM_THREADS=1 python benchmarks/trap_replace_fashion_mnist.py --seeds 0 1 2 --triggers badnet_sq blend sig

Writes `<output_dir>/results.json`, `results.md` (the table) and `triggers.png` (clean test images and the same
images under each trigger; `--picture_only` draws just that).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("train_trap_replace", REPO / "training" / "train_trap_replace.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run(script: Any, flags: list[str], output_dir: Path) -> dict[str, float]:
    """`main(flags)` into `output_dir` (resumed if interrupted), or the results of a finished run."""
    results = output_dir / "final" / "eval_results.json"
    if not results.is_file():
        script.main([*flags, "--output_dir", str(output_dir), "--resume_from_checkpoint", "latest"])
    metrics = json.loads(results.read_text())["metrics"]
    return {
        "clean_accuracy": metrics["eval/clean_accuracy"],
        "attack_success_rate": metrics["eval/attack_success_rate"],
    }


def trigger_picture(path: Path, count: int = 8, target_label: int = 0) -> None:
    """Clean Fashion-MNIST test images (padded to 32x32, non-target classes) and the same images under every
    trigger, one row each (clean, badnet_grid, badnet_sq, blend, sig), 3x magnified."""
    from hfvision.data.backdoor import TRIGGERS, stamp_trigger
    from hfvision.data.fashion_mnist import load_fashion_mnist

    test = load_fashion_mnist("test", limit=4 * count)
    images = np.stack([np.asarray(image) for image, label in zip(test["image"], test["label"], strict=True)
                       if label != target_label][:count])  # fmt: skip
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))  # (count, 32, 32), as the runs' zero padding
    rows = [images] + [stamp_trigger(images, trigger) for trigger in TRIGGERS]
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/bench_trap_replace")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--triggers", nargs="+", default=["badnet_grid"])
    parser.add_argument("--stage1_steps", type=int, default=890, help="10 epochs of 89 steps of 128")
    parser.add_argument("--stage2_steps", type=int, default=270, help="30 epochs of 9 steps of 64 (600 images)")
    parser.add_argument("--stage2_learning_rate", type=float, default=0.03, help="the paper's Adam lr")
    parser.add_argument("--poison_ratio", type=float, default=0.1)
    parser.add_argument("--num_train", type=int, default=12000)
    parser.add_argument("--num_test", type=int, default=2000)
    parser.add_argument("--picture_only", action="store_true", help="only draw <output_dir>/triggers.png")
    args = parser.parse_args(argv)
    root = Path(args.output_dir)
    if args.picture_only:
        root.mkdir(parents=True, exist_ok=True)
        trigger_picture(root / "triggers.png")
        return {}
    torch.set_num_threads(1)
    script = load_script()
    config = str(REPO / "training" / "configs" / "train_trap_replace_fashion_mnist.yaml")
    table: dict[str, Any] = {"arguments": vars(args), "runs": {}}
    for trigger in args.triggers:
        data = [
            "--config", config, "--trigger", trigger, "--backdoor_data", str(root / "data" / trigger),
            "--poison_ratio", str(args.poison_ratio), "--num_train", str(args.num_train),
            "--num_test", str(args.num_test), "--checkpointing_steps", "100", "--eval_steps", "100000",
        ]  # fmt: skip
        stage2 = [
            "--max_steps", str(args.stage2_steps), "--learning_rate", str(args.stage2_learning_rate),
            "--per_device_train_batch_size", "64",
        ]  # fmt: skip
        for seed in args.seeds:
            start = time.perf_counter()
            base = root / trigger / f"seed{seed}"
            seeded = [*data, "--seed", str(seed)]
            normal = [
                *seeded,
                "--max_steps",
                str(args.stage1_steps),
                "--reconstruction_weight",
                "0",
                "--tv_weight",
                "0",
            ]
            results = {"A_normal": run(script, normal, base / "A_normal")}
            bait = [*seeded, "--max_steps", str(args.stage1_steps)]
            results["B_stage1_trap_head"] = run(script, bait, base / "B_stage1")
            replace = [*seeded, *stage2, "--stage", "replace"]
            results["B_trap_and_replace"] = run(
                script, [*replace, "--model_name_or_path", str(base / "B_stage1" / "final")], base / "B_replace"
            )
            results["C_lambda0_replace"] = run(
                script, [*replace, "--model_name_or_path", str(base / "A_normal" / "final")], base / "C_replace"
            )
            finetune = [
                *seeded,
                *stage2,
                "--stage",
                "finetune",
                "--model_name_or_path",
                str(base / "A_normal" / "final"),
            ]
            results["D_finetune_all"] = run(script, finetune, base / "D_finetune")
            table["runs"][f"{trigger}/seed{seed}"] = results
            print(f"{trigger} seed {seed} ({time.perf_counter() - start:.0f} s): {json.dumps(results)}", flush=True)

    lines = ["| trigger | run | seeds | clean accuracy | ASR |", "|---|---|---|---|---|"]
    summary: dict[str, Any] = {}
    for trigger in args.triggers:
        per_seed = [table["runs"][f"{trigger}/seed{seed}"] for seed in args.seeds]
        for name in per_seed[0]:
            accuracy = np.array([results[name]["clean_accuracy"] for results in per_seed]) * 100
            asr = np.array([results[name]["attack_success_rate"] for results in per_seed]) * 100
            summary[f"{trigger}/{name}"] = {"clean_accuracy": accuracy.mean(), "attack_success_rate": asr.mean()}
            spread = lambda values: f" ± {values.std():.1f}" if len(values) > 1 else ""  # noqa: E731
            lines.append(
                f"| {trigger} | {name} | {len(per_seed)} | {accuracy.mean():.1f}{spread(accuracy)} | "
                f"{asr.mean():.1f}{spread(asr)} |"
            )
        asr_b = summary[f"{trigger}/B_trap_and_replace"]["attack_success_rate"]
        asr_c = summary[f"{trigger}/C_lambda0_replace"]["attack_success_rate"]
        accuracy_gap = (
            summary[f"{trigger}/A_normal"]["clean_accuracy"]
            - summary[f"{trigger}/B_trap_and_replace"]["clean_accuracy"]
        )
        summary[f"{trigger}/criteria"] = {
            "ASR_A >= 90": bool(summary[f"{trigger}/A_normal"]["attack_success_rate"] >= 90),
            "ASR_B <= 10": bool(asr_b <= 10),
            "ASR_C - ASR_B >= 20": bool(asr_c - asr_b >= 20),
            "ACC_A - ACC_B <= 5": bool(accuracy_gap <= 5),
        }
    table["summary"] = summary
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.json").write_text(json.dumps(table, indent=1, default=float) + "\n")
    (root / "results.md").write_text("\n".join(lines) + "\n")
    trigger_picture(root / "triggers.png")
    print("\n".join(lines))
    for trigger in args.triggers:
        print(trigger, json.dumps(summary[f"{trigger}/criteria"]))
    return table


if __name__ == "__main__":
    main()
