"""A light point-cloud normaliser for Score-SDE models: points in data coordinates <-> the model's `sample` tensor.

Score models are trained at a fixed data scale (the noise range sigma_min..sigma_max and EDM's sigma_data assume it:
the unit circle, or images in [0, 1]). `ScoreSdeFeatureExtractor` maps user points x to (x - shift) / scale, checks
the shape and finiteness, and `postprocess` maps samples back. With the defaults (shift 0, scale 1) it is the
identity, which is what the manifold experiments use; `fit` sets the shift and scale of a data set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin


class ScoreSdeFeatureExtractor(FeatureExtractionMixin):
    r"""Turns points `(n, d)` (lists, numpy arrays or tensors) into `{"sample": FloatTensor (n, d)}`.

    Args:
        data_dim (`int`, *optional*, defaults to 10): d, the number of coordinates the model expects.
        shift (`list[float]` or `float`, *optional*, defaults to 0.0): subtracted from every point (per coordinate or
            one number).
        scale (`float`, *optional*, defaults to 1.0): points are divided by it after the shift.
    """

    model_input_names = ["sample"]

    def __init__(self, data_dim: int = 10, shift: list[float] | float = 0.0, scale: float = 1.0, **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(data_dim, int) or data_dim < 1:
            raise ValueError(f"`data_dim` must be an int >= 1, got {data_dim!r}.")
        if not scale > 0:
            raise ValueError(f"`scale` must be > 0, got {scale!r}.")
        shift_values = np.broadcast_to(np.asarray(shift, dtype=np.float64), (data_dim,))
        if not np.isfinite(shift_values).all():
            raise ValueError("`shift` must be finite.")
        self.data_dim, self.scale = data_dim, float(scale)
        self.shift = shift_values.tolist() if np.ndim(shift) else float(shift)

    def _shift(self) -> torch.Tensor:
        return torch.as_tensor(self.shift, dtype=torch.float64).expand(self.data_dim)

    def _as_points(self, points: Any) -> torch.Tensor:
        if isinstance(points, torch.Tensor):
            values = points.detach().to(torch.float64).cpu()
        else:
            try:
                values = torch.as_tensor(np.asarray(points, dtype=np.float64))
            except (TypeError, ValueError) as error:
                raise ValueError(f"`points` must be numbers of shape (n, {self.data_dim}): {error}") from error
        if values.ndim == 1:
            values = values[None]
        if values.ndim != 2 or values.shape[1] != self.data_dim or values.shape[0] == 0:
            raise ValueError(
                f"`points` must have shape (n, {self.data_dim}) or ({self.data_dim},), got {tuple(values.shape)}."
            )
        if not torch.isfinite(values).all():
            raise ValueError("`points` must be finite (no NaN or inf).")
        return values

    def __call__(self, points: Any, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        """Normalise `points` `(n, d)` or `(d,)` to `sample` `(n, d)` float32: (x - shift) / scale."""
        sample = ((self._as_points(points) - self._shift()) / self.scale).to(torch.float32)
        return BatchFeature({"sample": sample}, tensor_type=return_tensors)

    def postprocess(self, samples: torch.Tensor) -> torch.Tensor:
        """Model samples `(n, d)` back in data coordinates: shift + scale * x."""
        return samples * self.scale + self._shift().to(device=samples.device, dtype=samples.dtype)

    def fit(self, points: Any) -> ScoreSdeFeatureExtractor:
        """Set `shift` to the mean of `points` and `scale` to their root-mean-square distance to it; returns self."""
        values = self._as_points(points)
        mean = values.mean(0)
        self.shift = mean.tolist()
        self.scale = float((values - mean).pow(2).sum(-1).mean().sqrt().clamp_min(1e-12))
        return self


__all__ = ["ScoreSdeFeatureExtractor"]
