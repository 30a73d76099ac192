"""SMaT: the meta-gradient through the differentiable lookahead, the untouched random stream, and a training sanity
check on a tiny problem."""

from __future__ import annotations

import contextlib

import pytest
import torch

from hfvision.models.scaffold import (
    AttentionExplainer,
    AttentionExplainerConfig,
    GradientExplainer,
    ScaffoldVitConfig,
    ScaffoldVitForImageClassification,
    explanation_kl,
    modeling_scaffold,
)
from hfvision.models.scaffold.smat_scaffold import (
    SmatConfig,
    SmatTrainer,
    clipped_update,
    reset_layer_init_,
    simulability,
)


def build(seed: int = 0, dtype: torch.dtype = torch.float32, **config_overrides) -> SmatTrainer:
    """A tiny teacher (seed 100) and student (seed `seed`), fresh explainers."""
    overrides = {"num_labels": 3, **config_overrides}
    smat_overrides = {key: overrides.pop(key) for key in list(overrides) if key in SmatConfig.__dataclass_fields__}
    config = ScaffoldVitConfig.from_preset("scaffold-vit-tiny", **overrides)
    torch.manual_seed(100)
    teacher_config = ScaffoldVitConfig.from_preset(
        "scaffold-vit-tiny", num_labels=3, initializer_range=0.3, num_hidden_layers=config.num_hidden_layers
    )
    teacher = ScaffoldVitForImageClassification(teacher_config).to(dtype)
    torch.manual_seed(seed)
    student = ScaffoldVitForImageClassification(config).to(dtype)
    teacher_explainer = AttentionExplainer(AttentionExplainerConfig.for_model(teacher_config)).to(dtype)
    student_explainer = AttentionExplainer(AttentionExplainerConfig.for_model(config)).to(dtype)
    return SmatTrainer(teacher, teacher_explainer, student, student_explainer, SmatConfig(**smat_overrides))


def batch(seed: int, size: int = 4, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(size, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def float64_eager_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' eager attention without its float32 softmax, so a float64 model stays float64 throughout."""
    weights = (torch.matmul(query, key.transpose(2, 3)) * scaling).softmax(-1)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def test_meta_gradient_matches_central_finite_differences_float64(monkeypatch):
    """d L_out(theta'(phi)) / d phi by autograd through the lookahead == central differences, on a 1-layer model."""
    monkeypatch.setattr(modeling_scaffold, "eager_attention_forward", float64_eager_attention)
    trainer = build(dtype=torch.float64, num_hidden_layers=1, student_lr=0.5, explanation_coeff=5.0, grad_clip=1e3)
    # non-uniform (but all-in-support) coefficients: sparsemax is linear around them
    with torch.no_grad():
        trainer.teacher_explainer.head_coeffs.copy_(torch.tensor([0.45, 0.55], dtype=torch.float64))
    train, valid = batch(0, dtype=torch.float64), batch(1, 6, dtype=torch.float64)
    train_labels, scores = trainer.teacher_outputs(train)
    valid_labels, _ = trainer.teacher_outputs(valid)

    def objective() -> torch.Tensor:
        return trainer.lookahead_loss(train, train_labels, scores, valid, valid_labels)

    coefficients = trainer.teacher_explainer.head_coeffs
    analytic = torch.autograd.grad(objective(), coefficients)[0]
    numeric = torch.zeros_like(analytic)
    eps = 1e-6
    for index in range(coefficients.numel()):
        with torch.no_grad():
            coefficients[index] += eps
        plus = objective().item()
        with torch.no_grad():
            coefficients[index] -= 2 * eps
        minus = objective().item()
        with torch.no_grad():
            coefficients[index] += eps
        numeric[index] = (plus - minus) / (2 * eps)
    assert analytic.abs().max() > 1e-6  # the explainer does move the student's validation loss
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-9)


def test_clipped_update_equals_clip_grad_norm_and_sgd():
    torch.manual_seed(0)
    params = {"a": torch.randn(3, 4), "b": torch.randn(5)}
    grads = {"a": torch.randn(3, 4) * 10, "b": torch.randn(5) * 10}
    expected = {name: value.clone().requires_grad_(True) for name, value in params.items()}
    for name, value in expected.items():
        value.grad = grads[name].clone()
    torch.nn.utils.clip_grad_norm_(list(expected.values()), 5.0)
    torch.optim.SGD(list(expected.values()), lr=0.1, weight_decay=0.01).step()
    updated = clipped_update(params, grads, lr=0.1, weight_decay=0.01, max_norm=5.0)
    for name in params:
        torch.testing.assert_close(updated[name], expected[name].detach(), rtol=1e-6, atol=1e-7)


def _run(trainer: SmatTrainer, steps: int = 4) -> list[dict]:
    torch.manual_seed(123)  # the student's dropout stream
    return [trainer.train_step(batch(10 + step), batch(50 + step, 6)) for step in range(steps)]


def test_meta_lr_zero_reproduces_the_static_run_bit_for_bit():
    """The meta step runs (and would draw dropout masks) but leaves the student's random stream untouched."""
    static = build(hidden_dropout_prob=0.2, meta_learn=False)
    zero = build(hidden_dropout_prob=0.2, meta_learn=True, meta_lr=0.0)
    static_logs, zero_logs = _run(static), _run(zero)
    assert all("meta_loss" in logs for logs in zero_logs) and not any("meta_loss" in logs for logs in static_logs)
    for name, tensor in static.student.state_dict().items():
        assert torch.equal(tensor, zero.student.state_dict()[name]), name
    assert torch.equal(static.student_explainer.head_coeffs, zero.student_explainer.head_coeffs)
    assert torch.equal(static.teacher_explainer.head_coeffs, zero.teacher_explainer.head_coeffs)
    # negative control: a meta step that consumes the student's random stream breaks the equality
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.random, "fork_rng", lambda *args, **kwargs: contextlib.nullcontext())
        leaky = build(hidden_dropout_prob=0.2, meta_learn=True, meta_lr=0.0)
        _run(leaky)
    assert any(not torch.equal(t, leaky.student.state_dict()[n]) for n, t in static.student.state_dict().items())


def test_meta_step_moves_the_teacher_explainer_and_keeps_a_distribution():
    trainer = build(meta_lr=0.05, student_lr=0.1)
    before = trainer.teacher_explainer.head_coeffs.detach().clone()
    logs = _run(trainer, steps=3)
    assert not torch.equal(before, trainer.teacher_explainer.head_coeffs)
    weights = trainer.teacher_explainer.head_weights()
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in logs)


def test_explanation_loss_teaches_the_student_to_explain_like_the_teacher():
    """Trained with beta > 0 the student's explanations approach the teacher's; with beta = 0 (control) they do not."""
    pixels = batch(3, 8)
    final = {}
    for beta in (0.0, 5.0):
        trainer = build(meta_learn=False, student_lr=0.5, explanation_coeff=beta)
        torch.manual_seed(0)
        for _ in range(40):
            trainer.train_step(pixels)
        _, scores = trainer.teacher_outputs(pixels)
        with torch.no_grad():
            student_scores = trainer.student(pixels, output_attention_scores=True).attention_scores
            final[beta] = explanation_kl(
                trainer.teacher_explainer(scores).explanation, trainer.student_explainer(student_scores).explanation
            ).item()
    assert final[5.0] < 0.5 * final[0.0], final


def test_static_gradient_teacher_explainer_and_no_explanation_baseline():
    trainer = build(meta_learn=False, explanation_coeff=0.2)
    trainer = SmatTrainer(
        trainer.teacher,
        GradientExplainer("grad_x_input", patch_grid=(2, 2)),
        trainer.student,
        trainer.student_explainer,
        SmatConfig(explanation_coeff=0.2, meta_learn=False),
    )
    logs = trainer.train_step(batch(0))
    assert logs["explanation_loss"] > 0
    plain = build(explanation_coeff=0.0)
    assert not plain.meta_learned and plain.train_step(batch(0))["explanation_loss"] == 0.0


def test_state_dict_roundtrip_resumes_identically():
    first = build(meta_lr=0.01)
    _run(first, steps=2)
    state = first.state_dict()
    second = build(meta_lr=0.01)
    second.student.load_state_dict(first.student.state_dict())
    second.student_explainer.load_state_dict(first.student_explainer.state_dict())
    second.teacher_explainer.load_state_dict(first.teacher_explainer.state_dict())
    second.load_state_dict(state)
    torch.manual_seed(7)
    a = first.train_step(batch(90), batch(91, 6))
    torch.manual_seed(7)
    b = second.train_step(batch(90), batch(91, 6))
    assert a == b and second.step == first.step == 3


def test_simulability_and_bad_inputs():
    teacher = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert simulability(teacher, teacher) == 1.0
    assert simulability(-teacher, teacher) == 0.0
    with pytest.raises(ValueError, match="student_logits"):
        simulability(teacher[:2], teacher)
    with pytest.raises(ValueError, match="student_lr"):
        SmatConfig(student_lr=0)
    with pytest.raises(ValueError, match="meta_interval"):
        SmatConfig(meta_interval=0)
    trainer = build()
    with pytest.raises(TypeError, match="teacher_explainer"):
        SmatTrainer(trainer.teacher, object(), trainer.student, trainer.student_explainer)
    with pytest.raises(ValueError, match="valid_pixels"):
        trainer.train_step(batch(0))


def test_reset_layer_init_gives_every_layer_pytorchs_default_scale_and_keeps_the_embeddings():
    torch.manual_seed(0)
    model = ScaffoldVitForImageClassification(ScaffoldVitConfig.from_preset("scaffold-vit-digits"))
    embeddings = model.vit.embeddings
    kept = {"cls": embeddings.cls_token.clone(), "positions": embeddings.position_embeddings.clone()}
    assert reset_layer_init_(model) is model
    assert torch.equal(embeddings.cls_token, kept["cls"])
    assert torch.equal(embeddings.position_embeddings, kept["positions"])
    layers = [module for module in model.modules() if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))]
    assert len(layers) == 1 + 4 * 6 + 1  # patch projection, q/k/v/o + 2 MLP per layer, classifier
    for layer in layers:
        bound = layer.weight[0].numel() ** -0.5  # kaiming-uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert layer.weight.abs().max() <= bound
        assert 0.8 < layer.weight.std().item() / (bound / 3**0.5) < 1.2
