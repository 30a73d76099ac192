"""The `image-explanation` pipeline: image -> predicted label, its score and the explanation's patch saliency map.

transformers has no explanation task, so `import hfvision` registers this one with `PIPELINE_REGISTRY`. The file
imports only torch, numpy, PIL and transformers, so every classifier's `save_pretrained` (and the pipeline's) ships
it with the checkpoint (`custom_pipelines` in `config.json`) and `pipeline("image-explanation", model=path,
trust_remote_code=True)` runs without hfvision. `overlay_saliency` draws a map over its image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, Pipeline
from transformers.image_utils import load_image


def overlay_saliency(
    image: Image.Image, saliency_map: Any, alpha: float = 0.6, color: tuple[int, int, int] = (255, 40, 0)
) -> Image.Image:
    """Draw a patch saliency map over an image (grayscale image, map in `color`, blocky: one cell per patch).

    Args:
        image: the explained image (any mode, any size).
        saliency_map: `(rows, cols)` non-negative saliency (array, tensor or nested list); scaled by its maximum.
        alpha: opacity of the map at its maximum, in [0, 1].
        color: RGB colour of high saliency.

    Returns:
        An RGB image of `image`'s size.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1], got {alpha}.")
    heat = np.asarray(
        saliency_map.detach().cpu() if hasattr(saliency_map, "detach") else saliency_map, dtype=np.float32
    )
    if heat.ndim != 2 or not np.isfinite(heat).all() or (heat < 0).any():
        raise ValueError(f"`saliency_map` must be a finite, non-negative (rows, cols) map, got shape {heat.shape}.")
    heat = heat / max(float(heat.max()), 1e-12)
    cells = Image.fromarray(np.rint(heat * 255).astype(np.uint8)).resize(image.size, Image.Resampling.NEAREST)
    weight = alpha * np.asarray(cells, dtype=np.float32)[..., None] / 255.0  # (H, W, 1)
    gray = np.asarray(image.convert("L").convert("RGB"), dtype=np.float32)
    blended = (1 - weight) * gray + weight * np.asarray(color, dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


class ImageExplanationPipeline(Pipeline):
    """Classify an image with a Scaffold ViT and explain the prediction with an attention explainer.

    Call with one image or a list (PIL images, paths or URLs). Keyword arguments:
    `explainer` (at construction or call): an `AttentionExplainer` model, or the path / Hub repo id of one (loaded with
    `AutoModel.from_pretrained`, as remote code when the pipeline's model is); without one, the heads of every layer
    are mixed uniformly (the paper's static attention explainer). `return_overlay=True` adds the map drawn over
    the image; `timeout` is for URLs.

    Returns, per image, `{"label", "score", "saliency_map", "explanation"}`: the predicted class name and its softmax
    probability, the patch saliency map (`rows x cols` nested lists summing to 1; the CLS token dropped) and the full
    token distribution (CLS first); plus `"overlay"` (a PIL image) when asked.
    """

    _load_image_processor = True
    _load_tokenizer = False
    _load_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(
        self, explainer: Any = None, return_overlay: bool | None = None, timeout: float | None = None
    ) -> tuple[dict, dict, dict]:
        preprocess_params = {} if timeout is None else {"timeout": timeout}
        forward_params = {}
        if explainer is not None:
            forward_params["explainer"] = self._load_explainer(explainer)
        postprocess_params = {} if return_overlay is None else {"return_overlay": return_overlay}
        return preprocess_params, forward_params, postprocess_params

    def _load_explainer(self, explainer: Any) -> torch.nn.Module:
        if isinstance(explainer, torch.nn.Module):
            return explainer.eval()
        if isinstance(explainer, str):
            # a pipeline whose model is remote code was built with trust_remote_code=True: the explainer (same code
            # family) is trusted alike; with hfvision installed its classes load locally
            trust = True if type(self.model).__module__.startswith("transformers_modules") else None
            return AutoModel.from_pretrained(explainer, trust_remote_code=trust).eval()
        raise TypeError(f"`explainer` must be an explainer model or a path / repo id, got {type(explainer).__name__}.")

    def preprocess(self, image: Any, timeout: float | None = None) -> dict[str, Any]:
        image = load_image(image, timeout=timeout)
        inputs = dict(self.image_processor(images=image, return_tensors="pt"))
        inputs["image"] = image
        return inputs

    def _forward(self, model_inputs: dict[str, Any], explainer: torch.nn.Module | None = None) -> dict[str, Any]:
        image = model_inputs.pop("image")
        outputs = self.model(
            pixel_values=model_inputs["pixel_values"].to(self.model.dtype), output_attention_scores=True
        )
        scores = outputs.attention_scores
        if explainer is not None:
            explanation = explainer(scores).explanation
        else:  # uniform head weights: mean over heads of the row-mean scores, softmax over tokens
            explanation = torch.stack([layer.mean(2) for layer in scores], 1).mean((1, 2)).softmax(-1)
        return {"logits": outputs.logits, "explanation": explanation, "image": image}

    def postprocess(self, model_outputs: dict[str, Any], return_overlay: bool = False) -> dict[str, Any]:
        probabilities = model_outputs["logits"][0].float().softmax(-1)
        index = int(probabilities.argmax())
        explanation = model_outputs["explanation"][0].float()
        rows, cols = (self.model.config.image_size // self.model.config.patch_size,) * 2
        patches = explanation[1:]
        saliency = (patches / patches.sum()).reshape(rows, cols)
        result = {
            "label": self.model.config.id2label.get(index, str(index)),
            "score": float(probabilities[index]),
            "saliency_map": saliency.tolist(),
            "explanation": explanation.tolist(),
        }
        if return_overlay:
            result["overlay"] = overlay_saliency(model_outputs["image"], saliency)
        return result


__all__ = ["ImageExplanationPipeline", "overlay_saliency"]
