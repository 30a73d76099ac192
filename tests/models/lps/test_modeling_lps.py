"""LPS-ResNet: the transformers-model contract, the layers, and the paper's shift properties (at init, eval mode)."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

from hfvision.models.lps import (
    LearnablePolyphaseDownsample,
    LearnablePolyphaseUpsample,
    LpsForSemanticSegmentation,
    LpsResNetConfig,
    LpsResNetForImageClassification,
    LpsResNetModel,
    gumbel_softmax_sample,
    polyphase_components,
)
from tests.models.common import ModelCommonTests

IMAGE_SIZE = 16  # a multiple of the tiny preset's total stride (4) and of the ImageNet-stem variant's (16)


def all_circular_shifts(pixel_values: torch.Tensor, period: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Every roll (dy, dx) in [0, period)^2 of one image `(1, C, H, W)`, stacked on the batch axis."""
    shifts = [(dy, dx) for dy in range(period) for dx in range(period)]
    return torch.cat([torch.roll(pixel_values, shift, dims=(2, 3)) for shift in shifts]), shifts


class LpsResNetModelTester:
    batch_size = 3
    num_labels = 4

    def get_config(self, **overrides) -> LpsResNetConfig:
        return LpsResNetConfig.from_preset("lps-resnet18-tiny", num_labels=self.num_labels, **overrides)

    def prepare_inputs(self, model_class: type) -> dict:
        generator = torch.Generator().manual_seed(0)
        return {"pixel_values": torch.randn(self.batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)}

    def slice_inputs(self, inputs: dict, index: int) -> dict:
        return {name: value[index : index + 1] for name, value in inputs.items()}

    def compared(self, outputs, model_class: type) -> torch.Tensor:
        if model_class is LpsResNetModel:
            return outputs.pooler_output
        return outputs.logits.flatten(1)

    def recorded(self, outputs, model_class: type) -> list[tuple]:
        return []  # convolutional: no attentions; hidden states are checked by the model's own test

    def loss_kwargs(self, model_class: type) -> dict:
        generator = torch.Generator().manual_seed(1)
        if model_class is LpsForSemanticSegmentation:
            return {
                "labels": torch.randint(
                    0, self.num_labels, (self.batch_size, IMAGE_SIZE, IMAGE_SIZE), generator=generator
                )
            }
        return {"labels": torch.tensor([0, 3, 1])}


class TestLpsResNetModel(ModelCommonTests):
    model_tester = LpsResNetModelTester()
    all_model_classes = (LpsResNetModel, LpsResNetForImageClassification, LpsForSemanticSegmentation)

    # --- common checks that do not apply to a convolutional network ----------------------------------------------
    def test_hidden_states_and_attentions_with_gradients(self):
        """A CNN has no attentions; hidden states (stem + every stage) with gradients are checked here instead."""
        for model_class in self.all_model_classes:
            model = self.build(model_class).train()
            for from_config in (False, True):
                model.config.output_hidden_states = from_config
                kwargs = {} if from_config else {"output_hidden_states": True}
                hidden_states = model(**self.inputs(model_class), **kwargs).hidden_states
                assert len(hidden_states) == len(model.config.depths) + 1
                assert [state.shape[1] for state in hidden_states[1:]] == model.config.hidden_sizes
                hidden_states[0].retain_grad()
                hidden_states[-1].pow(2).sum().backward()
                assert hidden_states[0].grad is not None and hidden_states[0].grad.abs().sum() > 0
                model.zero_grad()
            model.config.output_hidden_states = False
            assert model(**self.inputs(model_class)).hidden_states is None

    def test_every_trainable_parameter_gets_a_gradient(self):
        """As the common test; the base model has no loss, so its pooled features' norm stands in."""
        for model_class in self.all_model_classes:
            model = self.build(model_class).train()
            inputs = self.inputs(model_class)
            if model_class is LpsResNetModel:
                model(**inputs).pooler_output.pow(2).sum().backward()
            else:
                model(**inputs, **self.model_tester.loss_kwargs(model_class)).loss.backward()
            missing = [
                name for name, param in model.named_parameters() if param.grad is None or not param.grad.abs().sum() > 0
            ]
            assert not missing, missing

    # --- shapes and outputs ---------------------------------------------------------------------------------------
    def test_output_shapes(self):
        tester = self.model_tester
        inputs = self.inputs(LpsResNetModel)
        base = self.build(LpsResNetModel)(**inputs)
        config = tester.get_config()
        side = IMAGE_SIZE // config.total_stride
        assert base.last_hidden_state.shape == (3, config.hidden_sizes[-1], side, side)
        assert base.pooler_output.shape == (3, config.hidden_sizes[-1])
        assert len(base.phase_probs) == len(base.phase_logits) == config.num_downsampling_layers == 2
        for probs in base.phase_probs:  # eval: one-hot decisions
            assert (
                probs.shape == (3, 4)
                and torch.equal(probs.sum(-1), torch.ones(3))
                and set(probs.unique().tolist()) <= {0.0, 1.0}
            )
        classifier = self.build(LpsResNetForImageClassification)
        assert classifier(**inputs).logits.shape == (3, tester.num_labels)
        segmenter = self.build(LpsForSemanticSegmentation)
        outputs = segmenter(**inputs, **tester.loss_kwargs(LpsForSemanticSegmentation))
        assert outputs.logits.shape == (3, tester.num_labels, IMAGE_SIZE, IMAGE_SIZE)
        assert next(iter(outputs.keys())) == "loss" and torch.isfinite(outputs.loss)

    def test_problem_types(self):
        for problem_type, labels in (
            ("single_label_classification", torch.tensor([0, 1, 2])),
            ("multi_label_classification", torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1]])),
            ("regression", torch.randn(3, 4)),
        ):
            model = self.build(
                LpsResNetForImageClassification, config=self.model_tester.get_config(problem_type=problem_type)
            )
            assert torch.isfinite(model(**self.inputs(LpsResNetForImageClassification), labels=labels).loss)

    def test_bad_inputs_raise_clear_errors(self):
        model = self.build(LpsResNetForImageClassification)
        with pytest.raises(ValueError, match=r"pixel_values.*shape"):
            model(pixel_values=torch.randn(1, 1, IMAGE_SIZE, IMAGE_SIZE))
        with pytest.raises(ValueError, match="labels"):
            self.build(LpsForSemanticSegmentation)(
                **self.inputs(LpsForSemanticSegmentation), labels=torch.zeros(3, 4, 4)
            )

    def test_base_checkpoint_loads_into_the_heads_and_back(self, tmp_path):
        base = self.build(LpsResNetModel)
        base.save_pretrained(tmp_path / "base")
        for head_class in (LpsResNetForImageClassification, LpsForSemanticSegmentation):
            head = head_class.from_pretrained(tmp_path / "base")
            assert head.base_model is head.lps_resnet
            for name, tensor in base.state_dict().items():
                assert torch.equal(head.lps_resnet.state_dict()[name], tensor), name
        head.save_pretrained(tmp_path / "head")
        back = LpsResNetModel.from_pretrained(tmp_path / "head")
        for name, tensor in base.state_dict().items():
            assert torch.equal(back.state_dict()[name], tensor), name

    def test_presets_match_the_reference_resnets(self):
        """With `stride` sampling the presets are torchvision's ResNets: same parameter counts (11,689,512 and
        25,557,032 with 1000 classes); LPS adds only the scoring networks."""
        expected = {"lps-resnet18": 11_689_512, "lps-resnet50": 25_557_032}
        for preset, count in expected.items():
            with torch.device("meta"):
                model = LpsResNetForImageClassification(
                    LpsResNetConfig.from_preset(preset, downsample="stride", num_labels=1000)
                )
            assert sum(p.numel() for p in model.parameters()) == count, preset
        resnet18 = LpsResNetConfig.from_preset("lps-resnet18")
        assert (resnet18.depths, resnet18.total_stride, resnet18.padding_mode) == ([2, 2, 2, 2], 32, "circular")
        assert LpsResNetConfig.from_preset("lps-resnet34").depths == [3, 4, 6, 3]
        assert LpsResNetConfig.from_preset("lps-resnet18-cifar").total_stride == 8
        with pytest.raises(ValueError, match="Unknown LPS preset"):
            LpsResNetConfig.from_preset("lps-resnet152")
        with pytest.raises(StrictDataclassClassValidationError, match="downsample"):
            LpsResNetConfig(downsample="maxpool")
        with pytest.raises(StrictDataclassClassValidationError, match="filter sizes"):
            LpsResNetConfig(lowpass_filter_size=9)

    # --- the layers -----------------------------------------------------------------------------------------------
    def test_polyphase_split_is_the_strided_slices(self):
        hidden_states = torch.randn(2, 3, 6, 8)
        components = polyphase_components(hidden_states)
        assert components.shape == (2, 4, 3, 3, 4)
        for k in range(4):
            assert torch.equal(components[:, k], hidden_states[..., k // 2 :: 2, k % 2 :: 2])

    def test_lpd_logits_permute_under_a_one_pixel_roll(self):
        """Digest 2d.1: the 4 scores permute exactly as the components do."""
        torch.manual_seed(0)
        layer = LearnablePolyphaseDownsample(channels=5).eval()
        hidden_states = torch.randn(2, 5, 12, 12)
        with torch.no_grad():
            logits = layer(hidden_states).phase_logits
            for shift, order in (((0, 1), [1, 0, 3, 2]), ((1, 0), [2, 3, 0, 1]), ((1, 1), [3, 2, 1, 0])):
                rolled = layer(torch.roll(hidden_states, shift, dims=(2, 3))).phase_logits
                torch.testing.assert_close(rolled, logits[:, order], rtol=0, atol=1e-6)

    def test_lpu_after_lpd_is_shift_equivariant(self):
        """Digest 2d.2: LPU(LPD(roll(x, s))) == roll(LPU(LPD(x)), s), exactly."""
        torch.manual_seed(0)
        downsample, upsample = LearnablePolyphaseDownsample(channels=4).eval(), LearnablePolyphaseUpsample()
        hidden_states = torch.randn(2, 4, 12, 12)
        with torch.no_grad():
            sample = downsample(hidden_states)
            reference = upsample(sample.hidden_states, sample.phase_probs)
            # the upsampler puts each value back where the downsampler took it from; the rest is 0
            kept = torch.zeros_like(hidden_states)
            for b, phase in enumerate(sample.phase.tolist()):
                kept[b, :, phase // 2 :: 2, phase % 2 :: 2] = hidden_states[b, :, phase // 2 :: 2, phase % 2 :: 2]
            assert torch.equal(reference, kept)
            for shift in ((1, 1), (1, 0), (0, 1), (3, -5)):
                rolled = downsample(torch.roll(hidden_states, shift, dims=(2, 3)))
                shifted = upsample(rolled.hidden_states, rolled.phase_probs)
                assert torch.equal(shifted, torch.roll(reference, shift, dims=(2, 3))), shift

    def test_selection_in_training_and_eval(self):
        torch.manual_seed(0)
        layer = LearnablePolyphaseDownsample(channels=3, gumbel_tau=1.0)
        hidden_states = torch.randn(4, 3, 8, 8)
        first = layer(hidden_states, generator=torch.Generator().manual_seed(5))
        again = layer(hidden_states, generator=torch.Generator().manual_seed(5))
        other = layer(hidden_states, generator=torch.Generator().manual_seed(6))
        assert torch.equal(first.phase_probs, again.phase_probs)  # randomness is injectable
        assert not torch.equal(first.phase_probs, other.phase_probs)
        torch.testing.assert_close(first.phase_probs.sum(-1), torch.ones(4))
        assert (first.phase_probs < 1).all()  # the paper's soft sample mixes the components
        layer.straight_through = True
        hard = layer(hidden_states, generator=torch.Generator().manual_seed(5))
        assert set(hard.phase_probs.detach().unique().tolist()) <= {0.0, 1.0}
        hard.hidden_states.sum().backward()
        assert layer.logits_model.conv1.weight.grad.abs().sum() > 0  # straight-through keeps a gradient
        layer.eval()
        decision = layer(hidden_states)
        assert torch.equal(decision.phase, decision.phase_logits.argmax(-1))
        assert torch.equal(decision.hidden_states, polyphase_components(hidden_states)[torch.arange(4), decision.phase])

    def test_gumbel_sampling_follows_the_softmax(self):
        logits = torch.tensor([[2.0, 0.0, -1.0, 0.5]]).expand(20000, 4)
        samples = gumbel_softmax_sample(logits, tau=1.0, hard=True, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(samples.mean(0), logits[0].softmax(-1), rtol=0, atol=0.015)

    def test_gradients_reach_the_polyphase_logits_network_in_training(self):
        for model_class in (LpsResNetForImageClassification, LpsForSemanticSegmentation):
            model = self.build(model_class).train()
            inputs = {**self.inputs(model_class), **self.model_tester.loss_kwargs(model_class)}
            model(**inputs, generator=torch.Generator().manual_seed(0)).loss.backward()
            scorers = [m for m in model.modules() if isinstance(m, LearnablePolyphaseDownsample)]
            assert len(scorers) == 2
            for scorer in scorers:
                for name, param in scorer.logits_model.named_parameters():
                    assert param.grad is not None and param.grad.abs().sum() > 0, name

    def test_gumbel_tau_is_a_saved_buffer(self, tmp_path):
        model = self.build(LpsResNetForImageClassification, config=self.model_tester.get_config(gumbel_tau=0.5))
        taus = [m.gumbel_tau for m in model.modules() if isinstance(m, LearnablePolyphaseDownsample)]
        assert [float(tau) for tau in taus] == [0.5, 0.5]
        model.set_gumbel_tau(0.05)
        model.save_pretrained(tmp_path)
        reloaded = LpsResNetForImageClassification.from_pretrained(tmp_path)
        taus = [float(m.gumbel_tau) for m in reloaded.modules() if isinstance(m, LearnablePolyphaseDownsample)]
        assert taus == pytest.approx([0.05, 0.05])
        with pytest.raises(ValueError, match="tau"):
            model.set_gumbel_tau(0.0)

    # --- the paper's properties -----------------------------------------------------------------------------------
    def max_logit_change_over_all_shifts(self, model_class: type, **overrides) -> float:
        model = self.build(model_class, config=self.model_tester.get_config(**overrides))
        image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(3))
        shifted, _ = all_circular_shifts(image, IMAGE_SIZE)
        with torch.no_grad():
            logits = model(pixel_values=shifted).logits
        return float((logits - logits[:1]).abs().max())

    @pytest.mark.parametrize(
        "overrides",
        [
            {},
            {"stem": "imagenet"},
            {"layer_type": "bottleneck", "hidden_sizes": [8, 16, 32]},
            {"lowpass_filter_size": 3},
            {"downsample": "aps"},
        ],
        ids=["lps", "lps-imagenet-stem", "lps-bottleneck", "lps-lpf", "aps"],
    )
    def test_classifier_is_invariant_to_every_circular_shift(self, overrides):
        """Digest 2d.3: identical logits (1e-5) for all 256 circular shifts of a 16 x 16 input."""
        assert self.max_logit_change_over_all_shifts(LpsResNetForImageClassification, **overrides) < 1e-5

    def test_baselines_are_not_invariant(self):
        """Digest 2d.4: plain striding, BlurPool and zero padding all change the logits under circular shifts."""
        stride = self.max_logit_change_over_all_shifts(LpsResNetForImageClassification, downsample="stride")
        blurpool = self.max_logit_change_over_all_shifts(LpsResNetForImageClassification, downsample="blurpool")
        zero_pad = self.max_logit_change_over_all_shifts(LpsResNetForImageClassification, padding_mode="zeros")
        assert min(stride, blurpool, zero_pad) > 1e-3, (stride, blurpool, zero_pad)

    @pytest.mark.parametrize("stem", ["cifar", "imagenet"])
    def test_segmentation_is_equivariant_to_every_circular_shift(self, stem):
        """Digest 2d.5: segmenting a shifted image gives the shifted segmentation (the bilinear decoder does not)."""
        image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(4))
        shifted, shifts = all_circular_shifts(image, IMAGE_SIZE)
        errors = {}
        for upsample in ("lpu", "bilinear"):
            model = self.build(
                LpsForSemanticSegmentation, config=self.model_tester.get_config(stem=stem, decoder_upsample=upsample)
            )
            with torch.no_grad():
                logits = model(pixel_values=shifted).logits
            expected = torch.cat([torch.roll(logits[:1], shift, dims=(2, 3)) for shift in shifts])
            errors[upsample] = float((logits - expected).abs().max())
        assert errors["lpu"] < 1e-5 and errors["bilinear"] > 1e-3, errors

    def test_training_mode_is_stochastic_and_eval_is_not(self):
        """Digest 2d.4: Gumbel sampling makes two training forwards differ; eval is exact argmax."""
        model = self.build(LpsResNetForImageClassification)
        inputs = self.inputs(LpsResNetForImageClassification)
        model.train()
        with torch.no_grad():
            first = model(**inputs, generator=torch.Generator().manual_seed(0)).logits
            second = model(**inputs, generator=torch.Generator().manual_seed(1)).logits
            repeat = model(**inputs, generator=torch.Generator().manual_seed(0)).logits
        assert not torch.allclose(first, second) and torch.equal(first, repeat)
