"""The unconditional-sample-generation pipeline (in process and as remote code without hfvision) and the pictures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import pipeline

from hfvision.demo import HIDE_HFVISION
from hfvision.models.score_sde import (
    Circle,
    EmpiricalScoreModel,
    ScoreSdeConfig,
    ScoreSdeFeatureExtractor,
    ScoreSdeModel,
    ScoreSdeSampleGenerationPipeline,
    make_image_grid,
    pairwise_distances,
    plot_samples_on_manifold,
)

TASK = "unconditional-sample-generation"


def tiny_model() -> ScoreSdeModel:
    torch.manual_seed(0)
    return ScoreSdeModel(ScoreSdeConfig.from_preset("score-sde-tiny", data_dim=10)).eval()


def test_samples_are_seeded_and_every_sampler_runs():
    generator = pipeline(TASK, model=tiny_model())
    assert isinstance(generator, ScoreSdeSampleGenerationPipeline)
    first = generator(6, num_inference_steps=20, seed=3)["samples"]
    assert first.shape == (6, 10) and torch.isfinite(first).all()
    assert torch.equal(first, generator(6, num_inference_steps=20, seed=3)["samples"])
    assert not torch.equal(first, generator(6, num_inference_steps=20, seed=4)["samples"])
    for sampler in ("euler_maruyama", "pc", "ode"):
        samples = generator(4, sampler=sampler, num_inference_steps=10, seed=0)["samples"]
        assert samples.shape == (4, 10) and torch.isfinite(samples).all()


def test_the_empirical_score_pipeline_reproduces_training_points():
    """Digest B2.4 through the pipeline: the exact score of 16 points returns training points."""
    training = Circle(10, seed=0).sample(16, torch.Generator().manual_seed(0))
    empirical = EmpiricalScoreModel.from_training_points(training, sigma_min=1e-3, sigma_max=3.0)
    samples = pipeline(TASK, model=empirical)(200, num_inference_steps=500, seed=0)["samples"]
    nearest = pairwise_distances(samples, training).min(-1).values
    assert (nearest <= 1e-3).double().mean() >= 0.99


def test_image_models_also_return_a_grid_picture():
    torch.manual_seed(0)
    model = ScoreSdeModel(ScoreSdeConfig.from_preset("score-sde-unet-tiny")).eval()
    result = pipeline(TASK, model=model)(5, num_inference_steps=4, seed=0)
    assert result["samples"].shape == (5, 1, 8, 8)
    assert isinstance(result["images"], Image.Image) and result["images"].size == (3 * 10 + 2, 2 * 10 + 2)


@pytest.mark.parametrize("bad", [0, -2, 2.5, "3", True])
def test_bad_inputs_raise(bad):
    generator = pipeline(TASK, model=tiny_model())
    with pytest.raises(ValueError, match="number of samples"):
        generator(bad)
    with pytest.raises(ValueError, match="sampler"):
        generator(2, sampler="ddim")
    with pytest.raises(ValueError, match="num_inference_steps"):
        generator(2, num_inference_steps=1)


def test_pictures():
    grid = make_image_grid(torch.rand(7, 3, 6, 6), num_columns=4)
    assert grid.size == (4 * 8 + 2, 2 * 8 + 2)
    # a white gutter and the first image's pixels where they belong
    assert grid.getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ValueError, match="images"):
        make_image_grid(torch.rand(2, 6, 6))
    circle = Circle(10, seed=1)
    on = circle.sample(100, torch.Generator().manual_seed(0))
    off = on * 1.3
    picture = plot_samples_on_manifold(
        {"on": on, "off": off}, circle.isometry, {"on": circle.distance(on), "off": circle.distance(off)}
    )
    assert picture.width > 2 * 360 and picture.mode == "RGB"
    colors = {color for _, color in picture.getcolors(1 << 16)}
    assert (31, 119, 180) in colors and (214, 39, 40) in colors  # both series drawn


REMOTE_SCRIPT = HIDE_HFVISION + textwrap.dedent(
    """
    import json, sys
    from safetensors.torch import save_file
    from transformers import pipeline

    checkpoint, out = sys.argv[1:3]
    generator = pipeline(model=checkpoint, trust_remote_code=True)  # the task comes from custom_pipelines
    samples = generator(5, num_inference_steps=15, seed=7)["samples"]
    save_file({"samples": samples}, out)
    hidden = not any(name.startswith("hfvision") for name in sys.modules)
    names = [type(generator).__name__, type(generator.model).__name__, type(generator.feature_extractor).__name__]
    print("hfvision hidden:", hidden, generator.task, *names)
    """
)


def test_feature_extractor_normalises_points_and_maps_samples_back():
    extractor = ScoreSdeFeatureExtractor(data_dim=3, shift=[1.0, 2.0, 3.0], scale=2.0)
    sample = extractor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])["sample"]
    assert sample.dtype == torch.float32
    torch.testing.assert_close(sample, torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(extractor.postprocess(sample), torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]))
    fitted = ScoreSdeFeatureExtractor(data_dim=2).fit(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
    assert fitted.shift == [1.0, 0.0] and fitted.scale == pytest.approx(1.0)
    for bad in ([[1.0, 2.0]], [[float("nan"), 0.0, 0.0]], "points"):
        with pytest.raises(ValueError, match="points"):
            extractor(bad)
    with pytest.raises(ValueError, match="scale"):
        ScoreSdeFeatureExtractor(scale=0.0)


def test_a_feature_extractor_maps_pipeline_samples_to_data_coordinates():
    model = tiny_model()
    plain = pipeline(TASK, model=model)(4, num_inference_steps=10, seed=0)["samples"]
    extractor = ScoreSdeFeatureExtractor(data_dim=10, shift=5.0, scale=3.0)
    mapped = pipeline(TASK, model=model, feature_extractor=extractor)(4, num_inference_steps=10, seed=0)["samples"]
    torch.testing.assert_close(mapped, plain * 3.0 + 5.0)


def test_save_pretrained_ships_the_pipeline_and_it_runs_without_hfvision(tmp_path):
    extractor = ScoreSdeFeatureExtractor(data_dim=10, shift=0.5, scale=2.0)
    generator = pipeline(TASK, model=tiny_model(), feature_extractor=extractor)
    generator.save_pretrained(tmp_path / "checkpoint")
    files = set(os.listdir(tmp_path / "checkpoint"))
    assert {
        "pipeline_score_sde.py",
        "scheduling_score_sde.py",
        "visualization_score_sde.py",
        "feature_extraction_score_sde.py",
        "preprocessor_config.json",
        "model.safetensors",
    } <= files
    config = json.loads((tmp_path / "checkpoint" / "config.json").read_text())
    assert config["custom_pipelines"][TASK]["impl"] == "pipeline_score_sde.ScoreSdeSampleGenerationPipeline"
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "checkpoint"), str(tmp_path / "remote.safetensors")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    expected = f"hfvision hidden: True {TASK} ScoreSdeSampleGenerationPipeline ScoreSdeModel ScoreSdeFeatureExtractor"
    assert expected in result.stdout
    local = generator(5, num_inference_steps=15, seed=7)["samples"]
    assert torch.equal(load_file(tmp_path / "remote.safetensors")["samples"], local)
