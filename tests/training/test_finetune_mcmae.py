"""MCMAE through the generic Trainer script: a pretraining checkpoint fine-tuned with the real `main([...])`.

The checkpoint is a tiny `McMaeForPreTraining` (encoder + fusion + decoder) saved with a 32x32 `McMaeImageProcessor`;
`AutoModelForImageClassification` opens it as `McMaeForImageClassification`, keeping the encoder, dropping the
pretraining-only fusion convs and decoder and creating the pooler norm and head. The synthetic class is an image's
dominant colour, so a working pipeline learns it in a few dozen steps while a broken one stays near chance (1/6).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModelForImageClassification

from hfvision.models.mcmae import (
    McMaeConfig,
    McMaeForImageClassification,
    McMaeForPreTraining,
    McMaeImageProcessor,
)
from tests.training.conftest import run_finetune

SEED = 0
# Measured with seeds 0-3 on 2 CPU cores (one thread): top-1 0.12-0.20 before (random head), 1.0 after these 60 steps
# (about 1.5 s of training); seed 0: 0.172 -> 1.0.
TRAIN_ARGS = [
    "--dataset", "synthetic",
    "--max_steps", "60",
    "--per_device_train_batch_size", "32",
    "--per_device_eval_batch_size", "64",
    "--learning_rate", "3e-3",
    "--save_strategy", "no",
    "--logging_steps", "20",
    "--seed", str(SEED),
    "--use_cpu",
    "--report_to", "none",
]  # fmt: skip


@pytest.fixture(scope="module")
def pretraining_checkpoint(tmp_path_factory) -> Path:
    """A saved tiny MCMAE pretraining model (32x32 inputs, token stride 8) and its 32x32 image processor."""
    torch.manual_seed(SEED)
    path = tmp_path_factory.mktemp("mcmae-tiny-pretraining")
    McMaeForPreTraining(McMaeConfig.from_preset("mcmae-tiny")).save_pretrained(path)
    McMaeImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, finetune, pretraining_checkpoint) -> tuple[Path, dict[str, float]]:
    output_dir = tmp_path_factory.mktemp("mcmae-finetuned")
    return output_dir, run_finetune(finetune, pretraining_checkpoint, output_dir, TRAIN_ARGS)


def test_pretraining_checkpoint_opens_as_classifier_with_its_encoder(pretraining_checkpoint):
    pretrained = load_file(pretraining_checkpoint / "model.safetensors")
    model = AutoModelForImageClassification.from_pretrained(pretraining_checkpoint, num_labels=6)
    assert isinstance(model, McMaeForImageClassification)
    encoder = {f"mcmae.{name}": tensor for name, tensor in model.mcmae.state_dict().items()}
    shared = sorted(name for name in encoder if name in pretrained)
    assert shared and all(not name.startswith("mcmae.pooler") for name in shared)
    assert set(encoder) - set(shared) == {"mcmae.pooler.layernorm.weight", "mcmae.pooler.layernorm.bias"}
    for name in shared:
        torch.testing.assert_close(encoder[name], pretrained[name], rtol=0, atol=0, msg=name)


def test_training_beats_chance(finetuned):
    _, metrics = finetuned
    chance = 1 / 6
    assert metrics["eval_top1_accuracy"] >= 0.6 > chance + 0.4
    assert metrics["eval_top1_accuracy"] >= metrics["eval_init_top1_accuracy"] + 0.3
    assert metrics["eval_loss"] < metrics["eval_init_loss"]


def test_saved_folder_reloads_and_predicts_as_evaluated(finetune, finetuned):
    output_dir, metrics = finetuned
    model = AutoModelForImageClassification.from_pretrained(output_dir).eval()
    assert isinstance(model, McMaeForImageClassification)
    assert model.config.id2label == {0: "red", 1: "green", 2: "blue", 3: "yellow", 4: "cyan", 5: "magenta"}
    processor = AutoImageProcessor.from_pretrained(output_dir)
    assert isinstance(processor, McMaeImageProcessor) and processor.crop_size == {"height": 32, "width": 32}
    evaluation = finetune.make_synthetic_colours(finetune.SYNTHETIC_SIZES["eval"], seed=SEED + 1)
    inputs = processor([image.convert("RGB") for image in evaluation["image"]], return_tensors="pt")
    with torch.no_grad():
        predictions = model(**inputs).logits.argmax(-1).numpy()  # (N,)
    accuracy = float((predictions == np.asarray(evaluation["label"])).mean())
    assert accuracy == pytest.approx(metrics["eval_top1_accuracy"], abs=1.5 / len(evaluation))  # the trained model
