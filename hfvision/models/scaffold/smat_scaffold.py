"""SMaT (Scaffold-Maximizing Training): a student learns from a frozen teacher's labels and explanations while the
teacher's explainer is meta-learned so that the student simulates the teacher better (paper Sec. 3, Algorithm 1).

Per student step, on a train batch B and a validation batch V (no explanations on V):
1. student step: `(theta, phi_S) <- U(grad L_in)`, `L_in = CE(S(x), y_T) + beta * KL(e_T(x; phi_T) || e_S(x; phi_S))`
   with the student's own update rule `U`: global-norm clip, SGD with weight decay (`theta - lr (clip(g) + wd theta)`);
2. meta step (every `meta_interval` steps): the same rule applied once more, differentiably
   (`torch.func.functional_call` with `create_graph=True`), gives `theta'(phi_T)`;
   `phi_T <- Adam(clip(grad_phi_T CE(S_theta'(x_V), y_T(x_V))))`.
   The lookahead parameters are discarded. It runs inside `torch.random.fork_rng`, so it never moves the student's
   random stream: with `meta_lr=0` the student's trajectory is bit-for-bit the static-explainer run.

Faithful to the official `smat/train.py`: teacher targets are argmax labels; the lookahead re-uses the just-used train
batch in train mode and evaluates V in eval mode; the meta optimiser is Adam with gradient clipping (no warm-up).
Not included (the official code flags both as unused in the paper): implicit differentiation and student resets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .modeling_scaffold import AttentionExplainer, GradientExplainer, explanation_kl


@dataclass
class SmatConfig:
    """Hyper-parameters of SMaT (defaults: the paper's CIFAR-100 recipe).

    Args:
        explanation_coeff: beta, the weight of the explanation loss (paper: 5 for attention, 0.2 for gradient
            baselines; 0 trains without explanations).
        student_lr: SGD learning rate of the student and its explainer (paper: 5e-3).
        student_weight_decay: weight decay added to the clipped gradient (paper: 0.01).
        grad_clip: global gradient-norm clip of the student step (paper: 5).
        meta_lr: Adam learning rate of the teacher explainer (paper: 5e-4). With 0 the meta steps still run and
            leave the explainer unchanged: the run equals the static one (`meta_learn=False`) bit for bit.
        meta_grad_clip: global-norm clip of the meta-gradient (paper: 5).
        meta_interval: student steps per meta step (paper: 1).
        meta_learn: meta-learn the teacher explainer (SMaT); `False` keeps it static (the paper's baselines).
    """

    explanation_coeff: float = 5.0
    student_lr: float = 5e-3
    student_weight_decay: float = 0.01
    grad_clip: float = 5.0
    meta_lr: float = 5e-4
    meta_grad_clip: float = 5.0
    meta_interval: int = 1
    meta_learn: bool = True

    def __post_init__(self) -> None:
        for name in ("explanation_coeff", "student_weight_decay", "meta_lr"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        for name in ("student_lr", "grad_clip", "meta_grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)}.")
        if self.meta_interval < 1:
            raise ValueError(f"`meta_interval` must be >= 1, got {self.meta_interval}.")


def clipped_update(
    params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lr: float, weight_decay: float, max_norm: float
) -> dict[str, torch.Tensor]:
    """One step of the student's update rule, differentiable in `grads` and `params`.

    `theta - lr * (clip(g) + weight_decay * theta)` with optax's `clip_by_global_norm` (`g * max_norm / norm` when
    `norm > max_norm`), the same arithmetic as `clip_grad_norm_` + `torch.optim.SGD(weight_decay=...)`.
    """
    norm = torch.sqrt(sum((grad**2).sum() for grad in grads.values()))
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)  # clip_grad_norm_'s factor
    return {name: param - lr * (grads[name] * scale + weight_decay * param) for name, param in params.items()}


def simulability(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Fraction of inputs on which the student predicts the teacher's class (argmax agreement)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"`student_logits` {tuple(student_logits.shape)} and `teacher_logits` {tuple(teacher_logits.shape)} must "
            "have the same shape."
        )
    return (student_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean().item()


@torch.no_grad()
def reset_layer_init_(model: nn.Module) -> nn.Module:
    """Re-initialise every `nn.Linear` / `nn.Conv2d` of `model` with PyTorch's default (kaiming-uniform, fan-in) init.

    A fresh student for SMaT from scratch: on the digits, ViT's normal(0, 0.02) init leaves a plain-SGD student unable
    to learn from 100 labels with or without explanations, and std 0.1 lets it learn from the labels alone; PyTorch's
    default layer init gives the regime of the digest's prototype, where the explanations do the teaching. The CLS
    token, position embeddings and LayerNorms keep the model's own init. Draws from torch's global random stream.

    Returns:
        `model`, re-initialised in place.
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.reset_parameters()
    return model


@torch.no_grad()
def predict_logits(model: nn.Module, pixel_values: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """`(N, num_labels)` eval-mode logits of `model` on `(N, C, H, W)` images, in batches."""
    was_training = model.training
    model.eval()
    logits = torch.cat([model(pixel_values=chunk).logits for chunk in pixel_values.split(batch_size)])
    model.train(was_training)
    return logits


class SmatTrainer:
    """Train a student on a frozen teacher's labels and explanations, meta-learning the teacher's explainer.

    Args:
        teacher: a frozen classifier returning `logits` and, with `output_attention_scores=True`, `attention_scores`
            (a [`ScaffoldVitForImageClassification`]).
        teacher_explainer: an [`AttentionExplainer`] (meta-learned when `config.meta_learn`) or a static
            [`GradientExplainer`].
        student: the classifier being taught (same interface as the teacher).
        student_explainer: the student's [`AttentionExplainer`], trained jointly with the student.
        config: [`SmatConfig`].
        teacher_scores_transform: optional function applied to the teacher's attention scores (a tuple of
            `(B, H, T, T)`) before the explainer sees them, e.g. to append distractor heads. It must not draw from
            torch's global random stream (use a `torch.Generator`).

    `train_step(train_pixels, valid_pixels)` does one student step and, on meta steps, one explainer step;
    `state_dict()` / `load_state_dict()` hold both optimisers and the step count for resumable training.
    """

    def __init__(
        self,
        teacher: nn.Module,
        teacher_explainer: AttentionExplainer | GradientExplainer,
        student: nn.Module,
        student_explainer: AttentionExplainer,
        config: SmatConfig | None = None,
        teacher_scores_transform: Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]] | None = None,
    ):
        if not isinstance(teacher_explainer, (AttentionExplainer, GradientExplainer)):
            raise TypeError(
                f"`teacher_explainer` must be an AttentionExplainer or a GradientExplainer, got "
                f"{type(teacher_explainer).__name__}."
            )
        if not isinstance(student_explainer, AttentionExplainer):
            raise TypeError(
                f"`student_explainer` must be an AttentionExplainer, got {type(student_explainer).__name__}."
            )
        self.config = config if config is not None else SmatConfig()
        self.teacher = teacher.eval().requires_grad_(False)
        self.teacher_explainer = teacher_explainer
        # The lookahead differentiates twice through the student's attention; PyTorch's fused SDPA kernels have no
        # double backward, so the student runs eager attention (same values up to rounding, see the eager/SDPA test),
        # in static runs too, so that static and meta-learned runs share their arithmetic.
        if hasattr(student, "set_attn_implementation"):
            student.set_attn_implementation("eager")
        self.student = student
        self.student_explainer = student_explainer
        self.teacher_scores_transform = teacher_scores_transform
        self.meta_learned = self.meta_learned_for(teacher_explainer, self.config)
        self.uses_attention = isinstance(teacher_explainer, AttentionExplainer)
        if not self.meta_learned:
            teacher_explainer.requires_grad_(False)
        student_parameters = [*student.parameters(), *student_explainer.parameters()]
        self.student_optimizer = torch.optim.SGD(
            student_parameters, lr=self.config.student_lr, weight_decay=self.config.student_weight_decay
        )
        self.meta_optimizer = (
            torch.optim.Adam(teacher_explainer.parameters(), lr=self.config.meta_lr) if self.meta_learned else None
        )
        self.step = 0

    @staticmethod
    def meta_learned_for(teacher_explainer: nn.Module, config: SmatConfig) -> bool:
        """Whether the teacher explainer gets meta steps: an attention explainer, `meta_learn`, and beta > 0."""
        return isinstance(teacher_explainer, AttentionExplainer) and config.meta_learn and config.explanation_coeff > 0

    # --- teacher side ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_outputs(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Teacher labels `(B,)` and (for attention explainers) its, possibly transformed, attention scores."""
        outputs = self.teacher(pixel_values=pixel_values, output_attention_scores=self.uses_attention)
        scores = None
        if self.uses_attention:
            scores = tuple(outputs.attention_scores)
            if self.teacher_scores_transform is not None:
                scores = tuple(self.teacher_scores_transform(scores))
        return outputs.logits.argmax(-1), scores

    def teacher_explanation(self, pixel_values: torch.Tensor, scores: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        """`(B, T)` teacher explanations; differentiable in the explainer's coefficients when meta-learned."""
        if self.uses_attention:
            with torch.set_grad_enabled(self.meta_learned and torch.is_grad_enabled()):
                return self.teacher_explainer(scores).explanation
        return self.teacher_explainer.explain(self.teacher, pixel_values).explanation

    # --- student side ---------------------------------------------------------------------------------------------
    def _inner_loss(
        self,
        student_params: dict[str, torch.Tensor] | None,
        explainer_params: dict[str, torch.Tensor] | None,
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        teacher_explanation: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`L_in = CE(S(x), y_T) + beta * KL(e_T || e_S)`; parameters swapped in with `functional_call` if given."""
        use_explanations = self.config.explanation_coeff > 0
        kwargs = {"pixel_values": pixel_values, "output_attention_scores": use_explanations}
        outputs = (
            self.student(**kwargs)
            if student_params is None
            else functional_call(self.student, student_params, (), kwargs)
        )
        main_loss = F.cross_entropy(outputs.logits, labels)
        if not use_explanations:
            return main_loss, main_loss, main_loss.new_zeros(())
        scores = (tuple(outputs.attention_scores),)
        student_explanation = (
            self.student_explainer(*scores)
            if explainer_params is None
            else functional_call(self.student_explainer, explainer_params, scores)
        ).explanation
        explanation_loss = explanation_kl(teacher_explanation, student_explanation)
        return main_loss + self.config.explanation_coeff * explanation_loss, main_loss, explanation_loss

    def lookahead_loss(
        self,
        train_pixels: torch.Tensor,
        train_labels: torch.Tensor,
        teacher_scores: tuple[torch.Tensor, ...] | None,
        valid_pixels: torch.Tensor,
        valid_labels: torch.Tensor,
    ) -> torch.Tensor:
        """`L_out(theta'(phi_T))`: validation CE of the student after one differentiable step of its update rule.

        Differentiable with respect to the teacher explainer's coefficients; draws from no random stream the caller
        sees (the student's dropout in the lookahead runs inside `torch.random.fork_rng`).
        """
        devices = [train_pixels.device] if train_pixels.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=train_pixels.device.type):
            teacher_explanation = self.teacher_explanation(train_pixels, teacher_scores)
            student_params = dict(self.student.named_parameters())
            explainer_params = dict(self.student_explainer.named_parameters())
            all_params = {
                **{f"s.{k}": v for k, v in student_params.items()},
                **{f"e.{k}": v for k, v in explainer_params.items()},
            }
            was_training = self.student.training
            self.student.train()
            inner_loss, _, _ = self._inner_loss(None, None, train_pixels, train_labels, teacher_explanation)
            grads = torch.autograd.grad(inner_loss, list(all_params.values()), create_graph=True, allow_unused=True)
            grads = {
                name: grad if grad is not None else torch.zeros_like(param)
                for (name, param), grad in zip(all_params.items(), grads, strict=True)
            }
            updated = clipped_update(
                all_params, grads, self.config.student_lr, self.config.student_weight_decay, self.config.grad_clip
            )
            self.student.eval()  # the validation loss is deterministic, as the official `valid_loss_fn`
            new_student = {name[2:]: value for name, value in updated.items() if name.startswith("s.")}
            logits = functional_call(self.student, new_student, (), {"pixel_values": valid_pixels}).logits
            self.student.train(was_training)
            return F.cross_entropy(logits, valid_labels)

    def train_step(self, train_pixels: torch.Tensor, valid_pixels: torch.Tensor | None = None) -> dict[str, float]:
        """One student step on `train_pixels` and, every `meta_interval` steps, one meta step using `valid_pixels`.

        Args:
            train_pixels: `(B, C, H, W)` the student's training batch (labels and explanations from the teacher).
            valid_pixels: `(B', C, H, W)` a validation batch (no explanations); required on meta steps.

        Returns:
            Floats: `loss`, `main_loss`, `explanation_loss` and, on meta steps, `meta_loss` (the lookahead's
            validation loss before the explainer update).
        """
        train_labels, teacher_scores = self.teacher_outputs(train_pixels)
        # 1. student step (the teacher explainer held fixed)
        self.student.train()
        with torch.no_grad():
            teacher_explanation = self.teacher_explanation(train_pixels, teacher_scores)
        self.student_optimizer.zero_grad(set_to_none=True)
        loss, main_loss, explanation_loss = self._inner_loss(
            None, None, train_pixels, train_labels, teacher_explanation
        )
        loss.backward()
        parameters = [*self.student.parameters(), *self.student_explainer.parameters()]
        torch.nn.utils.clip_grad_norm_(parameters, self.config.grad_clip)
        self.student_optimizer.step()
        self.step += 1
        logs = {"loss": loss.item(), "main_loss": main_loss.item(), "explanation_loss": explanation_loss.item()}
        # 2. meta step on the teacher explainer through a one-step lookahead of the student's update
        if self.meta_learned and self.step % self.config.meta_interval == 0:
            if valid_pixels is None:
                raise ValueError("`valid_pixels` is required on meta steps (`meta_learn=True`).")
            valid_labels, _ = self.teacher_outputs(valid_pixels)
            meta_loss = self.lookahead_loss(train_pixels, train_labels, teacher_scores, valid_pixels, valid_labels)
            coefficients = list(self.teacher_explainer.parameters())
            meta_grads = torch.autograd.grad(meta_loss, coefficients)
            for param, grad in zip(coefficients, meta_grads, strict=True):
                param.grad = grad
            torch.nn.utils.clip_grad_norm_(coefficients, self.config.meta_grad_clip)
            self.meta_optimizer.step()
            self.meta_optimizer.zero_grad(set_to_none=True)
            logs["meta_loss"] = meta_loss.item()
        return logs

    def train_epoch(
        self,
        train_pixels: torch.Tensor,
        valid_pixels: torch.Tensor | None,
        batch_size: int = 16,
        generator: torch.Generator | None = None,
        progress: Callable[[dict[str, float]], None] | None = None,
    ) -> dict[str, float]:
        """One pass over `train_pixels` in shuffled batches; meta steps draw validation batches in order, cycling.

        Args:
            train_pixels: `(N, C, H, W)` the student's training images.
            valid_pixels: `(M, C, H, W)` validation images for the meta steps (may be None without meta-learning).
            batch_size: student (and validation) batch size (paper: 16).
            generator: the shuffling generator (kept apart from the global stream the student's dropout uses).
            progress: called with each step's logs (e.g. a progress bar update).

        Returns:
            The mean of each logged value over the epoch.
        """
        order = torch.randperm(len(train_pixels), generator=generator)
        totals: dict[str, float] = {}
        count = 0
        for start in range(0, len(order), batch_size):
            batch = train_pixels[order[start : start + batch_size]]
            valid = None
            if valid_pixels is not None and self.meta_learned:
                offset = (self.step * batch_size) % len(valid_pixels)
                valid = valid_pixels[offset : offset + batch_size]
            logs = self.train_step(batch, valid)
            for key, value in logs.items():
                totals[key] = totals.get(key, 0.0) + value
            count += 1
            if progress is not None:
                progress(logs)
        return {key: value / count for key, value in totals.items()}

    # --- checkpoints ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Optimiser states, step count and config (models are saved separately with `save_pretrained`)."""
        return {
            "step": self.step,
            "config": asdict(self.config),
            "student_optimizer": self.student_optimizer.state_dict(),
            "meta_optimizer": self.meta_optimizer.state_dict() if self.meta_optimizer is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.step = int(state["step"])
        self.student_optimizer.load_state_dict(state["student_optimizer"])
        if self.meta_optimizer is not None and state.get("meta_optimizer") is not None:
            self.meta_optimizer.load_state_dict(state["meta_optimizer"])


__all__ = ["SmatConfig", "SmatTrainer", "clipped_update", "predict_logits", "reset_layer_init_", "simulability"]
