"""Learning to Scaffold (SMaT; Fernandes et al., NeurIPS 2022, arXiv 2204.10810): fit a teacher ViT, then teach a
student with the teacher's labels and meta-learned attention explanations, with Accelerate.

Usage (a YAML file gives defaults, flags override them)::

    accelerate launch training/train_scaffold.py --config training/configs/train_scaffold_digits.yaml
    python training/train_scaffold.py --config training/configs/train_scaffold_digits.yaml --output_dir runs/smat \
        --teacher_explainer static   # the static uniform-head baseline (no meta-learning)

What it does:
1. data: scikit-learn's digits as WebDataset shards (`hfvision.data.build_digits`, 1000 train / 300 valid / 497 test)
   in `--data_dir` (written there when missing), read with `load_image_stream` and the image processor (8x8 gray,
   mean = std = 0.5); the student learns from `--num_student_examples` train images chosen with `--seed`, starting
   from PyTorch's default layer init (`--student_init torch`; `vit`: ViT's normal init, `--student_init_range`);
2. teacher: `--teacher_name_or_path`, or fitted here (AdamW `--teacher_lr`, `--teacher_epochs`, clip 5) and saved to
   `output_dir/teacher` (a resumed run reuses it);
3. SMaT (`hfvision.models.scaffold.SmatTrainer`): per batch a student SGD step on teacher labels +
   beta * KL(teacher explanation || student explanation), and a meta step of the teacher explainer through the
   differentiable one-step lookahead (`--teacher_explainer smat`; `static`, `last_layer`, `grad_norm`,
   `grad_x_input`, `integrated_gradients` are the paper's fixed baselines, `none` trains without explanations);
4. per epoch: validation simulability (`simulability` metric); the best epoch's student and teacher explainer are
   kept (the paper's model selection); a checkpoint every `--checkpoint_epochs` epochs (models as safetensors,
   optimiser, RNG and generator states), resumed exactly with `--resume_from_checkpoint latest`;
5. baselines (`--baselines none,static`): the same student, data and seed without explanations / with the static
   explainer, for the numbers beside SMaT's;
6. at the end, `output_dir/final`: `teacher/` (model, processor, the `image-explanation` pipeline code),
   `teacher_explainer/` (with the same processor), `student/`, model cards, and `eval_results.json`.

SMaT itself is a single-process algorithm on a small student set: under several processes each rank runs the same
seeded computation and the main process writes the files.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import pipeline

import hfvision  # noqa: F401  (registers the Scaffold ViT, the explainer and the pipeline)
from hfvision.data import build_digits, load_image_stream
from hfvision.hub.card import write_model_card
from hfvision.metrics import load_metric
from hfvision.models.scaffold import (
    AttentionExplainer,
    AttentionExplainerConfig,
    GradientExplainer,
    ScaffoldVitConfig,
    ScaffoldVitForImageClassification,
    ScaffoldVitImageProcessor,
    SmatConfig,
    SmatTrainer,
    predict_logits,
    reset_layer_init_,
)
from hfvision.training import parse_args

EXPLAINERS = ("smat", "static", "last_layer", "grad_norm", "grad_x_input", "integrated_gradients", "none")
DIGIT_NAMES = [str(digit) for digit in range(10)]


@dataclass
class ScaffoldArguments:
    """Flags of the SMaT run (defaults: the digest's CPU recipe on digits)."""

    output_dir: str = field(metadata={"help": "Checkpoints, the teacher and the final models go here."})
    data_dir: str | None = field(default=None, metadata={"help": "Digits shards (default: output_dir/digits_data)."})
    teacher_name_or_path: str | None = field(default=None, metadata={"help": "A trained teacher (else fit here)."})
    model_preset: str = field(default="scaffold-vit-digits", metadata={"help": "ScaffoldVitConfig preset."})
    teacher_epochs: int = field(default=40, metadata={"help": "Teacher training epochs (AdamW)."})
    teacher_lr: float = field(default=1e-3, metadata={"help": "Teacher AdamW learning rate."})
    teacher_batch_size: int = field(default=32, metadata={"help": "Teacher batch size."})
    teacher_explainer: str = field(default="smat", metadata={"help": f"One of {EXPLAINERS}."})
    num_student_examples: int = field(default=100, metadata={"help": "Train images the student learns from."})
    student_epochs: int = field(default=60, metadata={"help": "Student epochs (best validation epoch kept)."})
    student_batch_size: int = field(default=16, metadata={"help": "Student (and meta validation) batch size."})
    student_lr: float = field(default=0.05, metadata={"help": "Student SGD learning rate."})
    student_init: str = field(
        default="torch",
        metadata={
            "help": "Fresh student init: 'torch' (PyTorch's default layer init) or 'vit' (normal, student_init_range)."
        },
    )
    student_init_range: float = field(
        default=0.1, metadata={"help": "Std of ViT's normal init of the student (all of it with student_init 'vit')."}
    )
    explanation_coeff: float | None = field(
        default=None, metadata={"help": "beta (default: 5 for attention, 0.2 for gradient explainers, 0 for none)."}
    )
    meta_lr: float = field(default=2e-3, metadata={"help": "Adam learning rate of the teacher explainer."})
    baselines: str = field(default="none,static", metadata={"help": "Comma-separated baseline explainers ('' none)."})
    seed: int = field(default=0, metadata={"help": "Student subset, init, shuffling."})
    checkpoint_epochs: int = field(default=10, metadata={"help": "Save a resumable checkpoint every N epochs."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint folder."})
    stop_after_epoch: int | None = field(default=None, metadata={"help": "Stop (as if interrupted) after epoch N."})

    def __post_init__(self) -> None:
        if self.student_init not in ("torch", "vit"):
            raise ValueError(f"`student_init` must be 'torch' or 'vit', got {self.student_init!r}.")
        if self.teacher_explainer not in EXPLAINERS:
            raise ValueError(f"`teacher_explainer` must be one of {EXPLAINERS}, got {self.teacher_explainer!r}.")
        for name in ("teacher_epochs", "num_student_examples", "student_epochs", "student_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        unknown = [name for name in self.baseline_list if name not in EXPLAINERS]
        if unknown:
            raise ValueError(f"`baselines` holds unknown explainers {unknown}; expected names from {EXPLAINERS}.")

    @property
    def baseline_list(self) -> list[str]:
        return [name.strip() for name in self.baselines.split(",") if name.strip()]


def image_processor(config: ScaffoldVitConfig) -> ScaffoldVitImageProcessor:
    return ScaffoldVitImageProcessor(
        size={"height": config.image_size, "width": config.image_size}, num_channels=config.num_channels
    )


def load_split(data_dir: Path, split: str, processor: ScaffoldVitImageProcessor) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split of the digits shards as `(pixel_values, labels)` (small: read once into memory)."""
    samples = sorted(load_image_stream(data_dir, split=split), key=lambda sample: sample["__key__"])
    pixels = processor([sample["image"] for sample in samples], return_tensors="pt")["pixel_values"]
    return pixels, torch.tensor([sample["label"] for sample in samples])


def fit_teacher(
    args: ScaffoldArguments, accelerator: Accelerator, pixels: torch.Tensor, labels: torch.Tensor
) -> ScaffoldVitForImageClassification:
    """The teacher: AdamW with gradient clipping on the full train split."""
    torch.manual_seed(args.seed)
    config = ScaffoldVitConfig.from_preset(
        args.model_preset,
        id2label=dict(enumerate(DIGIT_NAMES)),
        label2id={name: i for i, name in enumerate(DIGIT_NAMES)},
    )
    teacher = ScaffoldVitForImageClassification(config).to(accelerator.device)
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=args.teacher_lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed)
    teacher.train()
    bar = tqdm(range(args.teacher_epochs), desc="teacher", disable=not accelerator.is_main_process)
    for _ in bar:
        order = torch.randperm(len(pixels), generator=generator)
        for start in range(0, len(order), args.teacher_batch_size):
            chosen = order[start : start + args.teacher_batch_size]
            loss = teacher(pixel_values=pixels[chosen], labels=labels[chosen]).loss
            optimizer.zero_grad()
            accelerator.backward(loss)
            torch.nn.utils.clip_grad_norm_(teacher.parameters(), 5.0)
            optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return teacher.eval()


def build_teacher_explainer(
    name: str, teacher: ScaffoldVitForImageClassification
) -> AttentionExplainer | GradientExplainer:
    config = teacher.config
    if name in ("grad_norm", "grad_x_input", "integrated_gradients"):
        return GradientExplainer(name, patch_grid=config.patch_grid)
    overrides = {"layer_idx": config.num_hidden_layers - 1} if name == "last_layer" else {}
    return AttentionExplainer(AttentionExplainerConfig.for_model(config, **overrides)).to(teacher.device)


def default_beta(name: str) -> float:
    """The paper's beta: 5 for attention explainers, 0.2 for gradient ones, 0 without explanations."""
    return {"none": 0.0, "grad_norm": 0.2, "grad_x_input": 0.2, "integrated_gradients": 0.2}.get(name, 5.0)


class StudentRun:
    """One student taught with one teacher explainer: the trainer, its data, best-epoch tracking and checkpoints."""

    def __init__(
        self,
        args: ScaffoldArguments,
        name: str,
        teacher: ScaffoldVitForImageClassification,
        data: dict[str, Any],
        device: torch.device,
    ):
        self.args, self.name, self.data = args, name, data
        torch.manual_seed(1000 + args.seed)  # the same student init in every condition
        student_config = copy.deepcopy(teacher.config)
        student_config.initializer_range = args.student_init_range
        self.student = ScaffoldVitForImageClassification(student_config)
        if args.student_init == "torch":
            reset_layer_init_(self.student)
        self.student = self.student.to(device)
        self.student_explainer = AttentionExplainer(AttentionExplainerConfig.for_model(student_config)).to(device)
        self.teacher_explainer = build_teacher_explainer(name, teacher)
        beta = args.explanation_coeff if args.explanation_coeff is not None and name != "none" else default_beta(name)
        config = SmatConfig(
            explanation_coeff=beta,
            student_lr=args.student_lr,
            student_weight_decay=0.01,
            grad_clip=5.0,
            meta_lr=args.meta_lr,
            meta_learn=name == "smat",
        )
        self.trainer = SmatTrainer(teacher, self.teacher_explainer, self.student, self.student_explainer, config)
        self.generator = torch.Generator().manual_seed(2000 + args.seed)
        self.epoch = 0
        self.best = {"valid_simulability": -1.0, "epoch": -1}
        self.history: list[dict[str, float]] = []

    def run_epoch(self, metric: Any, show_progress: bool) -> dict[str, float]:
        bar = tqdm(
            total=-(-len(self.data["student_train"]) // self.args.student_batch_size),
            desc=f"{self.name} epoch {self.epoch + 1}",
            leave=False,
            disable=not show_progress,
        )
        logs = self.trainer.train_epoch(
            self.data["student_train"],
            self.data["valid"],
            self.args.student_batch_size,
            self.generator,
            progress=lambda step: (bar.update(1), bar.set_postfix(loss=f"{step['loss']:.3f}")),
        )
        bar.close()
        predictions = predict_logits(self.student, self.data["valid"]).argmax(-1)
        valid = metric.compute(predictions=predictions, references=self.data["teacher_valid"])["simulability"]
        self.epoch += 1
        record = {"epoch": self.epoch, "valid_simulability": valid, **logs}
        self.history.append(record)
        if valid > self.best["valid_simulability"]:
            test_predictions = predict_logits(self.student, self.data["test"]).argmax(-1)
            test = metric.compute(predictions=test_predictions, references=self.data["teacher_test"])["simulability"]
            self.best = {"valid_simulability": valid, "test_simulability": test, "epoch": self.epoch}
            self.best_state = {
                "student": {k: v.detach().clone() for k, v in self.student.state_dict().items()},
                "teacher_explainer": {k: v.detach().clone() for k, v in self.teacher_explainer.state_dict().items()},
            }
        return record

    def save_checkpoint(self, folder: Path) -> None:
        """Models as safetensors; optimisers, step, RNG and generator states, best-epoch record as torch/json files."""
        folder.mkdir(parents=True, exist_ok=True)
        self.student.save_pretrained(folder / "student")
        self.student_explainer.save_pretrained(folder / "student_explainer")
        if isinstance(self.teacher_explainer, AttentionExplainer):
            self.teacher_explainer.save_pretrained(folder / "teacher_explainer")
        best_state = getattr(self, "best_state", None)
        torch.save(
            {
                "trainer": self.trainer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "generator": self.generator.get_state(),
                "best_state": best_state,
            },
            folder / "trainer_state.pt",
        )
        (folder / "progress.json").write_text(
            json.dumps({"epoch": self.epoch, "best": self.best, "history": self.history}, indent=2)
        )

    def load_checkpoint(self, folder: Path) -> None:
        self.student.load_state_dict(ScaffoldVitForImageClassification.from_pretrained(folder / "student").state_dict())
        self.student_explainer.load_state_dict(
            AttentionExplainer.from_pretrained(folder / "student_explainer").state_dict()
        )
        if isinstance(self.teacher_explainer, AttentionExplainer):
            self.teacher_explainer.load_state_dict(
                AttentionExplainer.from_pretrained(folder / "teacher_explainer").state_dict()
            )
        state = torch.load(folder / "trainer_state.pt", weights_only=False)  # our own file: optimiser + RNG states
        self.trainer.load_state_dict(state["trainer"])
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["generator"])
        if state["best_state"] is not None:
            self.best_state = state["best_state"]
        progress = json.loads((folder / "progress.json").read_text())
        self.epoch, self.best, self.history = progress["epoch"], progress["best"], progress["history"]


def latest_checkpoint(output_dir: Path) -> Path | None:
    checkpoints = sorted(output_dir.glob("checkpoints/epoch-*"), key=lambda path: int(path.name.split("-")[1]))
    return checkpoints[-1] if checkpoints else None


def prepare_data(args: ScaffoldArguments, accelerator: Accelerator, output_dir: Path, processor: Any) -> dict:
    data_dir = Path(args.data_dir) if args.data_dir else output_dir / "digits_data"
    if accelerator.is_main_process and not (data_dir / "test").is_dir():
        build_digits(data_dir, num_shards=2)
    accelerator.wait_for_everyone()
    splits = {split: load_split(data_dir, split, processor) for split in ("train", "valid", "test")}
    device = accelerator.device
    return {split: (pixels.to(device), labels.to(device)) for split, (pixels, labels) in splits.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    (args,) = parse_args([ScaffoldArguments], argv)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    preset = ScaffoldVitConfig.from_preset(args.model_preset)
    processor = image_processor(preset)
    splits = prepare_data(args, accelerator, output_dir, processor)
    metric = load_metric("simulability")

    # 1. the teacher
    teacher_dir = output_dir / "teacher"
    if args.teacher_name_or_path:
        teacher = ScaffoldVitForImageClassification.from_pretrained(args.teacher_name_or_path).to(accelerator.device)
    elif (teacher_dir / "model.safetensors").exists():
        teacher = ScaffoldVitForImageClassification.from_pretrained(teacher_dir).to(accelerator.device)
    else:
        teacher = fit_teacher(args, accelerator, *splits["train"])
        if accelerator.is_main_process:
            teacher.save_pretrained(teacher_dir)
            processor.save_pretrained(teacher_dir)
    teacher.eval()
    teacher_accuracy = float(
        (predict_logits(teacher, splits["test"][0]).argmax(-1) == splits["test"][1]).float().mean()
    )
    accelerator.print(f"teacher test accuracy: {teacher_accuracy:.4f}")
    subset = torch.randperm(len(splits["train"][0]), generator=torch.Generator().manual_seed(args.seed))
    data = {
        "student_train": splits["train"][0][subset[: args.num_student_examples].to(splits["train"][0].device)],
        "valid": splits["valid"][0],
        "test": splits["test"][0],
        "teacher_valid": predict_logits(teacher, splits["valid"][0]).argmax(-1),
        "teacher_test": predict_logits(teacher, splits["test"][0]).argmax(-1),
    }

    # 2. SMaT (or the chosen fixed explainer), resumable
    run = StudentRun(args, args.teacher_explainer, teacher, data, accelerator.device)
    resume = latest_checkpoint(output_dir) if args.resume_from_checkpoint == "latest" else args.resume_from_checkpoint
    if resume:
        run.load_checkpoint(Path(resume))
        accelerator.print(f"resumed from {resume} (epoch {run.epoch})")
    epochs = tqdm(
        range(run.epoch, args.student_epochs), desc=args.teacher_explainer, disable=not accelerator.is_main_process
    )
    for _ in epochs:
        record = run.run_epoch(metric, accelerator.is_main_process)
        epochs.set_postfix(valid_simulability=f"{record['valid_simulability']:.3f}")
        if accelerator.is_main_process and (
            run.epoch % args.checkpoint_epochs == 0 or run.epoch == args.stop_after_epoch
        ):
            run.save_checkpoint(output_dir / "checkpoints" / f"epoch-{run.epoch}")
        if args.stop_after_epoch is not None and run.epoch >= args.stop_after_epoch:
            accelerator.print(f"stopped after epoch {run.epoch}")
            return {"stopped_after_epoch": run.epoch}

    # 3. baselines: the same student without explanations / with a fixed explainer
    results = {
        "teacher_test_accuracy": teacher_accuracy,
        args.teacher_explainer: run.best,
        "history": run.history,
    }
    for name in args.baseline_list:
        if name == args.teacher_explainer:
            continue
        baseline = StudentRun(args, name, teacher, data, accelerator.device)
        for _ in tqdm(range(args.student_epochs), desc=name, disable=not accelerator.is_main_process):
            baseline.run_epoch(metric, show_progress=False)
        results[name] = baseline.best

    # 4. the final folder: teacher (+ pipeline code), teacher explainer and student at the best epoch, cards
    if accelerator.is_main_process:
        save_final(args, output_dir / "final", teacher, processor, run, results)
    accelerator.wait_for_everyone()
    return results


def save_final(
    args: ScaffoldArguments,
    final_dir: Path,
    teacher: ScaffoldVitForImageClassification,
    processor: ScaffoldVitImageProcessor,
    run: StudentRun,
    results: dict[str, Any],
) -> None:
    if final_dir.exists():
        shutil.rmtree(final_dir)
    run.student.load_state_dict(run.best_state["student"])
    run.teacher_explainer.load_state_dict(run.best_state["teacher_explainer"])
    pipeline("image-explanation", model=teacher, image_processor=processor).save_pretrained(final_dir / "teacher")
    run.student.save_pretrained(final_dir / "student")
    processor.save_pretrained(final_dir / "student")
    head_weights = None
    if isinstance(run.teacher_explainer, AttentionExplainer):
        run.teacher_explainer.save_pretrained(final_dir / "teacher_explainer")
        # the processor of the explained ViT travels with the explainer: its repo then opens by id as any checkpoint
        processor.save_pretrained(final_dir / "teacher_explainer")
        weights = run.teacher_explainer.head_weights().detach().cpu().double().numpy()
        head_weights = np.round(weights.reshape(-1, teacher.config.num_attention_heads), 3).tolist()
        results["teacher_head_weights"] = head_weights
    # the run's arguments travel with the results: the cards (and `hfvision card`) read them from eval_results.json
    results["config"] = {key: value for key, value in asdict(args).items() if key != "resume_from_checkpoint"}
    (final_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
    contents = {
        "teacher": None,  # the template's default: the classifier, its processor and the pipeline
        "teacher_explainer": "the teacher's meta-learned attention explainer: one head-coefficient vector",
        "student": "a student ViT trained to simulate the teacher (no pipeline code)",
    }
    for folder, repo_contents in contents.items():
        if (final_dir / folder).is_dir():
            write_model_card(
                final_dir / folder, model_id=f"local/{final_dir.parent.name}-{folder}", repo_contents=repo_contents
            )


if __name__ == "__main__":
    main()
