"""The `video-text-retrieval` pipeline: a clip and candidate captions -> the captions ranked for the clip.

Zero-shot video->text retrieval in VATT's video-text space (paper Sec. 4.3): the clip's video embedding (video ->
video-audio space -> video-text space, no DropToken) against each caption's text embedding, both L2-normalised.
transformers 5 has no such task, so `import hfvision` registers this one with `PIPELINE_REGISTRY`. The file imports
only numpy, torch and transformers, so `VattModel` / `VattForPreTraining.save_pretrained` ship it beside the model code
as remote code (`custom_pipelines` in `config.json`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import Pipeline


class VideoTextRetrievalPipeline(Pipeline):
    """Rank candidate captions for a video clip with a VATT model ([`VattModel`] or [`VattForPreTraining`]).

    Call with one clip or a list of clips and `candidate_captions` (a non-empty list of strings); a clip is a
    `(T, H, W, 3)` uint8 array (or any frame sequence [`VattVideoProcessor`] accepts, wrapped as `{"frames": ...}`).
    Keyword arguments: `top_k` (how many captions to return, default all).

    Returns, per clip, the captions best first: `[{"caption": str, "score": float, "similarity": float}, ...]`, where
    `similarity` is the cosine similarity in the video-text space and `score` the softmax over the candidates at the
    model's contrastive temperature.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(
        self, candidate_captions: Sequence[str] | None = None, top_k: int | None = None
    ) -> tuple[dict, dict, dict]:
        preprocess_params = {} if candidate_captions is None else {"candidate_captions": candidate_captions}
        postprocess_params = {} if top_k is None else {"top_k": top_k}
        return preprocess_params, {}, postprocess_params

    def preprocess(self, clip: Any, candidate_captions: Sequence[str] | None = None) -> dict[str, Any]:
        if isinstance(candidate_captions, str):
            candidate_captions = [candidate_captions]
        if (
            not isinstance(candidate_captions, (list, tuple))
            or not candidate_captions
            or not all(isinstance(caption, str) for caption in candidate_captions)
        ):
            raise ValueError("`candidate_captions` must be a non-empty list of strings (the captions to rank).")
        frames = clip["frames"] if isinstance(clip, dict) else clip
        if isinstance(frames, np.ndarray) and frames.ndim != 4:
            raise ValueError(f"a clip must be a (T, H, W, 3) array of frames, got shape {frames.shape}.")
        video = self.processor.image_processor([list(frames)], return_tensors="pt")
        text = self.processor(text=list(candidate_captions), return_tensors="pt")
        return {
            "pixel_values_videos": video["pixel_values_videos"],
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "candidate_captions": list(candidate_captions),
        }

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        model = self.model.base_model  # the VattModel, also when the pipeline holds VattForPreTraining
        video = model.get_video_features(
            model_inputs["pixel_values_videos"].to(self.model.dtype), space="vt", droptoken=False
        ).pooler_output
        text = model.get_text_features(
            input_ids=model_inputs["input_ids"], attention_mask=model_inputs["attention_mask"]
        ).pooler_output
        similarity = nn.functional.normalize(video, dim=-1) @ nn.functional.normalize(text, dim=-1).t()  # (1, N)
        return {"similarity": similarity[0], "candidate_captions": model_inputs["candidate_captions"]}

    def postprocess(self, model_outputs: dict[str, Any], top_k: int | None = None) -> list[dict[str, Any]]:
        similarity = model_outputs["similarity"].float()
        scores = (similarity / self.model.config.temperature).softmax(dim=-1)
        order = torch.argsort(similarity, descending=True, stable=True)
        if top_k is not None:
            if top_k < 1:
                raise ValueError(f"`top_k` must be >= 1, got {top_k}.")
            order = order[:top_k]
        captions = model_outputs["candidate_captions"]
        return [
            {"caption": captions[index], "score": float(scores[index]), "similarity": float(similarity[index])}
            for index in order.tolist()
        ]


__all__ = ["VideoTextRetrievalPipeline"]
