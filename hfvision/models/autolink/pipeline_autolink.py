"""The `keypoint-detection` pipeline: image -> keypoints in pixel coordinates and the learned skeleton's edges.

transformers 5 has no `keypoint-detection` task (only `keypoint-matching`), so `import hfvision` registers this one
with `PIPELINE_REGISTRY`. The file sits beside the model code and imports only torch and transformers, so every
`save_pretrained` of an AutoLink model (or of this pipeline) ships it with the checkpoint (`custom_pipelines` in
`config.json`) and `pipeline("keypoint-detection", model=path_or_repo_id, trust_remote_code=True)` runs without
hfvision.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Pipeline
from transformers.image_utils import load_image


class KeypointDetectionPipeline(Pipeline):
    """Detect keypoints with an AutoLink model and return the graph's strong edges.

    Call with one image or a list (PIL images, paths or URLs). Keyword arguments: `edge_threshold` (keep edges
    whose weight is at least this fraction of the strongest's, default 0.5), `timeout` (for URLs).

    The model may be [`AutoLinkModel`] or the self-supervised model (its base model runs). Every AutoLink checkpoint
    (the model's `save_pretrained`, or this pipeline's, which also writes the processor) holds this file, with
    `custom_pipelines` in `config.json`; it opens in a process without hfvision with
    `pipeline(model=path_or_repo_id, trust_remote_code=True)`. (With `custom_pipelines` present, transformers asks for
    `trust_remote_code=True` or `pipeline_class=KeypointDetectionPipeline` even where hfvision is installed.)

    Returns, per image, `{"keypoints": [[x, y], ...], "edges": [(i, j, weight), ...]}`: K keypoints in pixel
    coordinates of the input image (inside it: x in [0, width - 1], y in [0, height - 1]) and the edges,
    strongest first; `draw_keypoints(image, **result)` overlays them.
    """

    _load_image_processor = True
    _load_tokenizer = False
    _load_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(
        self, edge_threshold: float | None = None, timeout: float | None = None
    ) -> tuple[dict, dict, dict]:
        preprocess_params = {} if timeout is None else {"timeout": timeout}
        postprocess_params = {} if edge_threshold is None else {"edge_threshold": edge_threshold}
        return preprocess_params, {}, postprocess_params

    def preprocess(self, image: Any, timeout: float | None = None) -> dict[str, torch.Tensor]:
        image = load_image(image, timeout=timeout)
        inputs = self.image_processor(images=image, return_tensors="pt")
        inputs["target_size"] = torch.tensor([[image.height, image.width]])  # (1, 2)
        return dict(inputs)

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        target_size = model_inputs.pop("target_size")
        # `base_model` is the detector and graph, also when the pipeline holds the self-supervised model
        outputs = self.model.base_model(pixel_values=model_inputs["pixel_values"].to(self.model.dtype))
        batch_size, num_keypoints = outputs.keypoints.shape[:2]
        # every tensor is per image, so that pipeline batching can split the batch back into images
        edge_weights = outputs.edge_weights.expand(batch_size, num_keypoints, num_keypoints)
        return {"keypoints": outputs.keypoints, "edge_weights": edge_weights, "target_size": target_size}

    def postprocess(self, model_outputs: dict[str, torch.Tensor], edge_threshold: float = 0.5) -> dict[str, list]:
        result = self.image_processor.post_process_keypoint_detection(
            model_outputs, target_sizes=model_outputs["target_size"], edge_threshold=edge_threshold
        )[0]
        return {"keypoints": result["keypoints"].tolist(), "edges": result["edges"]}


__all__ = ["KeypointDetectionPipeline"]
