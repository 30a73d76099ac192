"""The README's quickstarts run as written, and what they print or return is what the text says it is.

Every ```python block runs in its own namespace; a block under a heading listed in `CHECKS` is then checked against
values recomputed here independently (a pipeline's scores against the model's own softmax, a loss against its
formula, a mask against its noise), so a quickstart that runs but prints something else fails.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstarts() -> list[tuple[str, str]]:
    """`(heading, code)` of every ```python block, with the `## ` heading it stands under."""
    text = README.read_text()
    blocks = []
    for match in re.finditer(r"```python\n(.*?)```", text, re.S):
        headings = re.findall(r"^## (.+)$", text[: match.start()], re.M)
        blocks.append((headings[-1] if headings else "", match.group(1)))
    return blocks


def check_pyramidclip(namespace: dict) -> None:
    from hfvision.models.pyramidclip import PyramidClipModel
    from hfvision.models.pyramidclip.modeling_pyramidclip import LOSS_TERMS

    model, processor, image = namespace["model"], namespace["processor"], namespace["image"]
    assert isinstance(model, PyramidClipModel)  # AutoModel resolved the saved folder to the registered class
    with torch.no_grad():
        probabilities = model(**namespace["inputs"]).logits_per_image.softmax(-1)  # the first print
    assert probabilities.shape == (1, 2) and probabilities.sum().item() == pytest.approx(1.0)
    assert namespace["image_embeds"].shape == (1, model.config.projection_dim)

    # The zero-shot pipeline's scores are the model's softmax over the pipeline's prompts.
    labels = ["red circle", "blue square"]
    predictions = namespace["classifier"](image, candidate_labels=labels)
    prompts = processor(text=[f"This is a photo of {label}." for label in labels], images=image)
    with torch.no_grad():
        expected = model(**prompts).logits_per_image.softmax(-1)[0]
    assert [p["score"] for p in predictions] == sorted((p["score"] for p in predictions), reverse=True)
    assert {p["label"]: p["score"] for p in predictions} == pytest.approx(
        dict(zip(labels, expected.tolist(), strict=True))
    )

    # The pretraining loss: lambda = mu = 1/3, so every term weighs 1/6; a softened term cannot go below the entropy
    # of its target, -(1-a) ln(1-a) - a ln(a/(N-1)) (N = 2 here).
    batch, outputs = namespace["batch"], namespace["outputs"]
    terms = [getattr(outputs, name).item() for name in LOSS_TERMS]
    assert outputs.loss.item() == pytest.approx(sum(terms) / 6, abs=1e-6)
    alpha, num = model.config.softening_alpha, 2
    floor = -(1 - alpha) * math.log(1 - alpha) - alpha * math.log(alpha / (num - 1))
    assert min(terms) >= floor - 1e-6, (terms, floor)
    # The rules the text states: a missing summary falls back to the caption; an image without boxes is one region.
    caption = batch["input_ids"][1][batch["attention_mask"][1].bool()]
    summary = batch["summary_input_ids"][1][batch["summary_attention_mask"][1].bool()]
    assert torch.equal(caption, summary)
    assert batch["roi_mask"].sum(-1).tolist() == [1, 1]


def check_mcmae(namespace: dict) -> None:
    from transformers import pipeline

    config, model, outputs = namespace["config"], namespace["model"], namespace["outputs"]
    pixel_values, noise = namespace["pixel_values"], namespace["noise"]
    batch_size, size, patch = 2, config.image_size, config.patch_size
    num_patches, num_kept = config.num_patches, int(config.num_patches * (1 - config.mask_ratio))
    assert pixel_values.shape == (batch_size, 3, size, size)

    # The printed mask: the num_kept lowest-noise patches visible (0), the other 75% masked (1).
    expected_mask = torch.ones(batch_size, num_patches).scatter_(1, noise.argsort(dim=1)[:, :num_kept], 0.0)
    assert torch.equal(outputs.mask, expected_mask)
    assert outputs.mask.sum(-1).tolist() == [num_patches - num_kept] * batch_size == [12, 12]
    assert outputs.logits.shape == (batch_size, num_patches, patch * patch * 3)
    assert outputs.hidden_states[-1].shape == (batch_size, num_kept, config.hidden_size)

    # The printed loss: MSE to per-patch normalised pixels, on the masked patches only (patches in (p, p, C) order).
    patches = F.unfold(pixel_values, patch, stride=patch).reshape(batch_size, 3, patch, patch, num_patches)
    patches = patches.permute(0, 4, 2, 3, 1).reshape(batch_size, num_patches, -1)
    target = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6) ** 0.5
    per_patch = (outputs.logits - target).pow(2).mean(-1)
    torch.testing.assert_close(outputs.loss, (per_patch * expected_mask).sum() / expected_mask.sum())

    # The grid's rows: the masked input is the image with masked patches zeroed; "pasted" keeps the visible patches.
    grid = size // patch
    masked_pixels = expected_mask.reshape(batch_size, 1, grid, grid).repeat_interleave(patch, 2)
    masked_pixels = masked_pixels.repeat_interleave(patch, 3)
    torch.testing.assert_close(namespace["masked"], pixel_values * (1 - masked_pixels))
    torch.testing.assert_close(namespace["pasted"] * (1 - masked_pixels), pixel_values * (1 - masked_pixels))
    torch.testing.assert_close(namespace["pasted"] * masked_pixels, namespace["reconstruction"] * masked_pixels)
    assert Image.open("mcmae_reconstruction.png").mode == "RGB"

    # The classifier keeps the pretrained encoder exactly and drops the decoder; its pipeline is its softmax.
    classifier = namespace["classifier"].eval()
    encoder, kept = model.mcmae.state_dict(), classifier.mcmae.state_dict()
    assert {name for name in kept if name not in encoder} == {name for name in kept if name.startswith("pooler.")}
    assert all(torch.equal(kept[name], encoder[name]) for name in kept if name in encoder)
    assert not hasattr(classifier, "decoder")
    predictions = pipeline("image-classification", model="mcmae-tiny-classifier")(namespace["images"][0])
    inputs = namespace["processor"](namespace["images"][0], return_tensors="pt")
    with torch.no_grad():
        expected = classifier(**inputs).logits.softmax(-1)[0]
    assert {p["label"]: p["score"] for p in predictions} == pytest.approx(
        {classifier.config.id2label[index]: score for index, score in enumerate(expected.tolist())}
    )


def check_lps(namespace: dict) -> None:
    from hfvision.models.lps import LpsImageProcessor

    model, outputs, config = namespace["model"], namespace["outputs"], namespace["config"]
    assert namespace["logits"].shape == (2, config.num_labels)
    # The training forward's loss is the cross-entropy of its own logits with the given labels.
    torch.testing.assert_close(outputs.loss, F.cross_entropy(outputs.logits, torch.tensor([0, 2])))

    # The pipeline returns the model's top-2 softmax, and the same answer for a circularly shifted image.
    classify = namespace["classify"]
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    predictions = classify(image, top_k=2)
    processor = LpsImageProcessor.from_pretrained("lps-tiny")
    with torch.no_grad():
        probabilities = model.eval()(**processor(image, return_tensors="pt")).logits.softmax(-1)[0]
    top = probabilities.topk(2)
    assert [p["label"] for p in predictions] == [config.id2label[int(index)] for index in top.indices]
    assert [p["score"] for p in predictions] == pytest.approx(top.values.tolist(), abs=1e-6)
    shifted = classify(np.roll(image, (5, 7), axis=(0, 1)), top_k=2)
    assert [p["label"] for p in shifted] == [p["label"] for p in predictions]
    assert [p["score"] for p in shifted] == pytest.approx([p["score"] for p in predictions], abs=1e-5)


def check_autolink(namespace: dict) -> None:
    from hfvision.data import normalized_to_pixel

    config, model, outputs = namespace["config"], namespace["model"], namespace["outputs"]
    num_keypoints, grid = config.num_keypoints, config.mask_grid_size
    assert outputs.keypoints.shape == (2, num_keypoints, 2) and outputs.keypoints.abs().max() <= 1
    weights = outputs.edge_weights
    assert weights.shape == (num_keypoints, num_keypoints)
    assert torch.equal(weights, weights.t()) and not weights.diagonal().any()
    # The printed mask mean: the fraction of grid cells whose seeded noise exceeds mask_ratio, about 1 - 0.8.
    noise = torch.rand(2, grid, grid, generator=torch.Generator().manual_seed(0))
    kept = (noise > config.mask_ratio).float().mean().item()
    assert outputs.mask.mean().item() == pytest.approx(kept, abs=1e-7)
    assert abs(kept - (1 - config.mask_ratio)) < 0.05

    # The pipeline: the model's keypoints in pixels of the 32-pixel figure, and every edge within half of the
    # strongest, strongest first.
    result, image = namespace["result"], namespace["figures"][0]["image"]
    with torch.no_grad():
        pixel_values = namespace["processor"]([image], return_tensors="pt").pixel_values
        keypoints = model.eval().base_model(pixel_values=pixel_values).keypoints[0]
    expected = normalized_to_pixel(keypoints, (image.height, image.width))
    torch.testing.assert_close(torch.tensor(result["keypoints"]), expected, rtol=0, atol=1e-4)
    strong = {
        (i, j)
        for i in range(num_keypoints)
        for j in range(i + 1, num_keypoints)
        if weights[i, j] >= 0.5 * weights.max()
    }
    assert {(i, j) for i, j, _ in result["edges"]} == strong
    edge_weights = [weight for _, _, weight in result["edges"]]
    assert edge_weights == sorted(edge_weights, reverse=True)
    assert edge_weights == pytest.approx([weights[i, j].item() for i, j, _ in result["edges"]])
    assert Image.open("autolink_overlay.png").size[0] >= image.width


CHECKS: dict[str, Callable[[dict], None]] = {
    "PyramidCLIP quickstart": check_pyramidclip,
    "MCMAE quickstart": check_mcmae,
    "LPS quickstart": check_lps,
    "AutoLink quickstart": check_autolink,
}


def test_readme_quickstarts_run(tmp_path, monkeypatch):
    blocks = quickstarts()
    assert blocks, "README has no python quickstart"
    monkeypatch.chdir(tmp_path)
    losses, checked = [], []
    for heading, block in blocks:
        namespace: dict = {}
        exec(compile(block, str(README), "exec"), namespace)  # each quickstart stands alone
        outputs = namespace.get("outputs")
        if getattr(outputs, "loss", None) is not None:
            losses.append(outputs.loss.item())
        if heading in CHECKS:
            CHECKS[heading](namespace)
            checked.append(heading)
    assert losses, "no quickstart computed a training loss"
    assert all(math.isfinite(loss) and loss > 0 for loss in losses), losses
    assert sorted(checked) == sorted(CHECKS), f"quickstarts with value checks not found under their heading: {checked}"
