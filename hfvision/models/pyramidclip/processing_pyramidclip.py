"""Processor for PyramidCLIP: image processor + CLIP BPE tokenizer, and the linguistic pyramid.

The linguistic pyramid of the paper (Sec. 3.1) is the original caption T (`input_ids`), a summary S
(`summary_input_ids`, from an off-the-shelf summariser in the paper) and an object-attribute text A
(`attribute_input_ids`, the detector's "attribute + category" tags). Datasets here provide them as fields.
Fallback rule when a row lacks a field: a missing summary becomes the caption itself, and missing attributes become
the caption too, so every term of the objective stays defined (it then aligns that view with the caption).
"""

from __future__ import annotations

from typing import Any

from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin


class PyramidClipProcessor(ProcessorMixin):
    r"""Wraps a [`PyramidClipImageProcessor`] and a CLIP tokenizer.

    `processor(text=..., images=...)` gives CLIP-style inputs (`input_ids`, `attention_mask`, `pixel_values`);
    texts longer than the tokenizer's `model_max_length` are truncated. With `return_pyramid=True` it also returns
    the whole input pyramid for [`PyramidClipModel`]'s loss.
    """

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, **kwargs: Any):
        super().__init__(image_processor, tokenizer)

    def _tokenize(self, texts: str | list[str], name: str, **kwargs: Any) -> dict[str, Any]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError(f"`{name}` is an empty list; expected at least one string.")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"`{name}` must be a string or a list of strings; item {i} is {type(text).__name__}.")
            if not text.strip():
                raise ValueError(f"`{name}` item {i} is an empty string; every text needs at least one word.")
        kwargs = {"padding": True, "truncation": True, "return_tensors": "pt", **kwargs}
        return self.tokenizer(texts, **kwargs)

    def __call__(
        self,
        images: Any = None,
        text: str | list[str] | None = None,
        summary: str | list[str | None] | None = None,
        attributes: str | list[str | None] | None = None,
        boxes: list[list[list[float]] | None] | None = None,
        roi_features: list[Any] | None = None,
        return_pyramid: bool = False,
        seed: int | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Tokenize texts and preprocess images.

        Args:
            images: image(s) of any size (PIL, numpy, torch).
            text: caption(s) T.
            summary: summary text(s) S; `None` entries (or `None`) fall back to the caption.
            attributes: object-attribute text(s) A; `None` entries (or `None`) fall back to the caption.
            boxes: per image, `[x0, y0, x1, y1]` boxes of its objects, for the region sequence R.
            roi_features: per image, precomputed region features (overrides `boxes`).
            return_pyramid: also build the local view, regions, summary and attribute inputs (pretraining).
            seed: seed of the random crops (pyramid only).
            return_tensors: `"pt"` (default) or `"np"`; other kwargs go to the tokenizer (e.g. `padding="max_length"`).
        """
        if images is None and text is None:
            raise ValueError("PyramidClipProcessor needs `text`, `images` or both; got neither.")
        data: dict[str, Any] = {}
        if text is not None:
            data.update(self._tokenize(text, "text", return_tensors=return_tensors, **kwargs))
        if not return_pyramid:
            if images is not None:
                data.update(self.image_processor(images, return_tensors=return_tensors))
            return BatchFeature(data=data, tensor_type=return_tensors)

        if images is None or text is None:
            raise ValueError("`return_pyramid=True` needs both `images` and `text`.")
        captions = [text] if isinstance(text, str) else list(text)
        for name, field in (("summary", summary), ("attributes", attributes)):
            values = [field] * len(captions) if field is None or isinstance(field, str) else list(field)
            if len(values) != len(captions):
                raise ValueError(f"`{name}` must have one entry per caption ({len(captions)}), got {len(values)}.")
            values = [caption if value is None else value for caption, value in zip(captions, values, strict=True)]
            tokens = self._tokenize(values, name, return_tensors=return_tensors, **kwargs)
            prefix = "summary" if name == "summary" else "attribute"
            data[f"{prefix}_input_ids"] = tokens["input_ids"]
            data[f"{prefix}_attention_mask"] = tokens["attention_mask"]
        visual = self.image_processor.preprocess_pyramid(
            images, boxes=boxes, roi_features=roi_features, seed=seed, return_tensors=return_tensors
        )
        if len(visual["pixel_values"]) != len(captions):
            raise ValueError(f"Got {len(visual['pixel_values'])} images for {len(captions)} captions; pair them 1:1.")
        data.update(visual)
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


__all__ = ["PyramidClipProcessor"]
