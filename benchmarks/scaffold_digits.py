"""SMaT faithfulness run on scikit-learn's digits (digest A6): simulability of students taught with explanations.

Protocol (the paper's, scaled to CPU): a teacher ViT (`scaffold-vit-digits`: 8x8 images, patch 2, 17 tokens, 4 layers x
4 heads, ScalarMix head) is fitted on 1000 train digits (AdamW 1e-3, 40 epochs). For each seed a student of the same
architecture starts from a fresh init (PyTorch's default init of every Linear/Conv2d layer, kaiming-uniform, as the
digest's prototype; `--student-init vit`: ViT's normal with std `--student-init-range`) and learns from 100 train
images labelled by the teacher (SGD lr 0.05, clip 5, weight decay 0.01, batch 16, 60 epochs); the epoch with the best
validation simulability (300 images) is kept and its test simulability (497 images, student argmax == teacher argmax)
is reported. Conditions:

- `none`: no explanations (beta = 0);
- `static`: teacher explanations from uniform head mixing (beta = 5) — SMaT at initialisation;
- `last_layer`: the last layer's heads only (beta = 5); `grad_x_input`: gradient x input (beta = 0.2) (not in the
  default set, add them with `--conditions`);
- `smat`: the teacher explainer meta-learned through the one-step lookahead (meta Adam, lr `--meta-lr`);
- `static+distractors` / `smat+distractors`: 16 random-score heads appended to the teacher's 16 real heads: each
  scores every key token N(0, std^2) (std `--distractor-std` 3), the same score in every query row. By default the
  scores are fixed per image (`--distractor-scores image`: the same wrong explanation of an image at every epoch);
  `token` draws them afresh at every call, `entry` draws every (query, key) score afresh (the mean over query rows
  shrinks those by sqrt(17)). SMaT should move the explainer's weight onto the real heads and beat uniform mixing.

Usage (about 10 CPU minutes for the students, 1-2 for the teacher, which `--teacher-dir` re-uses instead; writes
runs/scaffold_digits/results.json and the table):
    OMP_NUM_THREADS=1 python benchmarks/scaffold_digits.py --seeds 0 1 2 3 --output-dir runs/scaffold_digits
    # then the README's picture: digits, static uniform-head saliency, SMaT-learned saliency
    python benchmarks/scaffold_digits.py --output-dir runs/scaffold_digits --figure docs/images/scaffold_saliency.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hfvision.data.digits import digits_splits
from hfvision.models.scaffold import (
    AttentionExplainer,
    AttentionExplainerConfig,
    GradientExplainer,
    ScaffoldVitConfig,
    ScaffoldVitForImageClassification,
)
from hfvision.models.scaffold.smat_scaffold import (
    SmatConfig,
    SmatTrainer,
    predict_logits,
    reset_layer_init_,
    simulability,
)

CONDITIONS = ("none", "static", "last_layer", "grad_x_input", "smat", "static+distractors", "smat+distractors")


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 `(N, 8, 8)` -> normalised `(N, 1, 8, 8)` float (ViT's mean = std = 0.5, as the image processor)."""
    return (torch.from_numpy(images).float()[:, None] / 255.0 - 0.5) / 0.5


def fit_teacher(train: tuple[torch.Tensor, torch.Tensor], epochs: int, seed: int) -> ScaffoldVitForImageClassification:
    torch.manual_seed(seed)
    teacher = ScaffoldVitForImageClassification(ScaffoldVitConfig.from_preset("scaffold-vit-digits"))
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=1e-3, weight_decay=0.01)
    pixels, labels = train
    generator = torch.Generator().manual_seed(seed)
    teacher.train()
    for _ in tqdm(range(epochs), desc="teacher", leave=False):
        order = torch.randperm(len(pixels), generator=generator)
        for start in range(0, len(order), 32):
            chosen = order[start : start + 32]
            loss = teacher(pixel_values=pixels[chosen], labels=labels[chosen]).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(teacher.parameters(), 5.0)
            optimizer.step()
    return teacher.eval()


class DistractorHeads:
    """Append `num_heads` random-score heads as extra 'layers' (own generator, never torch's global stream).

    `per="image"`: every image gets its own random key-token scores N(0, std^2), the same in every query row and at
    every call: a fixed random table looked up by a fingerprint of the image (the teacher's first-head CLS-row
    scores, rounded), so the teacher's explanation of an image is always the same wrong one. `per="token"`: the
    same per-token scores, but drawn afresh at every call (their average over the epochs is uniform, so they only
    blur the target). `per="entry"`: every (query, key) score drawn afresh, which the explainer's mean over the
    query rows shrinks by sqrt(T).
    """

    TABLE_SIZE = 65521  # a prime: fingerprints fold into this many fixed random score rows

    def __init__(self, num_heads: int, heads_per_layer: int, std: float, seed: int, per: str = "image"):
        self.num_layers, self.heads_per_layer = num_heads // heads_per_layer, heads_per_layer
        self.num_heads, self.std, self.per = num_heads, std, per
        self.generator = torch.Generator().manual_seed(seed)
        self.table: torch.Tensor | None = None

    def _per_image(self, scores: torch.Tensor) -> torch.Tensor:
        tokens = scores.shape[-1]
        if self.table is None:
            self.table = torch.randn((self.TABLE_SIZE, self.num_heads, tokens), generator=self.generator) * self.std
        fingerprint = (scores[:, 0, 0, :].double() * 100).round().long()  # (B, T), fixed per image (frozen teacher)
        weights = torch.arange(1, tokens + 1, dtype=torch.long) * 7919
        index = torch.remainder((fingerprint * weights).sum(-1), self.TABLE_SIZE)
        return self.table[index].unsqueeze(2)  # (B, heads, 1, T)

    def __call__(self, scores: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        batch, _, tokens, _ = scores[0].shape
        if self.per == "image":
            noise = self._per_image(scores[0])
        else:
            rows = 1 if self.per == "token" else tokens
            noise = torch.randn((batch, self.num_heads, rows, tokens), generator=self.generator) * self.std
        noise = noise.expand(-1, -1, tokens, -1)
        return (*scores, *noise.split(self.heads_per_layer, dim=1))


def run_condition(
    condition: str, seed: int, teacher: ScaffoldVitForImageClassification, data: dict, args: argparse.Namespace
) -> dict:
    config = teacher.config
    distractors = condition.endswith("+distractors")
    explainer_layers = config.num_hidden_layers + (
        args.distractor_heads // config.num_attention_heads if distractors else 0
    )
    base = condition.split("+")[0]
    teacher_explainer: AttentionExplainer | GradientExplainer
    if base == "grad_x_input":
        teacher_explainer = GradientExplainer("grad_x_input", patch_grid=config.patch_grid)
    else:
        overrides = {"num_hidden_layers": explainer_layers}
        if base == "last_layer":
            overrides["layer_idx"] = config.num_hidden_layers - 1
        teacher_explainer = AttentionExplainer(AttentionExplainerConfig.for_model(config, **overrides))
    beta = {"none": 0.0, "grad_x_input": 0.2}.get(base, args.beta)
    meta_lr = args.distractor_meta_lr if distractors else args.meta_lr
    smat_config = SmatConfig(
        explanation_coeff=beta,
        student_lr=args.student_lr,
        student_weight_decay=0.01,
        grad_clip=5.0,
        meta_lr=meta_lr,
        meta_learn=base == "smat",
    )
    torch.manual_seed(1000 + seed)  # the student's init and dropout stream, the same in every condition
    student_config = ScaffoldVitConfig.from_preset("scaffold-vit-digits", initializer_range=args.student_init_range)
    student = ScaffoldVitForImageClassification(student_config)
    if args.student_init == "torch":
        reset_layer_init_(student)
    student_explainer = AttentionExplainer(AttentionExplainerConfig.for_model(student.config))
    transform = (
        DistractorHeads(
            args.distractor_heads, config.num_attention_heads, args.distractor_std, seed, args.distractor_scores
        )
        if distractors
        else None
    )
    trainer = SmatTrainer(teacher, teacher_explainer, student, student_explainer, smat_config, transform)
    subset = torch.randperm(len(data["train"]), generator=torch.Generator().manual_seed(seed))[: args.num_students]
    train_pixels = data["train"][subset]
    generator = torch.Generator().manual_seed(2000 + seed)
    best = (-1.0, 0.0, 0)
    start = time.perf_counter()
    for epoch in range(args.student_epochs):
        trainer.train_epoch(train_pixels, data["valid"], batch_size=16, generator=generator)
        valid_sim = simulability(predict_logits(student, data["valid"]), data["teacher_valid"])
        if valid_sim > best[0]:
            best = (valid_sim, simulability(predict_logits(student, data["test"]), data["teacher_test"]), epoch)
    result = {
        "condition": condition,
        "seed": seed,
        "valid_simulability": best[0],
        "test_simulability": best[1],
        "best_epoch": best[2],
        "seconds": time.perf_counter() - start,
    }
    if isinstance(teacher_explainer, AttentionExplainer):
        weights = teacher_explainer.head_weights().detach()
        real = (
            config.num_hidden_layers * config.num_attention_heads
            if teacher_explainer.config.layer_idx is None
            else None
        )
        result["heads_kept"] = int((weights > 0).sum())
        if real is not None:
            result["real_head_mass"] = float(weights[:real].sum())
        if base == "smat" and seed == args.seeds[0]:
            teacher_explainer.save_pretrained(Path(args.output_dir) / f"teacher_explainer_{condition}")
    return result


def summarize(results: list[dict]) -> list[dict]:
    rows = []
    for condition in CONDITIONS:
        chosen = [result for result in results if result["condition"] == condition]
        if not chosen:
            continue
        values = [result["test_simulability"] for result in chosen]
        row = {
            "condition": condition,
            "seeds": len(values),
            "mean": statistics.mean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "seconds": sum(result["seconds"] for result in chosen),
        }
        if "real_head_mass" in chosen[0]:
            row["real_head_mass"] = [round(result["real_head_mass"], 3) for result in chosen]
            row["heads_kept"] = [result["heads_kept"] for result in chosen]
        rows.append(row)
    return rows


def draw_saliency(output_dir: Path, path: Path, num_images: int = 8, scale: int = 16) -> Path:
    """Test digits (top), the static uniform-head explanation (middle) and the SMaT-learned one (bottom), drawn with
    the `image-explanation` pipeline and `overlay_saliency` from the run's saved teacher and seed-0 explainer."""
    from PIL import Image
    from transformers import pipeline

    from hfvision.models.scaffold import ImageExplanationPipeline, ScaffoldVitImageProcessor

    teacher = ScaffoldVitForImageClassification.from_pretrained(output_dir / "teacher").eval()
    processor = ScaffoldVitImageProcessor(size={"height": 8, "width": 8}, num_channels=1)  # the model's input size
    explain = pipeline(
        "image-explanation", model=teacher, image_processor=processor, pipeline_class=ImageExplanationPipeline
    )
    learned = AttentionExplainer.from_pretrained(output_dir / "teacher_explainer_smat")
    uniform = AttentionExplainer(AttentionExplainerConfig.for_model(teacher.config))
    images, _ = digits_splits(seed=0)["test"]
    side = 8 * scale
    canvas = Image.new("RGB", (num_images * (side + 4), 3 * side + 8), "white")
    for index in range(num_images):
        big = Image.fromarray(images[index]).resize((side, side), Image.Resampling.NEAREST)
        canvas.paste(big.convert("RGB"), (index * (side + 4), 0))
        for row, explainer in enumerate((uniform, learned), start=1):
            overlay = explain(big, explainer=explainer, return_overlay=True)["overlay"]
            canvas.paste(overlay, (index * (side + 4), row * (side + 4)))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument(
        "--conditions",
        nargs="+",
        default=["none", "static", "smat", "static+distractors", "smat+distractors"],
        choices=CONDITIONS,
    )
    parser.add_argument("--teacher-epochs", type=int, default=40)
    parser.add_argument("--student-epochs", type=int, default=60)
    parser.add_argument("--num-students", type=int, default=100, help="train images the student learns from")
    parser.add_argument("--student-lr", type=float, default=0.05)
    parser.add_argument(
        "--student-init-range",
        type=float,
        default=0.1,
        help="std of ViT's normal init of the student (all of it with `--student-init vit`, else the CLS and position "
        "embeddings); ViT's 0.02 leaves a plain-SGD student near chance in 60 epochs",
    )
    parser.add_argument(
        "--student-init",
        default="torch",
        choices=["torch", "vit"],
        help="the fresh student's init: PyTorch's default layer init (the digest's prototype) or ViT's normal(0, "
        "--student-init-range)",
    )
    parser.add_argument("--beta", type=float, default=5.0)
    parser.add_argument("--meta-lr", type=float, default=2e-3)
    parser.add_argument("--distractor-meta-lr", type=float, default=5e-3)
    parser.add_argument("--distractor-heads", type=int, default=16)
    parser.add_argument("--distractor-std", type=float, default=3.0, help="std of the distractor heads' scores")
    parser.add_argument(
        "--distractor-scores",
        default="image",
        choices=["image", "token", "entry"],
        help="random key-token scores fixed per image, drawn afresh per call, or drawn afresh per (query, key) entry",
    )
    parser.add_argument("--output-dir", default="runs/scaffold_digits")
    parser.add_argument(
        "--teacher-dir", default=None, help="load this run's saved teacher instead of fitting one (same protocol)"
    )
    parser.add_argument(
        "--figure", default=None, help="only draw the saliency picture of a finished run to this PNG path"
    )
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.figure:
        print(draw_saliency(output_dir, Path(args.figure)))
        return []

    splits = digits_splits(seed=0)
    data = {split: to_pixels(images) for split, (images, _) in splits.items()}
    start = time.perf_counter()
    if args.teacher_dir:
        teacher = ScaffoldVitForImageClassification.from_pretrained(args.teacher_dir).eval()
    else:
        teacher = fit_teacher((data["train"], torch.from_numpy(splits["train"][1])), args.teacher_epochs, seed=0)
    teacher_seconds = time.perf_counter() - start
    teacher_accuracy = (predict_logits(teacher, data["test"]).argmax(-1).numpy() == splits["test"][1]).mean()
    teacher.save_pretrained(output_dir / "teacher")
    print(f"teacher: test accuracy {teacher_accuracy:.3f} in {teacher_seconds:.0f} s")
    data["teacher_valid"] = predict_logits(teacher, data["valid"])
    data["teacher_test"] = predict_logits(teacher, data["test"])

    results = []
    runs = [(condition, seed) for condition in args.conditions for seed in args.seeds]
    for condition, seed in tqdm(runs, desc="students"):
        results.append(run_condition(condition, seed, teacher, data, args))
        tqdm.write(json.dumps(results[-1]))
    rows = summarize(results)
    report = {
        "args": vars(args),
        "teacher_test_accuracy": float(teacher_accuracy),
        "teacher_seconds": teacher_seconds,
        "summary": rows,
        "runs": results,
    }
    (output_dir / "results.json").write_text(json.dumps(report, indent=2))
    print("| condition | test simulability (mean ± sd) | real-head mass per seed | time |")
    print("|---|---|---|---|")
    for row in rows:
        mass = ", ".join(f"{value:.2f}" for value in row.get("real_head_mass", [])) or "-"
        print(f"| {row['condition']} | {row['mean']:.3f} ± {row['sd']:.3f} | {mass} | {row['seconds']:.0f} s |")
    return rows


if __name__ == "__main__":
    main()
