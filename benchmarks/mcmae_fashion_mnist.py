"""Faithfulness run: MCMAE against plain MAE (transformers' ViTMAE), pretrained and fine-tuned the same way.

The paper's claim (ConvMAE, Table 1): at equal pretraining budget, MCMAE's hybrid encoder fine-tunes to a higher
accuracy than MAE's ViT. Here, on real images available offline (Fashion-MNIST, Debian `dataset-fashion-mnist`,
28x28 resized to 32x32):
1. pretrain `mcmae-tiny` and `matching_vitmae_config(mcmae-tiny)` (same width, heads, token stride, decoder, 75%
   masking, `norm_pix_loss`; one transformer block more for ViTMAE) with `training/pretrain_mcmae.py`: same images,
   steps, batch, optimiser and augmentation;
2. fine-tune both with `training/finetune_image_classification.py` (Trainer) on the same labelled subset and budget,
   in these variants (`--variants`; each is `architecture:name`):
   - `mcmae:plain`: AdamW, linear decay after a 5% warm-up, weight decay 0.05, no augmentation;
   - `mcmae:recipe`: the same plus the paper's fine-tuning recipe (ConvMAE `main_finetune.py`): layer-wise lr decay
     0.65, drop path 0.1, mixup 0.8 / cutmix 1.0 with label smoothing 0.1, cosine schedule (no RandAugment or
     random erasing);
   - `mcmae:recipe-no-mixing` / `mcmae:mixing-only`: the recipe's two halves (layer decay + drop path + cosine;
     mixup / cutmix / smoothing + cosine), to tell which one moves the result;
   - `vitmae:cls`: plain, the MAE checkpoint as transformers' `ViTForImageClassification` (CLS-token head);
   - `vitmae:gap`: plain, with MAE's own fine-tuning head (mean of the patch tokens, LayerNorm, linear; as MCMAE's);
   - `vitmae:gap-recipe`: `vitmae:gap` plus the recipe, without drop path (transformers' ViT has none);
3. the same fine-tuning from random initialisation (`--pretrain_steps 0` rows; off with `--no_random_init`) shows
   what pretraining adds.

    python benchmarks/mcmae_fashion_mnist.py [--pretrain_steps 2000] [--finetune_steps 500] [--seeds 0 1] \
        [--variants mcmae:plain mcmae:recipe vitmae:cls vitmae:gap vitmae:gap-recipe] [--no_random_init]

Each run is its own process (`OMP_NUM_THREADS=1` recommended on shared cores); finished runs are re-used, so two
invocations with different `--variants` (e.g. one per architecture, in parallel) share their pretraining runs. Prints
a table of fine-tuned top-1 accuracy on held-out Fashion-MNIST test images (mean and spread over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The paper's fine-tuning recipe as options of the Trainer script (ConvMAE `main_finetune.py`, FINETUNE.md command).
LAYER_DECAY = ["--layer_decay", "0.65", "--lr_scheduler_type", "cosine"]
MIXING = ["--mixup", "0.8", "--cutmix", "1.0", "--label_smoothing_factor", "0.1"]
RECIPE = [*LAYER_DECAY, *MIXING]
# "architecture:variant" -> (table label, extra fine-tuning arguments, run folder)
VARIANTS = {
    "mcmae:plain": ("MCMAE (`mcmae-tiny`), plain", [], "finetune"),
    "mcmae:recipe": ("MCMAE (`mcmae-tiny`), paper's recipe", [*RECIPE, "--drop_path_rate", "0.1"], "finetune-recipe"),
    "mcmae:recipe-no-mixing": (
        "MCMAE (`mcmae-tiny`), recipe without mixup / cutmix / smoothing",
        [*LAYER_DECAY, "--drop_path_rate", "0.1"],
        "finetune-recipe-no-mixing",
    ),
    "mcmae:mixing-only": (
        "MCMAE (`mcmae-tiny`), mixup / cutmix / smoothing only",
        [*MIXING, "--lr_scheduler_type", "cosine"],
        "finetune-mixing-only",
    ),
    "vitmae:cls": ("MAE (ViTMAE, matched), CLS head, plain", [], "finetune"),
    "vitmae:gap": ("MAE (ViTMAE, matched), mean-pooled head, plain", ["--vitmae_pooling", "mean"], "finetune-gap"),
    "vitmae:gap-recipe": (
        "MAE (ViTMAE, matched), mean-pooled head, recipe (no drop path)",
        ["--vitmae_pooling", "mean", *RECIPE],
        "finetune-gap-recipe",
    ),
}


def pretrain(output_dir: Path, architecture: str, seed: int, steps: int, batch_size: int) -> Path:
    """A pretraining run (or a randomly initialised one with `steps == 0`); returns its final folder."""
    final = output_dir / "final"
    if not (final / "eval_results.json").exists():
        command = [
            sys.executable, str(REPO / "training" / "pretrain_mcmae.py"),
            "--fashion_mnist", "--fashion_mnist_num_eval", "512", "--model_preset", "mcmae-tiny",
            "--architecture", architecture, "--output_dir", str(output_dir), "--seed", str(seed),
            "--max_steps", str(max(steps, 1)), "--per_device_train_batch_size", str(batch_size),
            "--learning_rate", "1.5e-3", "--warmup_steps", str(max(steps // 20, 1)), "--shuffle_buffer", "2048",
            "--checkpointing_steps", "500", "--checkpoints_total_limit", "1", "--eval_steps", str(max(steps, 1)),
            "--logging_steps", "50", "--resume_from_checkpoint", "latest",
        ]  # fmt: skip
        if steps == 0:  # one step at learning rate 0: a saved random initialisation with the same processor
            command += ["--learning_rate", "0"]
        subprocess.run(command, check=True)
    return final


def finetune(checkpoint: Path, output_dir: Path, seed: int, steps: int, num_train: int, extra: list[str]) -> float:
    """Fine-tunes `checkpoint` on Fashion-MNIST with the `extra` arguments; returns top-1 on held-out test images."""
    results = output_dir / "eval_results.json"
    if not results.exists():
        command = [
            sys.executable, str(REPO / "training" / "finetune_image_classification.py"),
            "--model_name_or_path", str(checkpoint), "--output_dir", str(output_dir), "--dataset", "fashion_mnist",
            "--max_train_samples", str(num_train), "--max_eval_samples", "2000", "--max_steps", str(steps),
            "--per_device_train_batch_size", "64", "--per_device_eval_batch_size", "256", "--learning_rate", "2e-3",
            "--warmup_steps", str(max(steps // 20, 1)), "--weight_decay", "0.05", "--seed", str(seed),
            "--save_strategy", "no", "--logging_steps", "100", "--use_cpu", "--report_to", "none", *extra,
        ]  # fmt: skip
        subprocess.run(command, check=True)
    return json.loads(results.read_text())["eval_top1_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/faithfulness_mcmae")
    parser.add_argument("--pretrain_steps", type=int, default=2000)
    parser.add_argument("--pretrain_batch_size", type=int, default=128)
    parser.add_argument("--finetune_steps", type=int, default=500)
    parser.add_argument("--finetune_samples", type=int, default=10_000, help="labelled training images")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--no_random_init", action="store_true", help="skip the `--pretrain_steps 0` control rows")
    args = parser.parse_args()

    table: dict[tuple[str, int], list[float]] = {}
    for steps in (args.pretrain_steps,) if args.no_random_init else (args.pretrain_steps, 0):
        for variant in args.variants:
            architecture = variant.split(":")[0]
            _, extra, folder = VARIANTS[variant]
            for seed in args.seeds:
                name = f"{architecture}-pretrain{steps}-seed{seed}"
                root = Path(args.output_dir) / name
                checkpoint = pretrain(root / "pretrain", architecture, seed, steps, args.pretrain_batch_size)
                top1 = finetune(checkpoint, root / folder, seed, args.finetune_steps, args.finetune_samples, extra)
                table.setdefault((variant, steps), []).append(top1)
                print(f"{name} {variant}: fine-tuned top-1 {top1:.4f}", flush=True)

    print(
        f"\nFashion-MNIST top-1 after fine-tuning ({args.finetune_steps} steps on {args.finetune_samples} images; "
        f"2000 test images; seeds {args.seeds})"
    )
    print("| model, fine-tuning | pretraining steps | top-1 |\n|---|---|---|")
    for (variant, steps), values in table.items():
        spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
        print(f"| {VARIANTS[variant][0]} | {steps} | {statistics.mean(values):.3f}{spread} |")


if __name__ == "__main__":
    main()
