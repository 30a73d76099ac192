"""Scaffold ViT and attention explainer: the transformers-model contract and the paper's explainer properties."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import ViTConfig, ViTForImageClassification

from hfvision.models.scaffold import (
    AttentionExplainer,
    AttentionExplainerConfig,
    GradientExplainer,
    ScaffoldVitConfig,
    ScaffoldVitForImageClassification,
    ScaffoldVitModel,
    entmax15,
    explanation_kl,
    sparsemax,
)
from tests.models.common import ModelCommonTests

IMAGE_SIZE = 8


def tiny_config(**overrides) -> ScaffoldVitConfig:
    return ScaffoldVitConfig.from_preset("scaffold-vit-tiny", **{"num_labels": 3, **overrides})


def images(batch_size: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch_size, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


class ScaffoldVitModelTester:
    batch_size = 3

    def get_config(self, **overrides) -> ScaffoldVitConfig:
        return tiny_config(**overrides)

    def prepare_inputs(self, model_class: type) -> dict:
        return {"pixel_values": images(self.batch_size)}

    def slice_inputs(self, inputs: dict, index: int) -> dict:
        return {name: value[index : index + 1] for name, value in inputs.items()}

    def compared(self, outputs, model_class: type) -> torch.Tensor:
        return outputs.pooler_output if model_class is ScaffoldVitModel else outputs.logits

    def recorded(self, outputs, model_class: type) -> list[tuple]:
        config = tiny_config()
        return [(outputs.hidden_states, outputs.attentions, config.num_hidden_layers, config.num_attention_heads)]

    def loss_kwargs(self, model_class: type) -> dict:
        return {} if model_class is ScaffoldVitModel else {"labels": torch.tensor([0, 2, 1])}


class TestScaffoldVit(ModelCommonTests):
    model_tester = ScaffoldVitModelTester()
    all_model_classes = (ScaffoldVitModel, ScaffoldVitForImageClassification)

    def test_cls_pooling_variant_passes_the_basics(self):
        model = ScaffoldVitForImageClassification(tiny_config(pooling="cls")).eval()
        assert model.vit.scalar_mix is None
        assert model(images()).logits.shape == (3, 3)


class AttentionExplainerTester:
    batch_size = 3

    def get_config(self, **overrides) -> AttentionExplainerConfig:
        return AttentionExplainerConfig.for_model(tiny_config(), **overrides)

    def prepare_inputs(self, model_class: type) -> dict:
        generator = torch.Generator().manual_seed(0)
        config = tiny_config()
        scores = tuple(
            torch.randn(
                self.batch_size, config.num_attention_heads, config.num_tokens, config.num_tokens, generator=generator
            )
            for _ in range(config.num_hidden_layers)
        )
        return {"attention_scores": scores}

    def slice_inputs(self, inputs: dict, index: int) -> dict:
        return {"attention_scores": tuple(layer[index : index + 1] for layer in inputs["attention_scores"])}

    def compared(self, outputs, model_class: type) -> torch.Tensor:
        return outputs.explanation

    def recorded(self, outputs, model_class: type) -> list[tuple]:
        return []  # reads attention scores, computes none

    def loss_kwargs(self, model_class: type) -> dict:
        return {}


class TestAttentionExplainer(ModelCommonTests):
    model_tester = AttentionExplainerTester()
    all_model_classes = (AttentionExplainer,)

    def test_eager_and_sdpa_agree(self):
        """The explainer mixes given scores; it has no attention kernel (its name is the only 'Attention' here)."""
        model = self.build(AttentionExplainer)
        assert [type(module).__name__ for module in model.modules()] == ["AttentionExplainer"]
        assert not AttentionExplainer._supports_sdpa


# --- the paper's explainer properties ----------------------------------------------------------------------------
def test_hooked_scores_give_the_explanation_of_log_eager_probabilities():
    """Row-wise log-softmax differs from the scores by a per-row constant, which the token softmax cancels."""
    torch.manual_seed(0)
    config = tiny_config(initializer_range=0.3)  # large enough weights for peaked, non-uniform attention
    model = ScaffoldVitForImageClassification._from_config(config, attn_implementation="eager").eval()
    explainer = AttentionExplainer(AttentionExplainerConfig.for_model(config, init="lecun_normal"))
    with torch.no_grad():
        outputs = model(images(), output_attention_scores=True, output_attentions=True)
        from_scores = explainer(outputs.attention_scores).explanation
        from_log_probs = explainer(tuple(probs.log() for probs in outputs.attentions)).explanation
    torch.testing.assert_close(from_scores, from_log_probs, atol=1e-5, rtol=0)
    assert (from_scores - 1 / 5).abs().max() > 0.05  # not the trivial uniform explanation
    # negative control: the probabilities themselves (not their log) give a different explanation
    from_probs = explainer(outputs.attentions).explanation
    assert (from_probs - from_scores).abs().max() > 1e-3


def test_scores_are_the_same_under_sdpa_and_eager():
    config = tiny_config()
    scores = {}
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        model = ScaffoldVitForImageClassification._from_config(config, attn_implementation=implementation).eval()
        with torch.no_grad():
            scores[implementation] = torch.stack(model(images(), output_attention_scores=True).attention_scores)
    torch.testing.assert_close(scores["eager"][0], scores["sdpa"][0], rtol=0, atol=0)  # same queries and keys
    torch.testing.assert_close(scores["eager"], scores["sdpa"], rtol=1e-4, atol=1e-6)  # later layers: kernel rounding
    assert scores["eager"].shape == (config.num_hidden_layers, 3, config.num_attention_heads, 5, 5)


def test_attention_scores_only_when_asked_and_from_config():
    model = ScaffoldVitForImageClassification(tiny_config()).eval()
    assert model(images()).attention_scores is None
    model.config.output_attention_scores = True
    assert len(model(images()).attention_scores) == 2


@pytest.mark.parametrize("normalizer", [sparsemax, entmax15])
def test_sparse_normalizers_sum_to_one_and_keep_uniform_uniform(normalizer):
    logits = torch.randn(5, 16, generator=torch.Generator().manual_seed(0)) * 3
    probabilities = normalizer(logits)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(5))
    assert (probabilities >= 0).all() and (probabilities == 0).any()  # sparse: some heads leave the support
    uniform = normalizer(torch.full((4, 16), 0.3))
    torch.testing.assert_close(uniform, torch.full((4, 16), 1 / 16))
    # along another dim
    torch.testing.assert_close(normalizer(logits.T, dim=0), probabilities.T)


def test_sparsemax_matches_its_definition_on_a_known_vector():
    """sparsemax([1, 2, 3, 0.5]) = [0, 0, 1, 0] (the largest logit is > 1 above the rest) and [.6, .4] shifts."""
    torch.testing.assert_close(sparsemax(torch.tensor([1.0, 2.0, 3.0, 0.5])), torch.tensor([0.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(sparsemax(torch.tensor([0.6, 0.4])), torch.tensor([0.6, 0.4]))
    torch.testing.assert_close(sparsemax(torch.tensor([1.0, 0.8, 0.0])), torch.tensor([0.6, 0.4, 0.0]))


def test_kl_of_an_explanation_with_itself_is_zero_and_positive_otherwise():
    explanation = torch.randn(4, 17).softmax(-1)
    assert explanation_kl(explanation, explanation).item() == pytest.approx(0.0, abs=1e-7)
    assert explanation_kl(explanation, torch.randn(4, 17).softmax(-1)).item() > 1e-3
    with pytest.raises(ValueError, match="teacher_explanation"):
        explanation_kl(explanation, explanation[:, :5])


def test_uniform_explainer_starts_uniform_and_last_layer_uses_one_layer():
    config = tiny_config()
    explainer = AttentionExplainer(AttentionExplainerConfig.for_model(config))
    torch.testing.assert_close(explainer.head_weights(), torch.full((4,), 0.25))
    scores = AttentionExplainerTester().prepare_inputs(AttentionExplainer)["attention_scores"]
    last = AttentionExplainer(AttentionExplainerConfig.for_model(config, layer_idx=-1))
    assert last.head_coeffs.shape == (2,)
    # the last-layer explainer ignores every other layer
    changed = (scores[0] * 7.0, scores[1])
    torch.testing.assert_close(last(scores).explanation, last(changed).explanation)
    assert not torch.allclose(explainer(scores).explanation, explainer(changed).explanation)
    single = AttentionExplainer(AttentionExplainerConfig.for_model(config, head_idx=3))
    expected = scores[1][:, 1].mean(1).softmax(-1)
    torch.testing.assert_close(single(scores).explanation, expected)


def test_cls_row_aggregator_and_mask():
    config = tiny_config()
    scores = AttentionExplainerTester().prepare_inputs(AttentionExplainer)["attention_scores"]
    explainer = AttentionExplainer(AttentionExplainerConfig.for_model(config, aggregator=0))
    expected = (torch.cat(scores, 1)[:, :, 0].mean(1)).softmax(-1)  # uniform weights: the mean over heads
    torch.testing.assert_close(explainer(scores).explanation, expected)
    mask = torch.ones(3, 5)
    mask[:, -1] = 0
    masked = AttentionExplainer(AttentionExplainerConfig.for_model(config))(scores, attention_mask=mask).explanation
    assert (masked[:, -1] == 0).all()
    torch.testing.assert_close(masked.sum(-1), torch.ones(3))


def test_saliency_map_is_the_renormalised_patch_grid():
    config = tiny_config()
    scores = AttentionExplainerTester().prepare_inputs(AttentionExplainer)["attention_scores"]
    output = AttentionExplainer(AttentionExplainerConfig.for_model(config))(scores)
    assert output.saliency_map.shape == (3, 2, 2)
    torch.testing.assert_close(
        output.saliency_map.flatten(1), output.explanation[:, 1:] / output.explanation[:, 1:].sum(-1, keepdim=True)
    )


@pytest.mark.parametrize("method", ["grad_norm", "grad_x_input", "integrated_gradients"])
def test_gradient_explainers(method):
    torch.manual_seed(0)
    model = ScaffoldVitForImageClassification(tiny_config()).eval()
    explainer = GradientExplainer(method, patch_grid=(2, 2))
    output = explainer.explain(model, images())
    assert output.explanation.shape == (3, 5) and not output.explanation.requires_grad
    torch.testing.assert_close(output.explanation.sum(-1), torch.ones(3))
    embeddings = model.vit.embeddings(images()).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeddings).logits
    logits.gather(1, logits.argmax(-1, keepdim=True)).sum().backward()
    grad = embeddings.grad
    if method == "grad_norm":
        torch.testing.assert_close(output.token_logits, grad.norm(dim=-1))
    elif method == "grad_x_input":
        torch.testing.assert_close(output.token_logits, (grad * embeddings).sum(-1).detach() / 0.1)
    else:  # the batched path equals the integral summed point by point
        alphas, weights = explainer.path_points(embeddings)
        targets = logits.argmax(-1, keepdim=True)
        integral = torch.zeros_like(embeddings)
        for alpha, weight in zip(alphas, weights, strict=True):
            point = (alpha * embeddings.detach()).requires_grad_(True)
            model(inputs_embeds=point).logits.gather(1, targets).sum().backward()
            integral += weight * point.grad
        expected = (integral * embeddings).sum(-1).detach() / 0.5
        torch.testing.assert_close(output.token_logits, expected, rtol=1e-4, atol=1e-5)


def test_plain_vit_checkpoint_loads_with_a_new_head(tmp_path):
    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    torch.manual_seed(0)
    vit = ViTForImageClassification(config).eval()
    vit.save_pretrained(tmp_path)
    model, info = ScaffoldVitForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert set(info["missing_keys"]) == {"vit.scalar_mix.mix_logits", "vit.scalar_mix.gamma"}
    assert not [key for key in info["mismatched_keys"]]
    for name, tensor in vit.vit.state_dict().items():
        if not name.startswith(("pooler", "layernorm.")):
            torch.testing.assert_close(model.vit.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    cls_model = ScaffoldVitForImageClassification.from_pretrained(tmp_path, pooling="cls").eval()
    with torch.no_grad():
        torch.testing.assert_close(cls_model(images()).logits, vit(images()).logits)


def test_bad_inputs():
    model = ScaffoldVitForImageClassification(tiny_config()).eval()
    with pytest.raises(ValueError, match="pixel_values"):
        model(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="pixel_values"):
        model(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="exactly one"):
        model()
    explainer = AttentionExplainer(AttentionExplainerConfig.for_model(tiny_config()))
    with pytest.raises(ValueError, match="attention_scores"):
        explainer(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="attention_scores"):
        explainer((torch.randn(2, 2, 5, 5),))  # one layer where two are expected
    with pytest.raises(StrictDataclassClassValidationError, match="pooling"):
        tiny_config(pooling="max")
    with pytest.raises(StrictDataclassClassValidationError, match="head_normalizer"):
        AttentionExplainerConfig(head_normalizer="relu")
    with pytest.raises(StrictDataclassClassValidationError, match="layer_idx"):
        AttentionExplainerConfig(num_hidden_layers=2, layer_idx=2)
    with pytest.raises(StrictDataclassClassValidationError, match="init"):
        AttentionExplainerConfig(init="zeros")
    with pytest.raises(ValueError, match="method"):
        GradientExplainer("saliency")
    with pytest.raises(ValueError, match="preset"):
        ScaffoldVitConfig.from_preset("scaffold-vit-huge")
