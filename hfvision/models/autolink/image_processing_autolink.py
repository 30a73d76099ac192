"""Image processor for AutoLink: resize to the detector size, map pixels to [-1, 1]; keypoints back to pixels.

The official pipeline resizes to 128 px and normalises with mean = std = 0.5. Its random horizontal flip is a training
augmentation and belongs to the training data pipeline: the processor stays deterministic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling
from transformers.utils import IMAGE_PROCESSOR_NAME, PROCESSOR_NAME


class AutoLinkImageProcessor(PilBackend):
    r"""Resize to `size` (bilinear), rescale to [0, 1], normalise with mean = std = 0.5 (so pixels lie in [-1, 1]).

    Args (all optional, as transformers' image processors):
        size (`dict`, defaults to `{"height": 128, "width": 128}`): the model's `image_size`.
        resample (defaults to bilinear), `image_mean` / `image_std` (0.5), `do_resize`, `do_rescale`,
        `do_normalize`, `do_convert_rgb`.
    """

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"height": 128, "width": 128}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    # Copied from hfvision.models.lps.image_processing_lps.LpsImageProcessor.save_pretrained
    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> list[str]:
        """Save as `{"image_processor": {...}}` in `processor_config.json` (transformers 5's nested layout).

        Why not the legacy `preprocessor_config.json`: transformers 5.24's `AutoVideoProcessor`, which every image
        pipeline also tries, reads a legacy file whose `auto_map` names a remote `AutoImageProcessor` as the promise
        of a remote video processor (the same entry with "Image" replaced by "Video"). When the image processor is
        also known locally (hfvision imported) and `trust_remote_code` is unset, it then asks in a terminal whether
        to run that code (15 s timeout) for a class that does not exist. The nested layout is what `ProcessorMixin`
        writes; `from_pretrained` and `AutoImageProcessor` read it first, with its `auto_map` for remote code, and
        `AutoVideoProcessor` finds no video or legacy image-processor config in it, so it stops without asking.

        Args:
            save_directory: folder to write into (created if missing); an existing `processor_config.json` there
                keeps its other entries.
            push_to_hub: also upload the folder's processor files with `push_to_hub` (`repo_id` from `kwargs`,
                else the folder name).
            kwargs: passed on to `push_to_hub`.

        Returns:
            The path of the written `processor_config.json`.
        """
        repo_id = kwargs.pop("repo_id", Path(save_directory).name)
        super().save_pretrained(save_directory)  # the legacy file, and the remote-code file with `auto_map` set
        legacy_file = Path(save_directory) / IMAGE_PROCESSOR_NAME
        nested_file = Path(save_directory) / PROCESSOR_NAME
        nested = json.loads(nested_file.read_text(encoding="utf-8")) if nested_file.is_file() else {}
        nested["image_processor"] = json.loads(legacy_file.read_text(encoding="utf-8"))
        nested_file.write_text(json.dumps(nested, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        legacy_file.unlink()
        if push_to_hub:
            self.push_to_hub(repo_id, **kwargs)
        return [str(nested_file)]

    def post_process_keypoint_detection(
        self,
        outputs: Mapping[str, torch.Tensor],
        target_sizes: Sequence[Sequence[int]] | torch.Tensor | None = None,
        edge_threshold: float = 0.5,
    ) -> list[dict[str, object]]:
        """Keypoints in pixel coordinates and the graph's strong edges, per image.

        Normalised keypoints (align-corners: -1 / +1 are the centres of the outermost pixels) map to
        `(x + 1) / 2 * (width - 1)` and `(y + 1) / 2 * (height - 1)`, so they lie inside the image.

        Args:
            outputs: an [`AutoLinkModelOutput`] (or a dict) with `keypoints` `(B, K, 2)` and `edge_weights` `(K, K)`
                (one graph for every image) or `(B, K, K)`.
            target_sizes: per image, the `(height, width)` of the original image; `None` uses the processor's
                `size` (the model input's pixels).
            edge_threshold: keep the pairs whose weight is at least this fraction of the strongest edge's (in
                [0, 1]); the graph's scale is arbitrary (the decoder can rescale the edge map), so the threshold is
                relative.

        Returns:
            One dict per image: `"keypoints"`, a `(K, 2)` float tensor of pixel (x, y); `"edges"`, a list of
            `(i, j, weight)` with i < j, strongest first (`weight` is the raw edge weight).
        """
        keypoints = outputs["keypoints"].detach().float().cpu()
        edge_weights = outputs["edge_weights"].detach().float().cpu()
        batch_size, num_keypoints = keypoints.shape[:2]
        if edge_weights.shape == (num_keypoints, num_keypoints):
            edge_weights = edge_weights.expand(batch_size, num_keypoints, num_keypoints)
        if edge_weights.shape != (batch_size, num_keypoints, num_keypoints):
            raise ValueError(
                f"`outputs['edge_weights']` must have shape ({num_keypoints}, {num_keypoints}) or ({batch_size}, "
                f"{num_keypoints}, {num_keypoints}), got {tuple(edge_weights.shape)}."
            )
        if not 0.0 <= edge_threshold <= 1.0:
            raise ValueError(
                f"`edge_threshold` must be in [0, 1] (relative to the strongest edge), got {edge_threshold}."
            )
        if target_sizes is None:
            target_sizes = [(self.size["height"], self.size["width"])] * batch_size
        sizes = torch.as_tensor(target_sizes, dtype=torch.float32, device="cpu")
        if sizes.shape != (batch_size, 2):
            raise ValueError(f"`target_sizes` needs one (height, width) per image ({batch_size}), got {sizes.shape}.")
        scale = (sizes.flip(-1) - 1)[:, None, :] / 2  # (B, 1, 2): (width - 1) / 2, (height - 1) / 2
        pixel_keypoints = (keypoints + 1) * scale  # (B, K, 2) pixel (x, y)

        first, second = torch.triu_indices(num_keypoints, num_keypoints, offset=1)
        results = []
        for index in range(batch_size):
            weights = edge_weights[index, first, second]  # (P,)
            strongest = weights.max()
            keep = weights >= edge_threshold * strongest if strongest > 0 else torch.zeros_like(weights, dtype=bool)
            order = torch.argsort(weights[keep], descending=True)
            edges = [
                (int(i), int(j), float(w))
                for i, j, w in zip(first[keep][order], second[keep][order], weights[keep][order], strict=True)
            ]
            results.append({"keypoints": pixel_keypoints[index], "edges": edges})
        return results


__all__ = ["AutoLinkImageProcessor"]
