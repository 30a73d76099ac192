"""MCMAE reconstructions (tensors and the PIL grid users look at) and the model card template."""

from __future__ import annotations

import numpy as np
import torch
import yaml
from PIL import Image

from hfvision.hub.card import render_model_card
from hfvision.models.mcmae import McMaeConfig, McMaeForPreTraining, McMaeImageProcessor


def images(count: int = 2, size: int = 32) -> list[Image.Image]:
    return [
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))
        for seed in range(count)
    ]


def tiny_model(**overrides) -> McMaeForPreTraining:
    torch.manual_seed(0)
    return McMaeForPreTraining(McMaeConfig.from_preset("mcmae-tiny", **overrides)).eval()


def test_reconstruct_pastes_predictions_into_masked_patches_only():
    model = tiny_model()
    processor = McMaeImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pixel_values = processor(images(), return_tensors="pt").pixel_values
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(0))
    masked, reconstruction, pasted = model.reconstruct(pixel_values, noise=noise)
    mask = model(pixel_values=pixel_values, noise=noise).mask  # (B, N), 1 = masked
    pixel_mask = mask.view(2, 1, 4, 4).repeat_interleave(8, 2).repeat_interleave(8, 3).bool().expand(-1, 3, -1, -1)
    assert masked.shape == reconstruction.shape == pasted.shape == pixel_values.shape
    assert torch.equal(masked[pixel_mask], torch.zeros_like(masked[pixel_mask]))
    assert torch.equal(masked[~pixel_mask], pixel_values[~pixel_mask])
    assert torch.equal(pasted[~pixel_mask], pixel_values[~pixel_mask])
    torch.testing.assert_close(pasted[pixel_mask], reconstruction[pixel_mask])
    # with norm_pix_loss, a prediction of the normalised target itself maps back to the input exactly
    target = model.patchify(pixel_values)
    normalised = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    model.forward = lambda **_: type("Out", (), {"logits": normalised, "mask": mask})()
    _, perfect, _ = model.reconstruct(pixel_values, noise=noise)
    torch.testing.assert_close(perfect, pixel_values, rtol=1e-4, atol=1e-4)


def test_reconstruction_grid_is_an_image_of_rows_and_columns():
    model = tiny_model()
    processor = McMaeImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    originals = images(3)
    pixel_values = processor(originals, return_tensors="pt").pixel_values
    columns = [pixel_values, *model.reconstruct(pixel_values)]
    grid = processor.reconstruction_grid(columns, padding=2)
    assert grid.mode == "RGB" and grid.size == (4 * 34 + 2, 3 * 34 + 2)
    cells = np.asarray(grid)
    for row, original in enumerate(originals):  # the first column is the input, recovered to within rounding
        cell = cells[2 + row * 34 : 2 + row * 34 + 32, 2:34].astype(int)
        assert np.abs(cell - np.asarray(original, dtype=int)).max() <= 1
    assert (cells[0] == 255).all() and (cells[:, 0] == 255).all()  # white padding


def test_model_card_template_renders_with_metadata():
    card = render_model_card(
        "mcmae",
        model_id="org/tiny-mcmae",
        eval_results=[
            {
                "task_type": "image-classification",
                "dataset_type": "fashion_mnist",
                "dataset_name": "Fashion-MNIST",
                "metric_type": "accuracy",
                "metric_value": 0.5,
            }
        ],
        training_config={"mask_ratio": 0.75, "norm_pix_loss": True},
        datasets=["fashion_mnist"],
    )
    text = str(card)
    metadata = yaml.safe_load(text.split("---")[1])
    assert metadata["pipeline_tag"] == "image-classification" and "mcmae" in metadata["tags"]
    assert metadata["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.5
    assert "Masked convolution" in text and "@inproceedings{gao2022convmae" in text and "org/tiny-mcmae" in text
    assert "mask_ratio: 0.75" in text and "{{" not in text
