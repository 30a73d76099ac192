"""MCMAE: the transformers-model contract, the paper's masking properties, loading, remote code and the pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    pipeline,
)

from hfvision.demo import HIDE_HFVISION
from hfvision.models.mcmae import (
    McMaeConfig,
    McMaeForImageClassification,
    McMaeForPreTraining,
    McMaeImageProcessor,
    McMaeModel,
    modeling_mcmae,
)
from tests.models.common import ModelCommonTests

HEADS = (McMaeForPreTraining, McMaeForImageClassification)


class McMaeModelTester:
    batch_size = 3
    num_labels = 4

    def get_config(self, **overrides) -> McMaeConfig:
        return McMaeConfig.from_preset("mcmae-tiny", num_labels=self.num_labels, **overrides)

    def noise(self, seed: int = 0) -> torch.Tensor:
        config = self.get_config()
        return torch.rand(self.batch_size, config.num_patches, generator=torch.Generator().manual_seed(seed))

    def prepare_inputs(self, model_class: type) -> dict:
        config = self.get_config()
        size = config.image_size
        pixel_values = torch.randn(self.batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
        if model_class is McMaeForPreTraining:
            return {"pixel_values": pixel_values, "noise": self.noise()}
        return {"pixel_values": pixel_values}

    def slice_inputs(self, inputs: dict, index: int) -> dict:
        return {name: value[index : index + 1] for name, value in inputs.items()}

    def compared(self, outputs, model_class: type) -> torch.Tensor:
        if model_class is McMaeModel:
            return torch.cat([outputs.pooler_output, outputs.last_hidden_state.flatten(1)], dim=-1)
        if model_class is McMaeForPreTraining:
            return torch.cat([outputs.logits.flatten(1), outputs.last_hidden_state.flatten(1)], dim=-1)
        return outputs.logits

    def recorded(self, outputs, model_class: type) -> list[tuple]:
        config = self.get_config()
        return [(outputs.hidden_states, outputs.attentions, config.num_hidden_layers, config.num_attention_heads)]

    def loss_kwargs(self, model_class: type) -> dict:
        if model_class is McMaeForImageClassification:
            return {"labels": torch.tensor([0, 3, 1])}
        return {}


def masked_pixel_mask(mask: torch.Tensor, config: McMaeConfig) -> torch.Tensor:
    """`(B, 1, H, W)` 1 inside masked patches, from the token mask `(B, N)`."""
    return 1 - modeling_mcmae.upsample_visible_mask(mask, config.image_size // config.patch_size, config.patch_size)


class TestMcMaeModel(ModelCommonTests):
    model_tester = McMaeModelTester()
    all_model_classes = (McMaeModel, *HEADS)

    def test_gradient_checkpointing_matches(self):
        self.all_model_classes = HEADS  # McMaeModel has no loss; both heads contain it
        super().test_gradient_checkpointing_matches()

    def test_every_trainable_parameter_gets_a_gradient(self):
        self.all_model_classes = HEADS  # McMaeModel has no loss; both heads contain it
        super().test_every_trainable_parameter_gets_a_gradient()

    # --- shapes and API ---------------------------------------------------------------------------------------
    def test_pretraining_output_mirrors_vitmae(self):
        model = self.build(McMaeForPreTraining)
        config, tester = model.config, self.model_tester
        outputs = model(**tester.prepare_inputs(McMaeForPreTraining), output_hidden_states=True)
        batch, num_patches, num_visible = tester.batch_size, config.num_patches, 4  # 16 tokens, 75% masked
        assert list(outputs.keys())[:4] == ["loss", "logits", "mask", "ids_restore"]
        assert outputs.loss.ndim == 0 and torch.isfinite(outputs.loss)
        assert outputs.logits.shape == (batch, num_patches, config.patch_size**2 * 3)
        assert outputs.mask.shape == outputs.ids_restore.shape == (batch, num_patches)
        assert outputs.hidden_states[-1].shape == (batch, num_visible, config.hidden_size)
        assert outputs.last_hidden_state.shape == (batch, num_visible, config.hidden_size)
        assert [tuple(m.shape) for m in outputs.conv_hidden_states] == [(batch, 8, 16, 16), (batch, 16, 8, 8)]
        images = model.unpatchify(model.patchify(tester.prepare_inputs(McMaeForPreTraining)["pixel_values"]))
        assert torch.equal(images, tester.prepare_inputs(McMaeForPreTraining)["pixel_values"])

    def test_base_model_encodes_every_token_without_masking(self):
        model = self.build(McMaeModel)
        outputs = model(**self.model_tester.prepare_inputs(McMaeModel))
        assert outputs.mask is None and outputs.ids_restore is None
        assert outputs.last_hidden_state.shape == (3, 16, 32) and outputs.pooler_output.shape == (3, 32)
        # `noise` only fixes a mask: without masking it is ignored (generic callers pass it to every model taking it)
        with torch.no_grad():
            with_noise = model(**self.model_tester.prepare_inputs(McMaeModel), noise=self.model_tester.noise())
            assert torch.equal(with_noise.last_hidden_state, model(**self.model_tester.prepare_inputs(McMaeModel))[0])
        assert with_noise.mask is None
        with pytest.raises(ValueError, match="pixel_values"):
            model(pixel_values=torch.randn(1, 3, 24, 24))
        with pytest.raises(ValueError, match="noise"):
            model(pixel_values=torch.randn(1, 3, 32, 32), noise=torch.rand(1, 5), apply_masking=True)

    # --- the paper's masking properties -----------------------------------------------------------------------
    def test_masked_pixels_cannot_reach_visible_features(self, monkeypatch):
        """Leakage = 0: perturbing pixels inside masked blocks changes no visible feature at any stage."""
        model = self.build(McMaeForPreTraining)
        config = model.config
        inputs = self.model_tester.prepare_inputs(McMaeForPreTraining)
        pixel_values = inputs["pixel_values"].clone().requires_grad_(True)
        base = model(pixel_values=pixel_values, noise=inputs["noise"], output_hidden_states=True)
        masked_pixels = masked_pixel_mask(base.mask, config)  # (B, 1, H, W)
        assert masked_pixels.mean() == pytest.approx(0.75)

        # the gradient of every visible feature w.r.t. the masked pixels is exactly zero
        base.last_hidden_state.pow(2).sum().backward()
        assert pixel_values.grad.abs().sum() > 0
        assert torch.equal(pixel_values.grad * masked_pixels, torch.zeros_like(pixel_values.grad))

        def run(perturbed: torch.Tensor):
            with torch.no_grad():
                return model(pixel_values=perturbed, noise=inputs["noise"], output_hidden_states=True)

        perturbed = pixel_values.detach() + 5 * torch.randn_like(pixel_values) * masked_pixels
        after = run(perturbed)
        torch.testing.assert_close(after.last_hidden_state, base.last_hidden_state, rtol=0, atol=1e-6)
        for left, right in zip(after.hidden_states, base.hidden_states, strict=True):
            torch.testing.assert_close(left, right, rtol=0, atol=1e-6)
        for stage, (left, right) in enumerate(zip(after.conv_hidden_states, base.conv_hidden_states, strict=True)):
            scale = config.patch_sizes[2] * (config.patch_sizes[1] if stage == 0 else 1)
            visible = modeling_mcmae.upsample_visible_mask(base.mask, left.shape[-1] // scale, scale)
            torch.testing.assert_close(left * visible, right * visible, rtol=0, atol=1e-6)
            assert not torch.allclose(left, right)  # masked positions do change: the perturbation is real
        torch.testing.assert_close(after.logits, base.logits, rtol=0, atol=1e-6)  # the decoder sees only the latent

        # negative control: without the masked convolution, the same perturbation leaks into visible tokens
        monkeypatch.setattr(
            modeling_mcmae,
            "upsample_visible_mask",
            lambda mask, grid, scale: torch.ones(mask.shape[0], 1, grid[0] * scale, grid[1] * scale),
        )
        leaky_base, leaky_after = run(pixel_values.detach()), run(perturbed)
        assert (leaky_after.last_hidden_state - leaky_base.last_hidden_state).abs().max() > 1e-5

    def test_exact_mask_ratio_and_reproducible_masks(self):
        tester = self.model_tester
        inputs = tester.prepare_inputs(McMaeForPreTraining)
        for ratio, num_masked in ((0.75, 12), (0.5, 8), (0.6, 10), (0.0, 0)):
            model = self.build(McMaeForPreTraining, config=tester.get_config(mask_ratio=ratio))
            with torch.no_grad():
                outputs = model(**inputs)
            assert outputs.mask.sum(dim=1).tolist() == [num_masked] * tester.batch_size
            assert outputs.last_hidden_state.shape[1] == 16 - num_masked
            shuffle = torch.argsort(outputs.ids_restore, dim=1)  # ids_restore inverts the shuffle
            assert torch.equal(torch.gather(shuffle, 1, outputs.ids_restore), torch.arange(16).expand(3, -1))
            kept = shuffle[:, : 16 - num_masked]
            assert torch.equal(torch.gather(outputs.mask, 1, kept), torch.zeros_like(kept, dtype=outputs.mask.dtype))
            if ratio == 0.0:
                assert outputs.loss == 0  # nothing to reconstruct
        model = self.build(McMaeForPreTraining)
        with torch.no_grad():
            first, second = model(**inputs), model(**inputs)
            other = model(pixel_values=inputs["pixel_values"], noise=tester.noise(seed=1))
        assert torch.equal(first.mask, second.mask) and torch.equal(first.logits, second.logits)
        assert not torch.equal(first.mask, other.mask)
        model.train()
        unseeded = [model(pixel_values=inputs["pixel_values"]).mask for _ in range(2)]  # noise=None: random
        assert unseeded[0].sum() == unseeded[1].sum() == 36 and not torch.equal(*unseeded)

    def test_mask_is_the_same_block_mask_at_every_stage(self):
        mask = (torch.rand(2, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
        for scale in (1, 2, 4):
            visible = modeling_mcmae.upsample_visible_mask(mask, 4, scale)
            expected = torch.stack([torch.kron(1 - m.view(4, 4), torch.ones(scale, scale)) for m in mask])
            assert torch.equal(visible[:, 0], expected)
        # in the model: each stage's visible mask covers exactly the pixels of the visible 8x8 blocks
        model = self.build(McMaeForPreTraining)
        config = model.config
        outputs = model(**self.model_tester.prepare_inputs(McMaeForPreTraining))
        pixel_visible = 1 - masked_pixel_mask(outputs.mask, config)  # (B, 1, 32, 32)
        for stage_map, stride in zip(outputs.conv_hidden_states, (2, 4), strict=True):
            grid = stage_map.shape[-1]
            stage_visible = modeling_mcmae.upsample_visible_mask(outputs.mask, 4, grid // 4)
            assert torch.equal(stage_visible, pixel_visible[:, :, ::stride, ::stride])

    def test_loss_ignores_visible_patches_and_normalises_targets(self):
        model = self.build(McMaeForPreTraining)
        inputs = self.model_tester.prepare_inputs(McMaeForPreTraining)
        outputs = model(**inputs)
        mask = outputs.mask
        with torch.no_grad():
            perturbed = outputs.logits + 10 * (1 - mask).unsqueeze(-1) * torch.randn_like(outputs.logits)
            assert model.forward_loss(inputs["pixel_values"], perturbed, mask) == pytest.approx(outputs.loss.item())
            one_masked = outputs.logits.clone()
            one_masked[mask.bool()] += 1.0
            assert model.forward_loss(inputs["pixel_values"], one_masked, mask) > outputs.loss + 0.1
            # norm_pix_loss: per-patch targets with mean 0 and (biased) variance (n - 1) / n, so zero predictions give
            # a loss of about (n - 1) / n; without it, the plain mean squared pixel over masked patches
            n = model.config.patch_size**2 * 3
            zero = torch.zeros_like(outputs.logits)
            assert model.forward_loss(inputs["pixel_values"], zero, mask) == pytest.approx((n - 1) / n, rel=1e-4)
            model.config.norm_pix_loss = False
            target = model.patchify(inputs["pixel_values"])
            expected = (target.pow(2).mean(-1) * mask).sum() / mask.sum()
            torch.testing.assert_close(model.forward_loss(inputs["pixel_values"], zero, mask), expected)
        outputs.loss.backward()
        assert model.decoder.mask_token.grad.abs().sum() > 0

    # --- weights, heads, presets ------------------------------------------------------------------------------
    def test_pretrained_encoder_loads_into_the_classifier(self, tmp_path):
        pretrain = self.build(McMaeForPreTraining)
        pretrain.save_pretrained(tmp_path)
        classifier, info = McMaeForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
        assert sorted(info["missing_keys"]) == [
            "classifier.bias",
            "classifier.weight",
            "mcmae.pooler.layernorm.bias",
            "mcmae.pooler.layernorm.weight",
        ]  # fmt: skip  (the official fine-tuning assert: only the head and fc_norm are new)
        for name, tensor in pretrain.mcmae.state_dict().items():
            assert torch.equal(classifier.mcmae.state_dict()[name], tensor), name
        assert classifier.mcmae.embeddings.position_embeddings.requires_grad  # learnable when fine-tuning
        assert (
            not McMaeForPreTraining.from_pretrained(tmp_path).train().mcmae.embeddings.position_embeddings.requires_grad
        )

    def test_classification_head_with_labels_and_problem_types(self):
        for problem_type, labels in (
            (None, torch.tensor([0, 3, 1])),
            ("multi_label_classification", torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1]])),
            ("regression", torch.randn(3, 4)),
        ):
            config = self.model_tester.get_config(problem_type=problem_type)
            model = self.build(McMaeForImageClassification, config=config)
            outputs = model(**self.model_tester.prepare_inputs(McMaeForImageClassification), labels=labels)
            assert outputs.logits.shape == (3, 4) and torch.isfinite(outputs.loss)
            outputs.loss.backward()
            assert model.classifier.weight.grad.abs().sum() > 0

    def test_other_image_sizes_with_interpolated_positions(self):
        pretrain, classifier = self.build(McMaeForPreTraining), self.build(McMaeForImageClassification)
        inputs = self.model_tester.prepare_inputs(McMaeForPreTraining)
        with torch.no_grad():  # at the trained size, interpolation is the identity
            same = pretrain(**inputs, interpolate_pos_encoding=True)
            torch.testing.assert_close(same.logits, pretrain(**inputs).logits, rtol=0, atol=0)
            pixel_values = torch.randn(2, 3, 48, 32)  # a 6 x 4 token grid
            with pytest.raises(ValueError, match="interpolate_pos_encoding"):
                pretrain(pixel_values=pixel_values)
            with pytest.raises(ValueError, match="multiples of 8"):
                pretrain(pixel_values=torch.randn(1, 3, 44, 32), interpolate_pos_encoding=True)
            outputs = pretrain(pixel_values=pixel_values, interpolate_pos_encoding=True)
            assert outputs.logits.shape == (2, 24, 192) and outputs.mask.sum(1).tolist() == [18, 18]
            assert outputs.conv_hidden_states[0].shape == (2, 8, 24, 16)
            # no leakage on a non-square grid either
            noise = torch.rand(2, 24, generator=torch.Generator().manual_seed(3))
            base = pretrain(pixel_values=pixel_values, noise=noise, interpolate_pos_encoding=True)
            masked_pixels = 1 - modeling_mcmae.upsample_visible_mask(base.mask, (6, 4), 8)
            perturbed = pixel_values + 5 * torch.randn_like(pixel_values) * masked_pixels
            after = pretrain(pixel_values=perturbed, noise=noise, interpolate_pos_encoding=True)
            torch.testing.assert_close(after.last_hidden_state, base.last_hidden_state, rtol=0, atol=1e-6)
            logits = classifier(pixel_values=pixel_values, interpolate_pos_encoding=True).logits
            assert logits.shape == (2, 4) and torch.isfinite(logits).all()
            masked, reconstruction, pasted = pretrain.reconstruct(pixel_values, interpolate_pos_encoding=True)
        assert masked.shape == reconstruction.shape == pasted.shape == pixel_values.shape
        assert torch.equal(pretrain.unpatchify(pretrain.patchify(pixel_values), (48, 32)), pixel_values)

    def test_initialisation_follows_the_official_code(self, tmp_path):
        model = self.build(McMaeForImageClassification)
        projection = model.mcmae.embeddings.patch_embeddings.projection.weight  # xavier on (32, 16 * 2 * 2)
        assert projection.abs().max() <= (6 / (32 + 64)) ** 0.5 and projection.std() > 0.12
        stem = model.mcmae.conv_stages[0].patch_embeddings.projection.weight  # PyTorch default: 1 / sqrt(3 * 2 * 2)
        assert stem.abs().max() <= 12**-0.5 and stem.std() > 0.1
        spatial = model.mcmae.conv_stages[0].blocks[0].spatial_conv.weight  # PyTorch default: bound 1 / sqrt(3 * 3)
        assert spatial.abs().max() <= 1 / 3 and spatial.std() > 0.1
        assert model.classifier.weight.std() < 1e-4 and model.classifier.bias.abs().max() == 0
        table = model.mcmae.embeddings.position_embeddings[0]  # fixed sin-cos: position 0 is sin(0) / cos(0)
        assert torch.equal(table[0], torch.tensor([0.0] * 8 + [1.0] * 8 + [0.0] * 8 + [1.0] * 8))
        # a head loaded from a base checkpoint gets the same near-zero classifier
        self.build(McMaeModel).save_pretrained(tmp_path)
        head = McMaeForImageClassification.from_pretrained(tmp_path, num_labels=4)
        assert head.classifier.weight.std() < 1e-4

    def test_drop_path_schedule_is_torch_linspace(self):
        config = self.model_tester.get_config(drop_path_rate=0.3)
        expected = torch.linspace(0, 0.3, sum(config.depths)).tolist()
        assert modeling_mcmae.drop_path_rates(config) == pytest.approx(expected, abs=1e-7)

    def test_stochastic_depth_in_training_only(self):
        config = self.model_tester.get_config(drop_path_rate=0.5)
        model = self.build(McMaeForImageClassification, config=config)
        rates = [block.drop_path.drop_prob for stage in model.mcmae.conv_stages for block in stage.blocks]
        rates += [layer.drop_path.drop_prob for layer in model.mcmae.layers]
        assert rates == pytest.approx([0.0, 0.5 / 3, 1.0 / 3, 0.5])  # linear over all encoder blocks
        inputs = self.model_tester.prepare_inputs(McMaeForImageClassification)
        with torch.no_grad():
            assert torch.equal(model(**inputs).logits, model(**inputs).logits)
            model.train()
            torch.manual_seed(0)
            first = model(**inputs).logits
            assert not torch.equal(first, model(**inputs).logits)

    def test_drop_path_drops_whole_branches_per_sample(self):
        """timm's DropPath: in training each sample's branch is either zeroed entirely or kept and scaled by
        1 / keep_prob, about drop_prob of the samples dropped; in eval the identity."""
        drop_path = modeling_mcmae.McMaeDropPath(0.25)
        branch = torch.rand(4000, 5, 6) + 0.5  # (B, N, D), no zeros of its own
        assert torch.equal(drop_path.eval()(branch), branch)
        torch.manual_seed(0)
        output = drop_path.train()(branch)
        dropped = (output == 0).all(-1).all(-1)  # (B,)
        kept = torch.isclose(output, branch / 0.75).all(-1).all(-1)
        assert torch.equal(dropped | kept, torch.ones_like(dropped))  # never part of a sample
        assert dropped.float().mean().item() == pytest.approx(0.25, abs=0.03)  # Binomial(4000, 0.25): sd 0.007

    def test_drop_path_skips_residual_branches_in_blocks(self):
        """With a rate near 1, a training block returns its input (both residual branches dropped) for every sample;
        in eval it does not."""
        config = self.model_tester.get_config()
        layer_config = modeling_mcmae.transformer_layer_config(config, 32, 2, 64)
        layer = modeling_mcmae.McMaeLayer(config, layer_config, drop_path=0.9999)
        conv_block = modeling_mcmae.McMaeConvBlock(config, 8, 2.0, drop_path=0.9999)
        tokens, feature_map = torch.randn(6, 16, 32), torch.randn(6, 5, 7, 8)  # (B, N, D), (B, H, W, C)
        torch.manual_seed(0)
        with torch.no_grad():
            assert torch.equal(layer.train()(tokens), tokens)
            assert torch.equal(conv_block.train()(feature_map), feature_map)
            assert not torch.allclose(layer.eval()(tokens), tokens)
            assert not torch.allclose(conv_block.eval()(feature_map), feature_map)

    def test_presets_and_parameter_counts(self):
        base, small = McMaeConfig.from_preset("mcmae-base"), McMaeConfig.from_preset("mcmae-small")
        assert (base.hidden_sizes, base.depths, base.patch_size, base.num_patches) == (
            [256, 384, 768],
            [2, 2, 11],
            16,
            196,
        )
        assert (base.mask_ratio, base.decoder_hidden_size, base.decoder_num_hidden_layers) == (0.75, 512, 8)
        with torch.device("meta"):
            counts = {
                name: (
                    sum(p.numel() for p in McMaeModel(config, add_pooling_layer=False).parameters()),
                    sum(p.numel() for p in McMaeForPreTraining(config).parameters() if p.requires_grad),
                )
                for name, config in (("base", base), ("small", small))
            }
        # digest Sec. 3.1 (computed from the official code): encoder 84.6M / 21.9M, pretraining 114.8M / 48.9M
        assert counts["base"][0] / 1e6 == pytest.approx(84.6, abs=0.05)
        assert counts["base"][1] / 1e6 == pytest.approx(114.8, abs=0.05)
        assert counts["small"][0] / 1e6 == pytest.approx(21.9, abs=0.05)
        assert counts["small"][1] / 1e6 == pytest.approx(48.9, abs=0.05)
        with pytest.raises(ValueError, match="Unknown MCMAE preset"):
            McMaeConfig.from_preset("mcmae-huge")
        with pytest.raises(StrictDataclassClassValidationError, match="mask_ratio"):
            McMaeConfig(mask_ratio=1.0)
        with pytest.raises(StrictDataclassClassValidationError, match="hidden_sizes"):
            McMaeConfig(hidden_sizes=[8, 16])


# --- checkpoints: Auto classes, remote code, pipeline ---------------------------------------------------------
def random_image(seed: int, height: int = 40, width: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory) -> dict:
    """Saved tiny MCMAE pretraining and classification checkpoints, each with its image processor."""
    root = tmp_path_factory.mktemp("mcmae-tiny")
    processor = McMaeImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})
    id2label = {0: "circle", 1: "square", 2: "triangle"}
    paths = {}
    for name, model_class in (("pretraining", McMaeForPreTraining), ("classifier", McMaeForImageClassification)):
        torch.manual_seed(0)
        config = McMaeConfig.from_preset("mcmae-tiny", id2label=id2label, label2id={v: k for k, v in id2label.items()})
        model_class(config).eval().save_pretrained(root / name)
        processor.save_pretrained(root / name)
        paths[name] = root / name
    return paths


REMOTE_SCRIPT = HIDE_HFVISION + textwrap.dedent(
    """
    import numpy as np, torch
    from PIL import Image
    from safetensors.torch import load_file, save_file
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, AutoModelForPreTraining
    from transformers import pipeline

    pretraining, classifier_path, inputs_path, out = sys.argv[1:5]
    inputs = load_file(inputs_path)
    pretrain = AutoModelForPreTraining.from_pretrained(pretraining, trust_remote_code=True)
    classifier = AutoModelForImageClassification.from_pretrained(classifier_path, trust_remote_code=True)
    encoder = AutoModel.from_pretrained(classifier_path, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(classifier_path, trust_remote_code=True)
    assert type(pretrain).__module__.startswith("transformers_modules"), type(pretrain).__module__
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    with torch.no_grad():
        outputs = pretrain(pixel_values=inputs["pixel_values"], noise=inputs["noise"])
        logits = classifier(**processor(image, return_tensors="pt")).logits
        pooled = encoder(pixel_values=inputs["pixel_values"]).pooler_output
    top = pipeline("image-classification", model=classifier_path, trust_remote_code=True)(image, top_k=1)[0]["label"]
    save_file({"loss": outputs.loss, "logits": outputs.logits, "mask": outputs.mask, "classifier": logits,
               "pooled": pooled}, out)
    print("hfvision loaded:", any(name.startswith("hfvision") for name in sys.modules), type(pretrain).__name__, top)
    """
)


def test_remote_code_in_a_process_without_hfvision(tiny_checkpoints, tmp_path):
    pretraining, classifier_path = tiny_checkpoints["pretraining"], tiny_checkpoints["classifier"]
    assert {"configuration_mcmae.py", "modeling_mcmae.py", "model.safetensors"} <= set(os.listdir(pretraining))
    assert "image_processing_mcmae.py" in os.listdir(classifier_path)
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "pixel_values": torch.randn(2, 3, 32, 32, generator=generator),
        "noise": torch.rand(2, 16, generator=generator),
    }
    save_file(inputs, tmp_path / "inputs.safetensors")
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    out = tmp_path / "remote.safetensors"
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "PYTHONPATH": ""}
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(pretraining),
            str(classifier_path),
            str(tmp_path / "inputs.safetensors"),
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    pretrain = AutoModelForPreTraining.from_pretrained(pretraining)
    classifier = AutoModelForImageClassification.from_pretrained(classifier_path)
    encoder = AutoModel.from_pretrained(classifier_path)
    processor = AutoImageProcessor.from_pretrained(classifier_path)
    assert isinstance(pretrain, McMaeForPreTraining) and isinstance(encoder, McMaeModel)
    with torch.no_grad():
        expected = pretrain(**inputs)
        logits = classifier(**processor(random_image(0), return_tensors="pt")).logits
        pooled = encoder(pixel_values=inputs["pixel_values"]).pooler_output
    remote = load_file(out)
    for name, value in (("loss", expected.loss), ("logits", expected.logits), ("mask", expected.mask)):
        assert torch.equal(remote[name], value), name  # identical outputs with and without hfvision
    assert torch.equal(remote["classifier"], logits) and torch.equal(remote["pooled"], pooled)
    top = classifier.config.id2label[int(logits.argmax())]
    assert f"hfvision loaded: False McMaeForPreTraining {top}" in result.stdout


def test_image_classification_pipeline(tiny_checkpoints):
    classifier = pipeline("image-classification", model=str(tiny_checkpoints["classifier"]))
    assert isinstance(classifier.model, McMaeForImageClassification)
    for batch in ([random_image(0)], [random_image(1, 90, 30), random_image(2, 20, 70)]):
        for result in classifier(batch, top_k=3):
            scores = [item["score"] for item in result]
            assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
            assert {item["label"] for item in result} == {"circle", "square", "triangle"}


def test_image_processor_matches_the_eval_transform():
    processor = McMaeImageProcessor()
    pixel_values = processor([random_image(0, 300, 400), random_image(1, 256, 256)], return_tensors="pt").pixel_values
    assert pixel_values.shape == (2, 3, 224, 224)
    image = random_image(2, 256, 256)
    crop = np.asarray(image, dtype=np.float32)[16:240, 16:240] / 255.0  # resize is a no-op at 256: a center crop
    expected = (crop - np.array(processor.image_mean, np.float32)) / np.array(processor.image_std, np.float32)
    got = processor(image, return_tensors="np").pixel_values[0].transpose(1, 2, 0)
    np.testing.assert_allclose(got, expected, atol=1e-5)
