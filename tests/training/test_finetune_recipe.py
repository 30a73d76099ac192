"""The fine-tuning recipe of training/finetune_image_classification.py (ConvMAE / MAE `main_finetune.py`): layer-wise
learning-rate decay, mixup / cutmix with soft targets, drop path through the config, and MAE's mean-pooled ViT head.

Expected values are written from the official rules (ConvMAE `util/lr_decay.py`, timm's `Mixup` in batch mode, MAE's
`models_vit.py` with `global_pool`), not read back from the script's own helpers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    ResNetConfig,
    ResNetForImageClassification,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
    ViTMAEForPreTraining,
)

from hfvision.models.mcmae import (
    McMaeConfig,
    McMaeForImageClassification,
    McMaeForPreTraining,
    McMaeImageProcessor,
    matching_vitmae_config,
)
from tests.training.conftest import run_finetune

RECIPE_CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "finetune_mcmae_recipe.yaml"
NUM_LABELS = 6  # the synthetic data set's colours
DECAY = 0.65
BASE_LR = 1e-3
WEIGHT_DECAY = 0.05


@pytest.fixture(scope="module")
def mcmae_checkpoint(tmp_path_factory) -> Path:
    """A saved tiny MCMAE pretraining model (the benchmark's starting point) with its processor."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mcmae-tiny")
    McMaeForPreTraining(McMaeConfig.from_preset("mcmae-tiny")).save_pretrained(path)
    McMaeImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vitmae_checkpoint(tmp_path_factory) -> Path:
    """A saved tiny ViTMAE pretraining model (matched to mcmae-tiny, 3 blocks) with a ViT processor."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vitmae-tiny")
    ViTMAEForPreTraining(matching_vitmae_config(McMaeConfig.from_preset("mcmae-tiny"))).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def recipe_args(*extra: str) -> list[str]:
    return [
        "--dataset", "synthetic", "--max_train_samples", "64", "--max_eval_samples", "32", "--max_steps", "4",
        "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32", "--learning_rate", "1e-3",
        "--save_strategy", "no", "--seed", "0", "--use_cpu", "--report_to", "none", *extra,
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Layer-wise learning-rate decay
# ---------------------------------------------------------------------------------------------------------------


def expected_mcmae_depth(name: str) -> int:
    """ConvMAE's `get_layer_id_for_vit` in our names for mcmae-tiny (2 transformer blocks, so 3 is the top)."""
    if name.startswith(("mcmae.conv_stages.", "mcmae.embeddings.")):  # patch_embed1-4, blocks1-2, pos_embed
        return 0
    if name.startswith("mcmae.layers.0."):
        return 1
    if name.startswith("mcmae.layers.1."):
        return 2
    assert name.startswith(("mcmae.pooler.", "classifier.")), name  # fc_norm, head
    return 3


def expected_vit_depth(name: str) -> int:
    """MAE's `get_layer_id_for_vit` in transformers' ViT names, 3 blocks (4 is the top)."""
    if name.startswith("vit.embeddings."):  # cls_token, pos_embed, patch_embed
        return 0
    for block in range(3):
        if name.startswith(f"vit.layers.{block}."):
            return block + 1
    assert name.startswith(("fc_norm.", "classifier.")), name
    return 4


def group_of_each_parameter(model: torch.nn.Module, groups: list[dict]) -> dict[str, dict]:
    by_id = {id(parameter): group for group in groups for parameter in group["params"]}
    assert sum(len(group["params"]) for group in groups) == len(by_id)  # no parameter in two groups
    return {name: by_id[id(parameter)] for name, parameter in model.named_parameters() if parameter.requires_grad}


def test_layer_decay_groups_mcmae(finetune):
    model = McMaeForImageClassification(McMaeConfig.from_preset("mcmae-tiny", num_labels=NUM_LABELS))
    groups = finetune.layer_decay_parameter_groups(model, BASE_LR, WEIGHT_DECAY, DECAY)
    assigned = group_of_each_parameter(model, groups)
    assert set(assigned) == {name for name, _ in model.named_parameters()}  # every trainable parameter, once
    for name, group in assigned.items():
        assert group["lr"] == pytest.approx(BASE_LR * DECAY ** (3 - expected_mcmae_depth(name))), name
        parameter = model.get_parameter(name)
        no_decay = parameter.ndim == 1 or name == "mcmae.embeddings.position_embeddings"
        assert group["weight_decay"] == (0.0 if no_decay else WEIGHT_DECAY), name
    # the conv stages train at decay^3 of the head's rate, the first transformer block at decay^2
    lrs = {name: group["lr"] for name, group in assigned.items()}
    assert lrs["mcmae.conv_stages.0.patch_embeddings.projection.weight"] == pytest.approx(BASE_LR * DECAY**3)
    assert lrs["mcmae.layers.0.mlp.fc1.weight"] == pytest.approx(BASE_LR * DECAY**2)
    assert lrs["classifier.weight"] == BASE_LR


def test_layer_decay_groups_vit_mean_pooling(finetune):
    config = ViTConfig(
        hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=8
    )
    model = finetune.ViTMeanPoolingForImageClassification(config)
    groups = finetune.layer_decay_parameter_groups(model, BASE_LR, WEIGHT_DECAY, DECAY)
    for name, group in group_of_each_parameter(model, groups).items():
        assert group["lr"] == pytest.approx(BASE_LR * DECAY ** (4 - expected_vit_depth(name))), name
        no_decay = model.get_parameter(name).ndim == 1 or name.endswith(("cls_token", "position_embeddings"))
        assert group["weight_decay"] == (0.0 if no_decay else WEIGHT_DECAY), name


def test_trainer_optimizer_uses_the_groups_and_the_scheduler_keeps_their_ratios(finetune, tmp_path):
    model = McMaeForImageClassification(McMaeConfig.from_preset("mcmae-tiny", num_labels=NUM_LABELS))
    args = TrainingArguments(
        tmp_path, learning_rate=BASE_LR, weight_decay=WEIGHT_DECAY, warmup_steps=2, use_cpu=True, report_to="none"
    )
    trainer = finetune.ImageClassificationTrainer(model=model, args=args, layer_decay=DECAY)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    peak = {id(group["params"][0]): group["initial_lr"] for group in trainer.optimizer.param_groups}  # (warm-up: 0)
    assert sorted(set(peak.values())) == pytest.approx([BASE_LR * DECAY**power for power in (3, 2, 1, 0)])
    for _ in range(5):  # past the warm-up, into the linear decay
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    factor = trainer.optimizer.param_groups[0]["lr"] / trainer.optimizer.param_groups[0]["initial_lr"]
    assert 0 < factor < 1
    for group in trainer.optimizer.param_groups:
        assert group["lr"] == pytest.approx(peak[id(group["params"][0])] * factor)
    # without layer decay the Trainer's own two groups, all at the base rate
    plain = finetune.ImageClassificationTrainer(model=model, args=args)
    assert {group["lr"] for group in plain.create_optimizer().param_groups} == {BASE_LR}


def test_layer_decay_refuses_models_without_a_depth_rule(finetune):
    model = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1]))
    with pytest.raises(ValueError, match="--layer_decay supports"):
        finetune.layer_decay_parameter_groups(model, BASE_LR, WEIGHT_DECAY, DECAY)
    with pytest.raises(ValueError, match="--layer_decay must be in"):
        finetune.layer_decay_parameter_groups(model, BASE_LR, WEIGHT_DECAY, 1.5)


# ---------------------------------------------------------------------------------------------------------------
# Mixup / cutmix and the soft-target loss
# ---------------------------------------------------------------------------------------------------------------


def batch(size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    pixel_values = torch.rand(size, 3, 16, 16, generator=generator)  # continuous: every pixel tells its source
    labels = torch.arange(size) % NUM_LABELS
    return pixel_values, labels


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixup_blends_each_sample_with_its_reversed_partner(finetune, smoothing):
    collator = finetune.MixupCutmixCollator(NUM_LABELS, mixup_alpha=0.8, label_smoothing=smoothing)
    pixel_values, labels = batch()
    torch.manual_seed(0)
    mixed, targets = collator.mix(pixel_values, labels)
    assert targets.shape == (8, NUM_LABELS) and torch.allclose(targets.sum(-1), torch.ones(8))
    off = smoothing / NUM_LABELS
    one_hot = F.one_hot(labels, NUM_LABELS).float() * (1 - smoothing) + off
    # the weight of the own label: lam on its own one-hot, 1 - lam on the partner's (labels 0 and 1 of rows 0 / 7)
    lam = ((targets[0] - one_hot[7]) / (one_hot[0] - one_hot[7]))[labels[0]].item()
    assert 0 < lam < 1
    assert torch.allclose(targets, lam * one_hot + (1 - lam) * one_hot.flip(0), atol=1e-6)
    assert torch.allclose(mixed, lam * pixel_values + (1 - lam) * pixel_values.flip(0), atol=1e-6)


def test_cutmix_pastes_one_box_of_the_partner_and_weights_labels_by_area(finetune):
    collator = finetune.MixupCutmixCollator(NUM_LABELS, cutmix_alpha=1.0)
    pixel_values, labels = batch()
    partners = pixel_values.flip(0)
    boxes = 0
    for seed in range(20):
        torch.manual_seed(seed)
        mixed, targets = collator.mix(pixel_values, labels)
        from_partner = (mixed == partners).all(1) & (mixed != pixel_values).all(1)  # (B, H, W)
        assert torch.equal(from_partner | (mixed == pixel_values).all(1), torch.ones_like(from_partner))
        assert torch.equal(from_partner, from_partner[:1].expand_as(from_partner))  # the same box in every sample
        rows, cols = from_partner[0].any(1), from_partner[0].any(0)
        if rows.any():  # a rectangle: its bounding box is all partner pixels
            boxes += 1
            assert from_partner[0].sum() == rows.sum() * cols.sum()
        partner_share = from_partner[0].float().mean().item()
        own = F.one_hot(labels, NUM_LABELS).float()
        assert torch.allclose(targets, (1 - partner_share) * own + partner_share * own.flip(0), atol=1e-6)
        assert torch.allclose(targets.sum(-1), torch.ones(8))
    assert boxes >= 15


def test_switch_between_mixup_and_cutmix_about_half_the_time(finetune):
    collator = finetune.MixupCutmixCollator(NUM_LABELS, mixup_alpha=0.8, cutmix_alpha=1.0)
    pixel_values, labels = batch(4)
    torch.manual_seed(0)
    # mixup changes every pixel of every sample; cutmix leaves pixels outside its box untouched
    cutmix = sum(bool((collator.mix(pixel_values, labels)[0] == pixel_values).any()) for _ in range(200))
    assert 70 <= cutmix <= 130  # Binomial(200, 0.5): 100 ± 3.5 sd


def test_collator_returns_float_targets_and_validates(finetune):
    collator = finetune.MixupCutmixCollator(NUM_LABELS, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    examples = [{"pixel_values": torch.rand(3, 8, 8), "labels": index % NUM_LABELS} for index in range(4)]
    output = collator(examples)
    assert output["pixel_values"].shape == (4, 3, 8, 8) and output["labels"].dtype == torch.float32
    assert torch.allclose(output["labels"].sum(-1), torch.ones(4))
    assert output["labels"].min() >= 0.1 / NUM_LABELS - 1e-7
    with pytest.raises(ValueError, match="not both 0"):
        finetune.MixupCutmixCollator(NUM_LABELS)
    with pytest.raises(ValueError, match="label_smoothing"):
        finetune.MixupCutmixCollator(NUM_LABELS, mixup_alpha=1.0, label_smoothing=1.0)


def test_soft_target_cross_entropy_matches_cross_entropy(finetune):
    logits, labels = torch.randn(5, NUM_LABELS), torch.tensor([0, 3, 5, 1, 1])
    one_hot = F.one_hot(labels, NUM_LABELS).float()
    assert finetune.soft_target_cross_entropy(logits, one_hot) == pytest.approx(F.cross_entropy(logits, labels).item())
    smoothed = one_hot * 0.9 + 0.1 / NUM_LABELS
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1).item()
    assert finetune.soft_target_cross_entropy(logits, smoothed) == pytest.approx(expected, rel=1e-6)


def test_trainer_mixes_training_batches_only_and_takes_soft_loss(finetune, tmp_path):
    model = McMaeForImageClassification(McMaeConfig.from_preset("mcmae-tiny", num_labels=NUM_LABELS)).eval()
    rows = [{"pixel_values": torch.randn(3, 32, 32), "labels": index % NUM_LABELS} for index in range(8)]
    args = TrainingArguments(tmp_path, per_device_train_batch_size=8, per_device_eval_batch_size=8, use_cpu=True)
    args.remove_unused_columns = False
    collator = finetune.MixupCutmixCollator(NUM_LABELS, mixup_alpha=0.8)
    trainer = finetune.ImageClassificationTrainer(
        model=model, args=args, train_dataset=rows, eval_dataset=rows,
        data_collator=finetune.collate, train_collator=collator,
    )  # fmt: skip
    train_batch = next(iter(trainer.get_train_dataloader()))
    eval_batch = next(iter(trainer.get_eval_dataloader()))
    assert train_batch["labels"].shape == (8, NUM_LABELS) and train_batch["labels"].is_floating_point()
    assert eval_batch["labels"].shape == (8,) and eval_batch["labels"].dtype == torch.long
    assert trainer.loss_is_scaled_for_ga is False  # a per-batch mean
    loss = trainer.compute_loss(model, dict(train_batch))
    with torch.no_grad():
        logits = model(pixel_values=train_batch["pixel_values"]).logits
    assert loss.item() == pytest.approx(finetune.soft_target_cross_entropy(logits, train_batch["labels"]).item())
    hard = trainer.compute_loss(model, dict(eval_batch))  # integer labels: the model's own cross-entropy
    assert hard.item() == pytest.approx(model(**eval_batch).loss.item())


# ---------------------------------------------------------------------------------------------------------------
# The script end to end, and MAE's mean-pooled head
# ---------------------------------------------------------------------------------------------------------------


def test_main_runs_the_whole_recipe_on_mcmae(finetune, mcmae_checkpoint, tmp_path):
    args = recipe_args(
        "--layer_decay", "0.65", "--drop_path_rate", "0.1", "--mixup", "0.8", "--cutmix", "1.0",
        "--label_smoothing_factor", "0.1", "--lr_scheduler_type", "cosine",
    )  # fmt: skip
    metrics = run_finetune(finetune, mcmae_checkpoint, tmp_path, args)
    assert metrics["train_loss"] > 0 and 0 <= metrics["eval_top1_accuracy"] <= 1
    assert json.loads((tmp_path / "config.json").read_text())["drop_path_rate"] == 0.1
    saved = json.loads((tmp_path / "training_config.json").read_text())
    assert (saved["layer_decay"], saved["mixup"], saved["cutmix"]) == (0.65, 0.8, 1.0)
    model = McMaeForImageClassification.from_pretrained(tmp_path)
    rates = [layer.drop_path.drop_prob for layer in model.mcmae.layers]
    assert rates[-1] == pytest.approx(0.1)


def test_vit_mean_pooling_head_is_maes_global_pool(finetune, vitmae_checkpoint):
    model_args = finetune.ModelArguments(model_name_or_path=str(vitmae_checkpoint), vitmae_pooling="mean")
    model = finetune.load_model(model_args, [f"class{index}" for index in range(NUM_LABELS)]).eval()
    assert isinstance(model, finetune.ViTMeanPoolingForImageClassification)
    assert model.classifier.weight.std() < 1e-4  # MAE's head init (std 2e-5)
    cls_head = ViTForImageClassification.from_pretrained(vitmae_checkpoint, num_labels=NUM_LABELS).eval()
    for name, parameter in cls_head.vit.named_parameters():  # the encoder loads from the MAE checkpoint
        if not name.startswith("layernorm."):
            assert torch.equal(parameter, model.vit.get_parameter(name)), name
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        blocks_output = cls_head(pixel_values, output_hidden_states=True).hidden_states[-1]  # (B, 1 + N, D), no LN
        expected = model.classifier(model.fc_norm(blocks_output[:, 1:].mean(1)))  # patch tokens only
        assert torch.allclose(model(pixel_values).logits, expected, atol=1e-6)
        loss = model(pixel_values, labels=torch.tensor([0, 4])).loss
        assert loss.item() == pytest.approx(F.cross_entropy(expected, torch.tensor([0, 4])).item(), rel=1e-5)


def test_main_fine_tunes_vitmae_with_mean_pooling(finetune, vitmae_checkpoint, tmp_path):
    metrics = run_finetune(finetune, vitmae_checkpoint, tmp_path, recipe_args("--vitmae_pooling", "mean"))
    assert 0 <= metrics["eval_top1_accuracy"] <= 1
    reloaded = finetune.ViTMeanPoolingForImageClassification.from_pretrained(tmp_path)
    assert reloaded.config.num_labels == NUM_LABELS


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--drop_path_rate", "0.1"], "--drop_path_rate"),
        (["--vitmae_pooling", "max"], "--vitmae_pooling must be"),
    ],
)
def test_bad_recipe_arguments(finetune, vitmae_checkpoint, tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        run_finetune(finetune, vitmae_checkpoint, tmp_path, recipe_args(*extra))


def test_vitmae_pooling_mean_needs_an_mae_checkpoint(finetune, mcmae_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="needs an MAE"):
        run_finetune(finetune, mcmae_checkpoint, tmp_path, recipe_args("--vitmae_pooling", "mean"))


def test_recipe_config_holds_the_papers_recipe(finetune):
    model_args, data_args, training_args = finetune.parse_args([str(RECIPE_CONFIG), "--model_name_or_path", "ckpt"])
    assert (model_args.layer_decay, model_args.drop_path_rate) == (0.65, 0.1)
    assert (data_args.mixup, data_args.cutmix, training_args.label_smoothing_factor) == (0.8, 1.0, 0.1)
    assert (training_args.lr_scheduler_type, training_args.weight_decay) == ("cosine", 0.05)
