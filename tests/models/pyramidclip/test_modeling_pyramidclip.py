"""PyramidCLIP: shapes, the transformers-model contract, the loss and its paper properties."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from hfvision.demo import HIDE_HFVISION
from hfvision.models.pyramidclip import (
    PyramidClipConfig,
    PyramidClipForImageClassification,
    PyramidClipModel,
    PyramidClipTextModel,
    PyramidClipVisionModel,
    softened_contrastive_loss,
)
from hfvision.models.pyramidclip.modeling_pyramidclip import LOSS_TERMS
from tests.models.common import ModelCommonTests


class PyramidClipModelTester:
    batch_size = 3
    seq_length = 7
    num_regions = 4

    def get_config(self, **overrides) -> PyramidClipConfig:
        return PyramidClipConfig.from_preset(
            "pyramidclip-tiny", text_config={"vocab_size": 99, "max_position_embeddings": 16}, num_labels=4, **overrides
        )

    def prepare_inputs(self, model_class: type) -> dict:
        generator = torch.Generator().manual_seed(0)
        config = self.get_config()
        size = config.vision_config.image_size
        pixel_values = torch.randn(self.batch_size, 3, size, size, generator=generator)
        if model_class in (PyramidClipForImageClassification, PyramidClipVisionModel):
            return {"pixel_values": pixel_values}
        input_ids = torch.randint(2, 99, (self.batch_size, self.seq_length), generator=generator)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[1, 4:] = 0  # right padding, as the tokenizer does
        attention_mask[2, 2:] = 0
        if model_class is PyramidClipTextModel:
            return {"input_ids": input_ids, "attention_mask": attention_mask}
        return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}

    def pyramid_inputs(self) -> dict:
        generator = torch.Generator().manual_seed(1)
        config = self.get_config()
        size, roi_dim = config.vision_config.image_size, config.vision_config.roi_feature_dim
        roi_mask = torch.ones(self.batch_size, self.num_regions, dtype=torch.long)
        roi_mask[0, 2:] = 0
        return {
            "pixel_values_local": torch.randn(self.batch_size, 3, size, size, generator=generator),
            "summary_input_ids": torch.randint(2, 99, (self.batch_size, 5), generator=generator),
            "attribute_input_ids": torch.randint(2, 99, (self.batch_size, 4), generator=generator),
            "roi_features": torch.randn(self.batch_size, self.num_regions, roi_dim, generator=generator),
            "roi_mask": roi_mask,
        }

    def slice_inputs(self, inputs: dict, index: int) -> dict:
        sliced = {name: value[index : index + 1] for name, value in inputs.items()}
        if "attention_mask" in sliced:  # drop this sample's padding entirely
            length = int(sliced["attention_mask"].sum())
            sliced["input_ids"], sliced["attention_mask"] = (
                sliced["input_ids"][:, :length],
                sliced["attention_mask"][:, :length],
            )
        return sliced

    def compared(self, outputs, model_class: type) -> torch.Tensor:
        if model_class is PyramidClipForImageClassification:
            return outputs.logits
        if model_class in (PyramidClipTextModel, PyramidClipVisionModel):
            return outputs.pooler_output
        return torch.cat([outputs.image_embeds, outputs.text_embeds], dim=-1)

    def recorded(self, outputs, model_class: type) -> list[tuple]:
        config = self.get_config()
        vision, text = config.vision_config, config.text_config
        if model_class is PyramidClipTextModel:
            return [(outputs.hidden_states, outputs.attentions, text.num_hidden_layers, text.num_attention_heads)]
        if model_class is PyramidClipModel:
            return [
                (outputs.vision_model_output.hidden_states, outputs.vision_model_output.attentions,
                 vision.num_hidden_layers, vision.num_attention_heads),
                (outputs.text_model_output.hidden_states, outputs.text_model_output.attentions,
                 text.num_hidden_layers, text.num_attention_heads),
            ]  # fmt: skip
        return [(outputs.hidden_states, outputs.attentions, vision.num_hidden_layers, vision.num_attention_heads)]

    def loss_kwargs(self, model_class: type) -> dict:
        if model_class is PyramidClipForImageClassification:
            return {"labels": torch.tensor([0, 3, 1])}
        if model_class is PyramidClipModel:
            return {"return_loss": True, **self.pyramid_inputs()}
        return {}  # the towers have no loss


class TestPyramidClipModel(ModelCommonTests):
    model_tester = PyramidClipModelTester()
    all_model_classes = (
        PyramidClipModel,
        PyramidClipForImageClassification,
        PyramidClipTextModel,
        PyramidClipVisionModel,
    )

    def test_every_trainable_parameter_gets_a_gradient(self):
        # the vision tower's ROI projection serves the dual model's ROI branch only, not the tower's forward
        self.all_model_classes = (PyramidClipModel, PyramidClipForImageClassification, PyramidClipTextModel)
        super().test_every_trainable_parameter_gets_a_gradient()

    def test_towers_are_auto_models(self):
        """As CLIP's: `AutoModel.from_config(config.vision_config)` builds the tower, and `main_input_name` of the
        dual model is its first argument."""
        config = self.model_tester.get_config()
        assert type(AutoModel.from_config(config.vision_config)) is PyramidClipVisionModel
        assert type(AutoModel.from_config(config.text_config)) is PyramidClipTextModel
        assert PyramidClipModel.main_input_name == "input_ids"

    def test_output_shapes_and_fields(self):
        model = self.build(PyramidClipModel)
        tester = self.model_tester
        outputs = model(**tester.prepare_inputs(PyramidClipModel), **tester.loss_kwargs(PyramidClipModel))
        batch, dim = tester.batch_size, model.config.projection_dim
        assert outputs.logits_per_image.shape == outputs.logits_per_text.shape == (batch, batch)
        assert outputs.image_embeds.shape == outputs.text_embeds.shape == (batch, dim)
        torch.testing.assert_close(outputs.image_embeds.norm(dim=-1), torch.ones(batch))
        assert next(iter(outputs.keys())) == "loss"
        terms = [getattr(outputs, name) for name in LOSS_TERMS]
        for term in terms:
            assert term.ndim == 0 and torch.isfinite(term) and term > 0
        weights = (1 / 6,) * 6  # lambda = mu = 1/3
        torch.testing.assert_close(outputs.loss, sum(w * t for w, t in zip(weights, terms, strict=True)))

    def test_single_modality_features(self):
        model = self.build(PyramidClipModel)
        inputs = self.model_tester.prepare_inputs(PyramidClipModel)
        image = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        text = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        assert image.shape == text.pooler_output.shape == (3, model.config.projection_dim)
        outputs = model(**inputs)
        torch.testing.assert_close(F.normalize(image, dim=-1), outputs.image_embeds)

    def test_bad_inputs_raise_clear_errors(self):
        model = self.build(PyramidClipModel)
        inputs = self.model_tester.prepare_inputs(PyramidClipModel)
        with pytest.raises(ValueError, match=r"input_ids.*pixel_values"):
            model()
        with pytest.raises(ValueError, match=r"pixel_values.*shape"):
            model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"][:, :1])
        with pytest.raises(ValueError, match="at most 16"):
            model(input_ids=torch.ones(1, 17, dtype=torch.long), pixel_values=inputs["pixel_values"][:1])
        with pytest.raises(ValueError, match="together"):
            model(**inputs, summary_input_ids=inputs["input_ids"], return_loss=True)
        with pytest.raises(ValueError, match="roi_features"):
            model.get_region_features(torch.randn(1, 2, 7))

    def test_zero_softening_is_clip_infonce(self):
        """alpha = 0: the loss equals CLIP's symmetric cross-entropy computed independently."""
        logits = torch.randn(6, 6, generator=torch.Generator().manual_seed(0)) * 5
        labels = torch.arange(6)
        clip_loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        torch.testing.assert_close(softened_contrastive_loss(logits, 0.0), clip_loss)
        # and through the model with only an image-text batch
        model = self.build(PyramidClipModel, config=self.model_tester.get_config(softening_alpha=0.0))
        outputs = model(**self.model_tester.prepare_inputs(PyramidClipModel), return_loss=True)
        expected = (F.cross_entropy(outputs.logits_per_image, torch.arange(3)) +
                    F.cross_entropy(outputs.logits_per_text, torch.arange(3))) / 2  # fmt: skip
        torch.testing.assert_close(outputs.loss, expected)

    def test_softening_equals_label_smoothing_and_stops_over_separation(self):
        alpha, num = 0.2, 8
        logits = torch.randn(num, num, generator=torch.Generator().manual_seed(2)) * 3
        labels = torch.arange(num)
        smoothing = alpha * num / (num - 1)
        reference = (F.cross_entropy(logits, labels, label_smoothing=smoothing)
                     + F.cross_entropy(logits.t(), labels, label_smoothing=smoothing)) / 2  # fmt: skip
        torch.testing.assert_close(softened_contrastive_loss(logits, alpha), reference, rtol=1e-6, atol=1e-6)
        # With a uniform gap g between positives and negatives, the loss is minimal at g* = ln((1-a)(N-1)/a) where
        # it equals the target entropy; widening the gap further raises it (plain InfoNCE keeps pushing).
        gap_star = math.log((1 - alpha) * (num - 1) / alpha)
        entropy = -(1 - alpha) * math.log(1 - alpha) - alpha * math.log(alpha / (num - 1))

        def loss_at(gap: float, a: float) -> float:
            return float(softened_contrastive_loss(torch.eye(num) * gap, a))

        assert loss_at(gap_star, alpha) == pytest.approx(entropy, abs=1e-5)
        assert loss_at(gap_star + 3, alpha) > loss_at(gap_star, alpha) + 0.05
        assert loss_at(gap_star + 3, 0.0) < loss_at(gap_star, 0.0)

    def test_loss_is_invariant_to_a_consistent_batch_permutation(self):
        model = self.build(PyramidClipModel)
        inputs = {**self.model_tester.prepare_inputs(PyramidClipModel), **self.model_tester.pyramid_inputs()}
        permutation = torch.tensor([2, 0, 1])
        with torch.no_grad():
            base = model(**inputs, return_loss=True)
            permuted = model(**{k: v[permutation] for k, v in inputs.items()}, return_loss=True)
        for name in ("loss", *LOSS_TERMS):
            torch.testing.assert_close(getattr(base, name), getattr(permuted, name), rtol=1e-5, atol=1e-6)

    def test_padded_regions_change_nothing_and_share_vision_weights(self):
        model = self.build(PyramidClipModel)
        roi = torch.randn(2, 3, model.config.vision_config.roi_feature_dim)
        padded = torch.cat([roi, torch.randn(2, 5, roi.shape[-1]) * 100], dim=1)
        mask = torch.tensor([[1] * 3 + [0] * 5] * 2)
        with torch.no_grad():
            torch.testing.assert_close(model.get_region_features(roi), model.get_region_features(padded, mask))
        # the ROI branch runs the vision tower's own last blocks: one parameter set, not a copy
        names = {name for name, _ in model.named_parameters()}
        assert not any("roi" in name and "layers" in name for name in names)
        last = model.config.vision_config.num_hidden_layers - 1
        grad_before = model.vision_model.encoder.layers[last].self_attn.q_proj.weight
        model.get_region_features(roi).sum().backward()
        assert grad_before.grad is not None and grad_before.grad.abs().sum() > 0
        assert model.vision_model.encoder.layers[0].self_attn.q_proj.weight.grad is None  # LeFF blocks are not used

    def test_patch_embedding_is_frozen_and_leff_eval_is_deterministic(self):
        model = self.build(PyramidClipModel).train()
        inputs = self.model_tester.prepare_inputs(PyramidClipModel)
        model(**inputs, **self.model_tester.pyramid_inputs(), return_loss=True).loss.backward()
        patch = model.vision_model.embeddings.patch_embedding.weight
        assert not patch.requires_grad and patch.grad is None
        leff = model.vision_model.encoder.layers[0].mlp
        assert type(leff).__name__ == "PyramidClipLeFF"
        assert type(model.vision_model.encoder.layers[-1].mlp).__name__ == "CLIPMLP"
        model.eval()
        with torch.no_grad():
            assert torch.equal(model(**inputs).image_embeds, model(**inputs).image_embeds)

    def test_frozen_parameters_stay_frozen_after_loading(self, tmp_path):
        self.build(PyramidClipModel).save_pretrained(tmp_path)
        for model_class in (PyramidClipModel, PyramidClipForImageClassification):
            model = model_class.from_pretrained(tmp_path).train()
            assert not model.vision_model.embeddings.patch_embedding.weight.requires_grad
            assert model.vision_model.encoder.layers[0].self_attn.q_proj.weight.requires_grad
            roi_trained = model.vision_model.roi_projection.weight.requires_grad
            assert roi_trained == (model_class is PyramidClipModel)

    def test_classifier_holds_the_vision_side_only(self, tmp_path, caplog):
        """As `CLIPForImageClassification`: no text tower in the head; a dual checkpoint still loads into it, its
        text side dropped and reported in one line instead of a load report of every text weight."""
        dual = self.build(PyramidClipModel)
        head = self.build(PyramidClipForImageClassification)
        names = {name for name, _ in head.named_parameters()}
        assert not any(name.startswith(("text_model.", "text_projection.", "logit_scale")) for name in names)
        vision = sum(p.numel() for p in dual.vision_model.parameters()) + dual.visual_projection.weight.numel()
        assert head.num_parameters() == vision + head.classifier.weight.numel() + head.classifier.bias.numel()

        dual.save_pretrained(tmp_path / "dual")
        with caplog.at_level(logging.INFO):
            head, info = PyramidClipForImageClassification.from_pretrained(
                tmp_path / "dual", num_labels=4, output_loading_info=True
            )
        assert info["unexpected_keys"] == set() and info["missing_keys"] == {"classifier.weight", "classifier.bias"}
        reports = [record.getMessage() for record in caplog.records if "text side" in record.getMessage()]
        assert len(reports) == 1 and "was not loaded" in reports[0]
        assert not any("UNEXPECTED" in record.getMessage() for record in caplog.records)
        for name, tensor in head.state_dict().items():
            if not name.startswith("classifier."):
                assert torch.equal(dual.state_dict()[name], tensor), name
        pixel_values = self.model_tester.prepare_inputs(PyramidClipVisionModel)["pixel_values"]
        with torch.no_grad():
            head_embeds = head.visual_projection(head.vision_model(pixel_values).pooler_output)
            torch.testing.assert_close(head_embeds, dual.get_image_features(pixel_values).pooler_output)

    def test_zero_shot_initialised_head_reproduces_zero_shot_logits(self, tmp_path):
        dual = self.build(PyramidClipModel)
        dual.save_pretrained(tmp_path / "dual")
        model = PyramidClipForImageClassification.from_pretrained(tmp_path / "dual", num_labels=4).eval()
        prompts = torch.randint(2, 99, (4 * 2, 6), generator=torch.Generator().manual_seed(3))
        model.init_classifier_from_text(prompts, num_templates=2)  # the text tower of the checkpoint it came from
        pixel_values = self.model_tester.prepare_inputs(PyramidClipForImageClassification)["pixel_values"]
        with torch.no_grad():
            logits = model(pixel_values=pixel_values).logits
            image = F.normalize(dual.get_image_features(pixel_values).pooler_output, dim=-1)
            text = F.normalize(dual.get_text_features(prompts).pooler_output, dim=-1).view(4, 2, -1)
            classes = F.normalize(text.mean(1), dim=-1)
        expected = dual.logit_scale.exp() * image @ classes.t()
        torch.testing.assert_close(logits, expected)
        model.classifier.reset_parameters()
        model.init_classifier_from_text(prompts, num_templates=2, dual_model=dual)  # or a given dual model
        with torch.no_grad():
            torch.testing.assert_close(model(pixel_values=pixel_values).logits, expected)
        with pytest.raises(ValueError, match="num_labels \\* num_templates"):
            model.init_classifier_from_text(prompts[:3])
        model.save_pretrained(tmp_path / "head")
        from_head = PyramidClipForImageClassification.from_pretrained(tmp_path / "head")
        with pytest.raises(ValueError, match="dual_model"):  # a classification checkpoint has no text tower
            from_head.init_classifier_from_text(prompts, num_templates=2)

    def test_problem_types(self):
        for problem_type, labels in (
            ("single_label_classification", torch.tensor([0, 1, 2])),
            ("multi_label_classification", torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1]])),
        ):
            config = self.model_tester.get_config(problem_type=problem_type)
            model = self.build(PyramidClipForImageClassification, config=config)
            inputs = self.model_tester.prepare_inputs(PyramidClipForImageClassification)
            assert torch.isfinite(model(**inputs, labels=labels).loss)

    def test_presets(self):
        base = PyramidClipConfig.from_preset("pyramidclip-base")
        assert (base.vision_config.patch_size, base.vision_config.hidden_size, base.projection_dim) == (16, 768, 512)
        assert (base.vision_config.num_leff_layers, base.vision_config.num_roi_layers) == (9, 3)
        assert base.softening_alpha == 0.2 and base.peer_level_weight == pytest.approx(1 / 3)
        assert PyramidClipConfig.from_preset("pyramidclip-vit-b-32").vision_config.patch_size == 32
        with pytest.raises(ValueError, match="Unknown PyramidCLIP preset"):
            PyramidClipConfig.from_preset("pyramidclip-huge")
        # transformers' strict configs wrap the ValueError of `validate_architecture`
        with pytest.raises(StrictDataclassClassValidationError, match="softening_alpha"):
            PyramidClipConfig(softening_alpha=1.5)
        with pytest.raises(StrictDataclassClassValidationError, match="num_roi_layers"):
            PyramidClipConfig(vision_config={"num_leff_layers": 10, "num_roi_layers": 3})


# Runs in a fresh interpreter: hfvision is made unimportable before transformers is imported.
TOWER_REMOTE_SCRIPT = HIDE_HFVISION + textwrap.dedent(
    """
    import sys
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel

    inputs, out = load_file(sys.argv[3]), sys.argv[4]
    vision = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
    text = AutoModel.from_pretrained(sys.argv[2], trust_remote_code=True)
    assert type(vision).__module__.startswith("transformers_modules"), type(vision).__module__
    outputs = {
        "vision": vision(pixel_values=inputs["pixel_values"]).pooler_output,
        "text": text(input_ids=inputs["input_ids"]).pooler_output,
    }
    save_file({name: value.detach().contiguous() for name, value in outputs.items()}, out)
    print("hfvision loaded:", any(name.startswith("hfvision") for name in sys.modules), type(vision).__name__)
    """
)


def test_towers_load_as_remote_code_in_a_process_without_hfvision(tmp_path):
    tester = PyramidClipModelTester()
    config = tester.get_config()
    towers = {"vision": PyramidClipVisionModel(config.vision_config), "text": PyramidClipTextModel(config.text_config)}
    for name, tower in towers.items():
        tower.eval().save_pretrained(tmp_path / name)
        assert {"configuration_pyramidclip.py", "modeling_pyramidclip.py"} <= set(os.listdir(tmp_path / name))
    inputs = {
        "pixel_values": tester.prepare_inputs(PyramidClipVisionModel)["pixel_values"],
        "input_ids": tester.prepare_inputs(PyramidClipTextModel)["input_ids"],
    }
    save_file(inputs, tmp_path / "inputs.safetensors")
    (tmp_path / "remote.py").write_text(TOWER_REMOTE_SCRIPT)
    arguments = [tmp_path / "vision", tmp_path / "text", tmp_path / "inputs.safetensors", tmp_path / "out.safetensors"]
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), *map(str, arguments)],
        cwd=tmp_path,
        env={**os.environ, "HF_HOME": str(tmp_path / "home"), "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hfvision loaded: False PyramidClipVisionModel" in result.stdout
    remote = load_file(tmp_path / "out.safetensors")
    with torch.no_grad():
        assert torch.equal(remote["vision"], towers["vision"](pixel_values=inputs["pixel_values"]).pooler_output)
        assert torch.equal(remote["text"], towers["text"](input_ids=inputs["input_ids"]).pooler_output)
