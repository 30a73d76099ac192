"""Trap and Replace against backdoors on Fashion-MNIST padded to 32x32: the paper's claim and its controls.

Digest §3d/§3g, on CPU. For each trigger and seed, with the same data, split and stage-2 recipe:

- **A** normal training: the WRN-16-1 with lambda = mu = 0 on the poisoned training split (expect ASR >= 90%);
- **B** Trap and Replace: stage 1 with lambda = 10, mu = 1 (its trap head's ASR is reported too: the backdoor should
  be trapped there), then `replace_head` and a new head trained on the clean holdout with the stem frozen;
- **C** the lambda = 0 ablation: the same head replacement on A's stem (A *is* the lambda = mu = 0 stage 1, so C
  reuses it instead of training it twice). The paper's point: without the reconstruction bait the stem learns the
  trigger, and a new head trained on clean data still reads it;
- **D** fine-tuning the whole of A on the holdout with the stage-2 recipe (a baseline defence).

Also, for A's and B's stage-1 models, `nearest_mean_probe`: how much of each layer's features already read
"target class" on triggered images (the paper's Fig. 2 as a number), which shows where the backdoor sits.

Every run is `training/train_trap_replace.py`'s real `main([...])` on one thread; finished runs are reused and
interrupted ones resumed, so the benchmark can be run again to continue (or to gather seeds run separately). Numbers
are the final models' (no selection on the test set). Pass criteria (digest §3d, mean over seeds): ASR_A >= 90%,
ASR_B <= 10%, ASR_C - ASR_B >= 20 points, ACC_A - ACC_B <= 5 points.

The defaults are the README's documented run, sized for 2 shared CPU cores (digest §3g shrunk): the first 6,000
training images (300 held out), 15% poisoned, stage 1 200 steps of 128, stage 2 120 steps of 64, stem ending after
block 6::

    OMP_NUM_THREADS=1 python benchmarks/trap_replace_fashion_mnist.py --seeds 0 1 2 --triggers badnet_sq
    OMP_NUM_THREADS=1 python benchmarks/trap_replace_fashion_mnist.py --seeds 0 --triggers sig
    # the earlier paper-split run: 12,000 images, 10% poisoned, stem 5
    OMP_NUM_THREADS=1 python benchmarks/trap_replace_fashion_mnist.py --seeds 0 --num_train 12000 --poison_ratio 0.1 \
        --stem_end_block 5 --stage1_steps 600 --stage2_steps 270
    # the paper's split and holdout size: 50,000 images (the last 2,500 held out, as the paper's CIFAR-10 holdout),
    # stage 1 1500 steps of 128, stage 2 30 epochs of the holdout (~40 min per seed on a shared core)
    OMP_NUM_THREADS=1 python benchmarks/trap_replace_fashion_mnist.py --seeds 0 1 2 --num_train 50000 \
        --stem_end_block 5 --stage1_steps 1500 --stage2_steps 1170 --output_dir runs/tr50k

Writes `<output_dir>/results_<triggers>_stem<N>.json` and `.md` (the table), `probe.json` beside each seed's runs,
and `triggers.png` (clean test images and the same images under each trigger; `--picture_only` draws just that).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PROBED = ("A_normal", "B_stage1")  # the stage-1 models whose layers `nearest_mean_probe` reads


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


@torch.no_grad()
def nearest_mean_probe(checkpoint: Path, data: Path, target_label: int = 0) -> dict[str, list[float]]:
    """Where a stage-1 model holds the backdoor: for the input conv and each residual block (stem, then trap head),
    the pooled features of the clean holdout give one standardised mean per class; a triggered non-target test image
    counts as an attack success when its features lie nearest the target class's mean.

    A head trained on clean images only can read the trigger as the target only where this share is high: it measures
    how much of the backdoor a layer's features already carry as "looks like the target class" (the paper's Fig. 2).

    Returns:
        `asr` and `accuracy` (clean test images classified by the same rule), one entry per layer.
    """
    from hfvision.data import load_image_stream
    from hfvision.models.trap_replace import TrapReplaceForImageClassification, TrapReplaceImageProcessor

    model = TrapReplaceForImageClassification.from_pretrained(checkpoint).eval()
    processor = TrapReplaceImageProcessor.from_pretrained(checkpoint)

    def pooled_features(images: list, labels: list) -> tuple[list[torch.Tensor], torch.Tensor]:
        pixel_values = processor(images, return_tensors="pt").pixel_values
        hidden_states = list(model.trap_replace(pixel_values, output_hidden_states=True).hidden_states)
        for block in model.trap_head.blocks:
            hidden_states.append(block(hidden_states[-1]))
        return [hidden.mean(dim=(2, 3)) for hidden in hidden_states], torch.tensor(labels)  # (N, C) per layer

    holdout = list(load_image_stream(str(data), split="holdout"))
    holdout_features, holdout_labels = pooled_features(
        [row["image"] for row in holdout], [row["label"] for row in holdout]
    )
    tested = {}
    for split in ("eval", "triggered"):
        rows = datasets.load_dataset("parquet", data_dir=str(data / split), split="train")
        tested[split] = pooled_features(list(rows["image"]), rows["label"])
    probe: dict[str, list[float]] = {"asr": [], "accuracy": []}
    for layer, features in enumerate(holdout_features):
        center, scale = features.mean(0), features.std(0) + 1e-6
        means = torch.stack([((features - center) / scale)[holdout_labels == label].mean(0) for label in range(10)])
        nearest = {
            split: torch.cdist((split_features[layer] - center) / scale, means).argmin(-1)
            for split, (split_features, _) in tested.items()
        }
        probe["accuracy"].append(float((nearest["eval"] == tested["eval"][1]).float().mean()))
        probe["asr"].append(float((nearest["triggered"] == target_label).float().mean()))
    return probe


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
    parser.add_argument("--output_dir", default="runs/bench_tr15")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--triggers", nargs="+", default=["badnet_sq"])
    parser.add_argument("--stem_end_block", type=int, default=6, help="last stem block of the WRN-16-1 (paper: 5)")
    parser.add_argument("--stage1_steps", type=int, default=200, help="4.5 epochs of 44.5 steps of 128")
    parser.add_argument("--stage2_steps", type=int, default=120, help="30 epochs of 4 steps of 64 (300 images)")
    parser.add_argument("--stage2_learning_rate", type=float, default=0.03, help="the paper's Adam lr")
    parser.add_argument("--poison_ratio", type=float, default=0.15, help="digest's fallback when A's ASR < 90%%")
    parser.add_argument("--num_train", type=int, default=6000)
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
            base = root / trigger / f"stem{args.stem_end_block}" / f"seed{seed}"
            seeded = [*data, "--seed", str(seed)]
            stage1 = [*seeded, "--max_steps", str(args.stage1_steps), "--stem_end_block", str(args.stem_end_block)]
            normal = [*stage1, "--reconstruction_weight", "0", "--tv_weight", "0"]
            results = {"A_normal": run(script, normal, base / "A_normal")}
            bait = stage1
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
            probe_file = base / "probe.json"
            if not probe_file.is_file():
                probe = {name: nearest_mean_probe(base / name / "final", root / "data" / trigger) for name in PROBED}
                probe_file.write_text(json.dumps(probe) + "\n")
            results["probe"] = json.loads(probe_file.read_text())
            table["runs"][f"{trigger}/seed{seed}"] = results
            print(f"{trigger} seed {seed} ({time.perf_counter() - start:.0f} s): {json.dumps(results)}", flush=True)

    lines = ["| trigger | run | seeds | clean accuracy | ASR |", "|---|---|---|---|---|"]
    summary: dict[str, Any] = {}
    for trigger in args.triggers:
        per_seed = [table["runs"][f"{trigger}/seed{seed}"] for seed in args.seeds]
        for name in [name for name in per_seed[0] if name != "probe"]:
            accuracy = np.array([results[name]["clean_accuracy"] for results in per_seed]) * 100
            asr = np.array([results[name]["attack_success_rate"] for results in per_seed]) * 100
            summary[f"{trigger}/{name}"] = {"clean_accuracy": accuracy.mean(), "attack_success_rate": asr.mean()}
            spread = lambda values: f" ± {values.std(ddof=1):.1f}" if len(values) > 1 else ""  # noqa: E731
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
        for name in ("A_normal", "B_stage1"):
            asr_by_layer = np.array([results["probe"][name]["asr"] for results in per_seed]).mean(0) * 100
            summary[f"{trigger}/probe/{name}"] = asr_by_layer.tolist()
            layers = " / ".join(f"{value:.0f}" for value in asr_by_layer)
            lines.append(
                f"| {trigger} | probe {name}: nearest-mean ASR, input conv / blocks | {len(per_seed)} | | {layers} |"
            )
    table["summary"] = summary
    root.mkdir(parents=True, exist_ok=True)
    name = f"results_{'_'.join(args.triggers)}_stem{args.stem_end_block}"
    (root / f"{name}.json").write_text(json.dumps(table, indent=1, default=float) + "\n")
    (root / f"{name}.md").write_text("\n".join(lines) + "\n")
    trigger_picture(root / "triggers.png")
    print("\n".join(lines))
    for trigger in args.triggers:
        print(trigger, json.dumps(summary[f"{trigger}/criteria"]))
    return table


if __name__ == "__main__":
    main()
