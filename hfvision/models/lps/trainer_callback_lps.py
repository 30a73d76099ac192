"""Gumbel-softmax temperature annealing for LPS training, as a `transformers.TrainerCallback`.

The LPD layers of Learnable Polyphase Sampling (arXiv 2210.08001) sample their phase from GumbelSoftmax(logits / tau)
in training and take the argmax in evaluation; annealing tau towards 0 during training makes the training-time samples
approach the evaluation-time one-hot choice. The official training code (learnable_polyphase_sampling,
`models/paramscheduler.py`, `StepDecay`, with the configs `tau_stepdecay_limit.json` for CIFAR-10 and
`tau_imagenet_stepdecay_limit.json` for ImageNet) starts every LPD's `gumbel_tau` buffer at 1 and, at the end of
every 10th epoch, multiplies it by gamma (0.85 on CIFAR-10, 0.825 on ImageNet), never going below 0.025.

Here the same schedule is a closed-form function of the optimizer step,

    tau(step) = max(tau_0 * gamma ** (step // decay_steps), tau_min),

applied before every optimizer step with `step` = the number of completed steps (`TrainerState.global_step`). With
`decay_steps` = 10 epochs of optimizer steps it equals the official per-epoch recurrence (the `k`-th decay lands after
`10 k` completed epochs). Because the temperature depends on the global step only, a run resumed from a checkpoint
gets exactly the temperatures the uninterrupted run would have had; the callback keeps no counter.

The file imports only torch and transformers and ships with every LPS checkpoint (`LpsResNetPreTrainedModel.
save_pretrained` writes it beside the model's code), so someone fine-tuning a published checkpoint with plain
`Trainer`, without hfvision, takes the callback from the checkpoint:
`get_class_from_dynamic_module("trainer_callback_lps.GumbelTemperatureCallback", repo_id)`
(`transformers.dynamic_module_utils`).

Not implemented: the official piecewise-linear schedule of the segmentation runs (`tau_segm_multistep*.json`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

logger = logging.getLogger(__name__)

# Name of the temperature buffer of every LPS layer (`LearnablePolyphaseDownsample.gumbel_tau`). The callback finds
# the layers by this name, as the official scheduler does, so it also anneals models loaded as remote code, whose
# classes are not hfvision's.
GUMBEL_TAU_BUFFER = "gumbel_tau"


def gumbel_tau_at_step(step: int, initial_tau: float, decay: float, decay_steps: int, min_tau: float) -> float:
    """The annealed temperature before optimizer step `step` (0-based, i.e. after `step` completed steps).

    Args:
        step: completed optimizer steps.
        initial_tau: temperature of the first `decay_steps` steps.
        decay: factor applied every `decay_steps` steps (gamma).
        decay_steps: optimizer steps between two decays.
        min_tau: floor of the temperature.

    Returns:
        `max(initial_tau * decay ** (step // decay_steps), min_tau)`.
    """
    if step < 0:
        raise ValueError(f"`step` must be >= 0, got {step}.")
    return max(initial_tau * decay ** (step // decay_steps), min_tau)


def gumbel_tau_buffers(model: nn.Module) -> list[torch.Tensor]:
    """Every `gumbel_tau` buffer of `model` (one per LPS layer); empty for models without LPS layers."""
    return [buffer for name, buffer in model.named_buffers() if name.rsplit(".", 1)[-1] == GUMBEL_TAU_BUFFER]


class GumbelTemperatureCallback(TrainerCallback, ExportableState):
    """Anneals the Gumbel-softmax temperature of every LPS layer with the official step decay.

    tau(step) = max(tau_0 * decay ** (step // decay_steps), min_tau), written into every `gumbel_tau` buffer before
    each optimizer step. The defaults are the official CIFAR-10 schedule (0.85 every 10 epochs, floor 0.025); for a
    short run, give `decay_steps` (or a fractional `decay_epochs`) so the temperature still falls during training.

    Args:
        decay: factor applied at every decay (gamma).
        decay_epochs: epochs between two decays, converted to optimizer steps from the training dataloader's length
            when training starts; ignored when `decay_steps` is given.
        decay_steps: optimizer steps between two decays.
        min_tau: floor of the temperature.
        initial_tau: starting temperature; `None` takes the model's `config.gumbel_tau` (not the buffer, which holds
            an annealed value once training has run).
    """

    def __init__(
        self,
        decay: float = 0.85,
        decay_epochs: float = 10.0,
        decay_steps: int | None = None,
        min_tau: float = 0.025,
        initial_tau: float | None = None,
    ):
        if not 0 < decay <= 1:
            raise ValueError(f"`decay` must be in (0, 1], got {decay}.")
        if decay_epochs <= 0:
            raise ValueError(f"`decay_epochs` must be > 0, got {decay_epochs}.")
        if decay_steps is not None and decay_steps < 1:
            raise ValueError(f"`decay_steps` must be >= 1, got {decay_steps}.")
        if min_tau <= 0:
            raise ValueError(f"`min_tau` must be > 0, got {min_tau}.")
        if initial_tau is not None and initial_tau <= 0:
            raise ValueError(f"`initial_tau` must be > 0, got {initial_tau}.")
        self.decay = decay
        self.decay_epochs = decay_epochs
        self.decay_steps = decay_steps
        self.min_tau = min_tau
        self.initial_tau = initial_tau

    def tau_at(self, step: int) -> float:
        """The temperature before optimizer step `step`; needs `decay_steps` and `initial_tau` resolved."""
        if self.decay_steps is None or self.initial_tau is None:
            raise ValueError("the schedule is resolved when training starts: set `decay_steps` and `initial_tau`.")
        return gumbel_tau_at_step(step, self.initial_tau, self.decay, self.decay_steps, self.min_tau)

    def _resolve(self, args: TrainingArguments, model: nn.Module, train_dataloader: Any) -> None:
        """Fill `initial_tau` from the model's config and `decay_steps` from `decay_epochs`, once."""
        if self.initial_tau is None:
            self.initial_tau = getattr(model.config, "gumbel_tau", None)
            if self.initial_tau is None:
                raise ValueError(f"{type(model).__name__}'s config has no `gumbel_tau`: pass `initial_tau`.")
        if self.decay_steps is None:
            try:
                batches = len(train_dataloader)
            except TypeError as error:
                raise ValueError(
                    "the training data has no length, so `decay_epochs` cannot become steps: pass `decay_steps`."
                ) from error
            # Trainer's count of optimizer steps per epoch (a partial accumulation at the end still steps)
            steps_per_epoch = max(math.ceil(batches / args.gradient_accumulation_steps), 1)
            self.decay_steps = max(round(self.decay_epochs * steps_per_epoch), 1)
        logger.info(
            "Gumbel temperature: %g, x%g every %d optimizer steps, floor %g.",
            self.initial_tau,
            self.decay,
            self.decay_steps,
            self.min_tau,
        )

    @torch.no_grad()
    def _apply(self, model: nn.Module, step: int) -> None:
        tau = self.tau_at(step)
        for buffer in gumbel_tau_buffers(model):
            buffer.fill_(tau)

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        train_dataloader: Any = None,
        **kwargs: Any,
    ) -> None:
        if model is None or not gumbel_tau_buffers(model):
            raise ValueError("GumbelTemperatureCallback needs a model with LPS layers (`gumbel_tau` buffers).")
        self._resolve(args, model, train_dataloader)
        self._apply(model, state.global_step)  # a resumed run starts from the step it stopped at

    def on_step_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        self._apply(model, state.global_step)

    def state(self) -> dict[str, Any]:
        """The resolved schedule, saved in every checkpoint's `trainer_state.json` (`stateful_callbacks`)."""
        return {
            "args": {
                "decay": self.decay,
                "decay_epochs": self.decay_epochs,
                "decay_steps": self.decay_steps,
                "min_tau": self.min_tau,
                "initial_tau": self.initial_tau,
            },
            "attributes": {},
        }


__all__ = [
    "GUMBEL_TAU_BUFFER",
    "GumbelTemperatureCallback",
    "gumbel_tau_at_step",
    "gumbel_tau_buffers",
]
