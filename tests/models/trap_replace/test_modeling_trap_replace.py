"""Trap and Replace: the transformers-model contract (both stages), shapes, the stage-1 loss, and the replace step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoModel, AutoModelForImageClassification

from hfvision.models.trap_replace import (
    TrapReplaceConfig,
    TrapReplaceForImageClassification,
    TrapReplaceModel,
    total_variation,
)
from tests.models.common import ModelCommonTests

IMAGE_SIZE = 16  # a multiple of the tiny preset's stem stride (2)


class TrapReplaceModelTester:
    batch_size = 3
    num_labels = 4

    def __init__(self, head_replaced: bool = False) -> None:
        self.head_replaced = head_replaced

    def get_config(self, **overrides) -> TrapReplaceConfig:
        overrides = {"num_labels": self.num_labels, "head_replaced": self.head_replaced, **overrides}
        return TrapReplaceConfig.from_preset("trap-replace-tiny", **overrides)

    def prepare_inputs(self, model_class: type) -> dict:
        generator = torch.Generator().manual_seed(0)
        return {"pixel_values": torch.rand(self.batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)}

    def slice_inputs(self, inputs: dict, index: int) -> dict:
        return {name: value[index : index + 1] for name, value in inputs.items()}

    def compared(self, outputs, model_class: type) -> torch.Tensor:
        if model_class is TrapReplaceModel:
            return outputs.last_hidden_state.flatten(1)
        if outputs.reconstruction is None:
            return outputs.logits
        return torch.cat([outputs.logits, outputs.reconstruction.flatten(1)], dim=1)

    def recorded(self, outputs, model_class: type) -> list[tuple]:
        return []  # convolutional: no attentions; hidden states are checked below

    def loss_kwargs(self, model_class: type) -> dict:
        if model_class is TrapReplaceModel:
            return {}
        return {"labels": torch.tensor([0, 3, 1])}


class HiddenStatesCheck:
    def test_hidden_states_and_attentions_with_gradients(self):
        """A CNN has no attentions; the stem's hidden states (input layer + every stem block) carry gradients."""
        for model_class in self.all_model_classes:
            model = self.build(model_class).train()
            for from_config in (False, True):
                model.config.output_hidden_states = from_config
                kwargs = {} if from_config else {"output_hidden_states": True}
                hidden_states = model(**self.inputs(model_class), **kwargs).hidden_states
                assert len(hidden_states) == model.config.stem_end_block + 1
                if model.config.head_replaced and model_class is not TrapReplaceModel:
                    continue  # the frozen stem has no gradient path to its input layer
                hidden_states[0].retain_grad()
                hidden_states[-1].pow(2).sum().backward()
                assert hidden_states[0].grad is not None and hidden_states[0].grad.abs().sum() > 0
            model.config.output_hidden_states = False


class TestTrapReplaceStage1(HiddenStatesCheck, ModelCommonTests):
    model_tester = TrapReplaceModelTester(head_replaced=False)
    all_model_classes = (TrapReplaceModel, TrapReplaceForImageClassification)


class TestTrapReplaceStage2(HiddenStatesCheck, ModelCommonTests):
    """A replaced model (`head_replaced=True`): an ordinary classifier with a frozen stem."""

    model_tester = TrapReplaceModelTester(head_replaced=True)
    all_model_classes = (TrapReplaceModel, TrapReplaceForImageClassification)


# --- the paper's network -------------------------------------------------------------------------------------------


def paper_model(**overrides) -> TrapReplaceForImageClassification:
    torch.manual_seed(0)
    config = TrapReplaceConfig.from_preset("trap-replace-wrn-16-1", num_labels=10, **overrides)
    return TrapReplaceForImageClassification(config)


def test_wrn_16_1_shapes_and_ranges():
    """Digest 3d: stem (B, 64, 8, 8), logits (B, 10), reconstruction (B, C, 32, 32) in [0, 1]; 0.21 M parameters
    with one input channel (the Fashion-MNIST plan)."""
    model = paper_model().eval()
    pixel_values = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values)
        stem = model.trap_replace(pixel_values).last_hidden_state
    assert stem.shape == (2, 64, 8, 8)
    assert outputs.logits.shape == (2, 10)
    assert outputs.reconstruction.shape == (2, 3, 32, 32)
    assert outputs.reconstruction.min() >= 0 and outputs.reconstruction.max() <= 1
    gray = paper_model(num_channels=1)
    assert 0.20e6 < sum(parameter.numel() for parameter in gray.parameters()) < 0.22e6
    # WRN quirk: blocks 3 and 5 change the width and have no (discarded) first BatchNorm, blocks 1, 2, 4, 6 do
    blocks = [*model.trap_replace.blocks, *model.trap_head.blocks]
    assert [block.norm1 is not None for block in blocks] == [True, True, False, True, False, True]


def test_stage1_loss_is_ce_plus_weighted_mse_and_tv():
    model = paper_model(reconstruction_weight=10.0, tv_weight=1.0).eval()
    pixel_values, labels = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values, labels=labels)
    ce = F.cross_entropy(outputs.logits, labels)
    mse = F.mse_loss(outputs.reconstruction, pixel_values)
    rec = outputs.reconstruction
    tv = ((rec[:, :, 1:] - rec[:, :, :-1]).pow(2).sum() + (rec[..., 1:] - rec[..., :-1]).pow(2).sum()) / rec.numel()
    torch.testing.assert_close(outputs.classification_loss, ce)
    torch.testing.assert_close(outputs.reconstruction_loss, mse)
    torch.testing.assert_close(outputs.tv_loss, tv)
    torch.testing.assert_close(outputs.loss, ce + 10 * mse + tv)
    # lambda = mu = 0 (the no-bait ablation / normal training): only the classification loss is left
    model.config.reconstruction_weight = model.config.tv_weight = 0.0
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=pixel_values, labels=labels).loss, ce)


def test_total_variation_by_hand():
    images = torch.tensor([[[[0.0, 1.0], [1.0, 3.0]]]])  # vertical diffs 1, 2; horizontal 1, 2
    assert total_variation(images).item() == pytest.approx((1 + 4 + 1 + 4) / 4)
    assert total_variation(torch.full((2, 3, 5, 5), 0.3)).item() == 0


def test_reconstruction_target_is_denormalised():
    model = paper_model(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]).eval()
    images = torch.rand(2, 3, 32, 32)
    normalised = (images - 0.5) / 0.25
    torch.testing.assert_close(model.reconstruction_target(normalised), images)


# --- stage 2 -------------------------------------------------------------------------------------------------------


def stem_state(model: TrapReplaceForImageClassification) -> dict[str, torch.Tensor]:
    """Every stem parameter and buffer (BatchNorm running statistics and batch counters included)."""
    return {name: tensor.detach().clone() for name, tensor in model.trap_replace.state_dict().items()}


def train_steps(model: torch.nn.Module, steps: int = 3, learning_rate: float = 0.03) -> None:
    """A few Adam steps over *all* parameters (weight decay on), in train mode, on random data."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        pixel_values = torch.rand(8, model.config.num_channels, 32, 32, generator=generator)
        labels = torch.randint(0, model.config.num_labels, (8,), generator=generator)
        model(pixel_values=pixel_values, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_stage2_leaves_the_stem_bit_identical():
    """Digest 3d/3e: after `replace_head`, optimiser steps in train mode change the new head only; every stem
    parameter *and* BatchNorm statistic stays bit-identical (frozen via requires_grad and eval mode)."""
    model = paper_model()
    train_steps(model, steps=1)  # some stage-1 training first, so the stem is not at its initialisation
    model.replace_head()
    before = stem_state(model)
    head_before = {name: tensor.clone() for name, tensor in model.replacement_head.state_dict().items()}
    train_steps(model)
    assert model.training and not model.trap_replace.training
    after = stem_state(model)
    assert before.keys() == after.keys() and any("running_mean" in name for name in before)
    for name in before:
        assert torch.equal(before[name], after[name]), name
    changed = [name for name, tensor in model.replacement_head.state_dict().items() if "weight" in name]
    assert all(not torch.equal(head_before[name], model.replacement_head.state_dict()[name]) for name in changed)


def test_stage1_training_moves_the_stem_negative_control():
    """The control for the test above: without `replace_head` the same steps change stem weights and statistics."""
    model = paper_model()
    before = stem_state(model)
    train_steps(model)
    after = stem_state(model)
    assert not torch.equal(before["embeddings.convolution.weight"], after["embeddings.convolution.weight"])
    assert not torch.equal(before["blocks.0.norm1.running_mean"], after["blocks.0.norm1.running_mean"])


def test_replace_head_drops_trap_head_and_decoder_and_starts_fresh():
    model = paper_model()
    trap_weight = model.trap_head.classifier.weight.detach().clone()
    returned = model.replace_head(num_labels=7)
    assert returned is model and model.config.head_replaced and model.config.num_labels == 7
    assert not hasattr(model, "trap_head") and not hasattr(model, "decoder")
    assert not any(name.startswith(("trap_head", "decoder")) for name in model.state_dict())
    assert model.replacement_head.classifier.weight.shape == (7, 64)
    assert not torch.equal(model.replacement_head.classifier.weight[:7, :], trap_weight[:7, :])
    dropouts = [module.p for module in model.replacement_head.modules() if isinstance(module, torch.nn.Dropout)]
    assert dropouts == [0.5]  # the official aux head: one block with dropout 0.5 inside
    assert all(not parameter.requires_grad for parameter in model.trap_replace.parameters())
    assert all(parameter.requires_grad for parameter in model.replacement_head.parameters())
    with pytest.raises(ValueError, match="already"):
        model.replace_head()
    with pytest.raises(ValueError, match="num_labels"):
        paper_model().replace_head(num_labels=0)


def test_replaced_checkpoint_is_an_ordinary_classifier(tmp_path):
    """After replacement `save_pretrained` gives stem + new head only; the Auto classes load it as such, and a
    stage-1 checkpoint loads into a stage-2 config with only the new head missing (the official strict=False)."""
    model = paper_model()
    model.save_pretrained(tmp_path / "stage1")
    model.replace_head()
    model.eval().save_pretrained(tmp_path / "stage2")
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "stage2").eval()
    assert loaded.config.head_replaced and not hasattr(loaded, "decoder")
    pixel_values = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=pixel_values).logits, model(pixel_values=pixel_values).logits)
    assert loaded(pixel_values=pixel_values).reconstruction is None
    assert all(not parameter.requires_grad for parameter in loaded.trap_replace.parameters())
    config = TrapReplaceConfig.from_pretrained(tmp_path / "stage1", head_replaced=True)
    _, info = TrapReplaceForImageClassification.from_pretrained(
        tmp_path / "stage1", config=config, output_loading_info=True
    )
    assert info["missing_keys"] and all(name.startswith("replacement_head.") for name in info["missing_keys"])
    assert {name.split(".")[0] for name in info["unexpected_keys"]} == {"trap_head", "decoder"}
    stem = AutoModel.from_pretrained(tmp_path / "stage2")
    assert isinstance(stem, TrapReplaceModel)


# --- bad inputs ----------------------------------------------------------------------------------------------------


def test_bad_pixel_values_name_the_argument():
    model = paper_model().eval()
    with pytest.raises(ValueError, match="pixel_values"):
        model(pixel_values=torch.rand(2, 1, 32, 32))  # wrong channel count
    with pytest.raises(ValueError, match="stem_stride"):
        model(pixel_values=torch.rand(2, 3, 30, 30))  # the decoder cannot redraw a 30x30 image
    with pytest.raises(ValueError, match="pixel_values"):
        model(pixel_values=torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8))
    with pytest.raises(ValueError, match="pixel_values"):
        model(pixel_values=torch.full((1, 3, 32, 32), float("nan")))
    model.replace_head()
    assert model(pixel_values=torch.rand(1, 3, 30, 30)).logits.shape == (1, 10)  # stage 2: any size


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"backbone": "vit"}, "backbone"),
        ({"stem_end_block": 7}, "stem_end_block"),
        ({"stem_end_block": 4}, "decoder"),  # a stride-2 stem needs decoder_strides [2, 1], not [2, 2]
        ({"decoder_strides": [2]}, "decoder_strides"),
        ({"decoder_activations": ["gelu"]}, "decoder_activations"),
        ({"reconstruction_weight": -1.0}, "reconstruction_weight"),
        ({"head_dropout": 1.0}, "head_dropout"),
        ({"image_mean": [0.5]}, "image_mean"),
        ({"hidden_sizes": [16, 16, 64]}, "hidden_sizes"),
    ],
)
def test_bad_configs_raise(overrides, match):
    """Config errors name the field (huggingface_hub's strict dataclasses wrap the ValueError)."""
    with pytest.raises((ValueError, StrictDataclassClassValidationError), match=match):
        TrapReplaceConfig.from_preset("trap-replace-wrn-16-1", **overrides)
