"""The `unconditional-sample-generation` pipeline: a Score-SDE model -> samples (and, for images, a grid picture).

transformers has no task for unconditional generation, so `import hfvision` registers this one with
`PIPELINE_REGISTRY`. The file imports only torch, transformers, PIL and its siblings, so every model's `save_pretrained`
(and the pipeline's) ships it with the checkpoint (`custom_pipelines` in `config.json`) and
`pipeline(model=path, trust_remote_code=True)` runs it without hfvision. The sampling loop is `sample_score_sde`
(diffusers' split: the schedulers step, the loop lives outside the network).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Pipeline

from .scheduling_score_sde import (
    LangevinCorrector,
    ScoreSdeEulerMaruyamaScheduler,
    ScoreSdeHeunOdeScheduler,
    ScoreSdeVeAncestralScheduler,
    sample_score_sde,
)
from .visualization_score_sde import make_image_grid

SAMPLERS = ("ancestral", "euler_maruyama", "pc", "ode")


class ScoreSdeSampleGenerationPipeline(Pipeline):
    """Draw samples from a [`ScoreSdeModel`] or an [`EmpiricalScoreModel`] by solving the reverse SDE (or the
    probability-flow ODE).

    Call with the number of samples (an int >= 1). Keyword arguments:
        sampler: `"ancestral"` (the VE ancestral / SMLD step; default for `ve`), `"euler_maruyama"` (default for `vp`
            and `ou`), `"pc"` (Euler-Maruyama predictor + Langevin corrector) or `"ode"` (Heun on the probability
            flow).
        num_inference_steps: predictor steps (default 1000).
        snr: the corrector's signal-to-noise ratio (default 0.16).
        denoise: end with the Tweedie step x + sigma_min^2 s (default True).
        seed: seed of all randomness (default: a fresh draw).
        sigma_min / horizon: sample with another end noise level or horizon T than the config's (digest B2.1, B2.5).
        value_range: the pixel range of image samples (default (0, 1), NCSN's convention), for the grid.

    With a [`ScoreSdeFeatureExtractor`] (saved beside the model), point samples are mapped back to data coordinates.

    Returns `{"samples": tensor (num_samples, *data_shape)}`, plus `"images"` (one `PIL.Image` grid of all samples) for
    image models.
    """

    _load_image_processor = False
    _load_tokenizer = False
    _load_processor = False
    _load_feature_extractor = None  # optional: loaded when the checkpoint has one

    def _sanitize_parameters(
        self,
        sampler: str | None = None,
        num_inference_steps: int | None = None,
        snr: float | None = None,
        denoise: bool | None = None,
        seed: int | None = None,
        sigma_min: float | None = None,
        horizon: float | None = None,
        value_range: tuple[float, float] | None = None,
    ) -> tuple[dict, dict, dict]:
        if sampler is not None and sampler not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {sampler!r}.")
        if num_inference_steps is not None and (not isinstance(num_inference_steps, int) or num_inference_steps < 2):
            raise ValueError(f"`num_inference_steps` must be an int >= 2, got {num_inference_steps!r}.")
        preprocess = {} if seed is None else {"seed": seed}
        forward = {
            name: value
            for name, value in (
                ("sampler", sampler),
                ("num_inference_steps", num_inference_steps),
                ("snr", snr),
                ("denoise", denoise),
                ("sigma_min", sigma_min),
                ("horizon", horizon),
            )
            if value is not None
        }
        postprocess = {} if value_range is None else {"value_range": tuple(value_range)}
        return preprocess, forward, postprocess

    def preprocess(self, num_samples: int, seed: int | None = None) -> dict[str, Any]:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"The pipeline input must be the number of samples, an int >= 1, got {num_samples!r}.")
        seed = int(torch.randint(0, 2**62, ()).item()) if seed is None else seed
        return {"num_samples": num_samples, "generator": torch.Generator().manual_seed(seed)}

    def _scheduler(self, sampler: str | None, num_inference_steps: int, overrides: dict[str, float]):
        config = self.model.config
        sampler = sampler or ("ancestral" if config.sde == "ve" else "euler_maruyama")
        if sampler == "ancestral":
            return ScoreSdeVeAncestralScheduler.from_config(config, num_inference_steps, **overrides), None
        if sampler == "ode":
            return ScoreSdeHeunOdeScheduler.from_config(config, num_inference_steps, **overrides), None
        scheduler = ScoreSdeEulerMaruyamaScheduler.from_config(config, num_inference_steps, **overrides)
        return scheduler, None if sampler == "euler_maruyama" else "corrector"

    def _forward(
        self,
        model_inputs: dict[str, Any],
        sampler: str | None = None,
        num_inference_steps: int = 1000,
        snr: float = 0.16,
        denoise: bool = True,
        sigma_min: float | None = None,
        horizon: float | None = None,
    ) -> dict[str, torch.Tensor]:
        overrides = {name: value for name, value in (("sigma_min", sigma_min), ("horizon", horizon)) if value}
        scheduler, corrector = self._scheduler(sampler, num_inference_steps, overrides)
        output = sample_score_sde(
            self.model,
            scheduler,
            model_inputs["num_samples"],
            corrector=LangevinCorrector(snr) if corrector else None,
            denoise=denoise,
            generator=model_inputs["generator"],
            dtype=self.model.dtype,
            device=self.model.device,
        )
        return {"samples": output.samples}

    def postprocess(self, model_outputs: dict[str, torch.Tensor], value_range: tuple[float, float] = (0, 1)) -> dict:
        samples = model_outputs["samples"].detach().cpu()
        if samples.ndim == 2 and self.feature_extractor is not None:  # back to data coordinates
            samples = self.feature_extractor.postprocess(samples)
        result: dict[str, Any] = {"samples": samples}
        if samples.ndim == 4:
            result["images"] = make_image_grid(samples, value_range=value_range)
        return result


__all__ = ["SAMPLERS", "ScoreSdeSampleGenerationPipeline"]
