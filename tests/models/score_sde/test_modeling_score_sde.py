"""Score-SDE models: the transformers-model contract, the SDE schedule, the exact empirical score, bad configs."""

from __future__ import annotations

import math

import pytest
import torch

from hfvision.models.score_sde import (
    EmpiricalScoreConfig,
    EmpiricalScoreModel,
    ScoreSdeConfig,
    ScoreSdeModel,
    ScoreSdeSchedule,
)
from tests.models.common import ModelCommonTests

SIGMAS = torch.tensor([0.05, 0.5, 2.0])


class ScoreSdeModelTester:
    batch_size = 3

    def __init__(self, preset: str, config_class: type = ScoreSdeConfig, **fields: object) -> None:
        self.preset, self.config_class, self.fields = preset, config_class, fields

    def get_config(self, model_class: type | None = None, **overrides: object) -> ScoreSdeConfig:
        return self.config_class(**{**ScoreSdeConfig.PRESETS[self.preset], **self.fields, **overrides})

    def prepare_inputs(self, model_class: type) -> dict:
        generator = torch.Generator().manual_seed(0)
        shape = (self.batch_size, *self.get_config().data_shape)
        return {"sample": torch.randn(shape, generator=generator), "sigma": SIGMAS.clone()}

    def slice_inputs(self, inputs: dict, index: int) -> dict:
        return {name: value[index : index + 1] for name, value in inputs.items()}

    def compared(self, outputs, model_class: type) -> torch.Tensor:
        return torch.cat([outputs.score.flatten(1), outputs.denoised.flatten(1)], dim=1)

    def recorded(self, outputs, model_class: type | None = None) -> list[tuple]:
        return []  # no attention layers; hidden states are checked by `test_hidden_states_with_gradients`

    def loss_kwargs(self, model_class: type) -> dict:
        generator = torch.Generator().manual_seed(1)
        shape = (self.batch_size, *self.get_config().data_shape)
        return {"return_loss": True, "noise": torch.randn(shape, generator=generator)}


class ScoreSdeNetworkTests(ModelCommonTests):
    all_model_classes = (ScoreSdeModel,)

    def test_hidden_states_with_gradients(self):
        """The network's activations (input projection, every block) come back on request, with gradients."""
        model = self.build(ScoreSdeModel).train()
        inputs = self.inputs(ScoreSdeModel)
        assert model(**inputs).hidden_states is None
        for from_config in (False, True):
            model.config.output_hidden_states = from_config
            hidden_states = model(**inputs, **({} if from_config else {"output_hidden_states": True})).hidden_states
            assert len(hidden_states) >= 3 and all(state.shape[0] == 3 for state in hidden_states)
            hidden_states[0].retain_grad()
            hidden_states[-1].pow(2).sum().backward()
            assert hidden_states[0].grad is not None and hidden_states[0].grad.abs().sum() > 0
            model.zero_grad()
        model.config.output_hidden_states = False

    def test_outputs_and_loss(self):
        model = self.build(ScoreSdeModel)
        inputs = self.inputs(ScoreSdeModel)
        outputs = model(**inputs, **self.model_tester.loss_kwargs(ScoreSdeModel))
        assert next(iter(outputs.keys())) == "loss" and outputs.loss.ndim == 0 and torch.isfinite(outputs.loss)
        assert outputs.score.shape == outputs.denoised.shape == outputs.noisy_sample.shape == inputs["sample"].shape
        # the loss is ||sigma s(x_0 + sigma z) + z||^2: recompute it from a plain evaluation at the noised sample
        noise = self.model_tester.loss_kwargs(ScoreSdeModel)["noise"]
        sigma = inputs["sigma"].view(-1, *[1] * (noise.ndim - 1))
        plain = model(outputs.noisy_sample, sigma=inputs["sigma"])
        torch.testing.assert_close(plain.score, outputs.score)
        expected = (sigma * plain.score + noise).pow(2).flatten(1).sum(-1).mean()
        torch.testing.assert_close(outputs.loss, expected)
        # drawn noise levels and noise are reproducible from a generator
        first = model(inputs["sample"], return_loss=True, generator=torch.Generator().manual_seed(3))
        second = model(inputs["sample"], return_loss=True, generator=torch.Generator().manual_seed(3))
        assert torch.equal(first.loss, second.loss) and torch.equal(first.sigma, second.sigma)

    def test_tweedie_links_score_and_denoised(self):
        """denoised = x + sigma^2 s in both parameterisations (EDM computes s without the D - x cancellation)."""
        for parameterization in ("ncsn", "edm"):
            model = self.build(ScoreSdeModel, config=self.model_tester.get_config(parameterization=parameterization))
            inputs = self.inputs(ScoreSdeModel)
            with torch.no_grad():
                outputs = model(**inputs)
            sigma = inputs["sigma"].view(-1, *[1] * (inputs["sample"].ndim - 1))
            torch.testing.assert_close(outputs.denoised, inputs["sample"] + sigma**2 * outputs.score)

    def test_bad_inputs_raise_clear_errors(self):
        model = self.build(ScoreSdeModel)
        sample = self.inputs(ScoreSdeModel)["sample"]
        with pytest.raises(ValueError, match="sample"):
            model(sample[..., :1], sigma=0.1)
        with pytest.raises(ValueError, match="noise level"):
            model(sample)
        with pytest.raises(ValueError, match="not both"):
            model(sample, sigma=0.1, timestep=0.5)
        with pytest.raises(ValueError, match="sigma"):
            model(sample, sigma=torch.ones(5))
        with pytest.raises(ValueError, match="> 0"):
            model(sample, sigma=0.0)


class TestScoreSdeMlp(ScoreSdeNetworkTests):
    model_tester = ScoreSdeModelTester("score-sde-tiny")

    def test_timestep_matches_the_ve_form(self):
        """`timestep=t` is the VE-form model at x / alpha_t, sigma_t / alpha_t, divided by alpha_t (every SDE)."""
        for sde in ("ve", "vp", "ou"):
            model = self.build(ScoreSdeModel, config=self.model_tester.get_config(sde=sde))
            sample = self.inputs(ScoreSdeModel)["sample"]
            timestep = torch.tensor([0.1, 0.4, 0.9])
            alpha, sigma = model.schedule.alpha_sigma(timestep)
            with torch.no_grad():
                by_time = model(sample, timestep=timestep)
                by_sigma = model(sample / alpha.float()[:, None], sigma=(sigma / alpha).float())
            torch.testing.assert_close(by_time.score, by_sigma.score / alpha.float()[:, None])

    def test_score_grows_like_one_over_sigma(self):
        """Digest B2.3: the network can output scores of size ~ 1 / sigma (NCSN scaling and EDM both allow it)."""
        for parameterization in ("ncsn", "edm"):
            model = self.build(ScoreSdeModel, config=self.model_tester.get_config(parameterization=parameterization))
            sample = self.inputs(ScoreSdeModel)["sample"]
            with torch.no_grad():
                norms = [model(sample, sigma=sigma).score.norm(dim=-1).mean() for sigma in (1e-2, 1e-4)]
            assert 50 < norms[1] / norms[0] < 200, (parameterization, norms)


class TestScoreSdeUNet(ScoreSdeNetworkTests):
    model_tester = ScoreSdeModelTester("score-sde-unet-tiny")


class TestEmpiricalScoreModel(ModelCommonTests):
    model_tester = ScoreSdeModelTester("score-sde-tiny", EmpiricalScoreConfig, num_training_points=8)
    all_model_classes = (EmpiricalScoreModel,)

    def test_every_trainable_parameter_gets_a_gradient(self):
        """No trainable weights: the loss is still defined (the value the DSM minimiser reaches) and differentiable in
        the input."""
        model = self.build(EmpiricalScoreModel)
        assert not list(model.parameters())
        inputs = self.inputs(EmpiricalScoreModel)
        sample = inputs["sample"].requires_grad_(True)
        loss = model(sample, sigma=inputs["sigma"], **self.model_tester.loss_kwargs(EmpiricalScoreModel)).loss
        loss.backward()
        assert torch.isfinite(loss) and sample.grad.abs().sum() > 0

    def test_score_is_the_gradient_of_the_smoothed_log_density(self):
        """s_N(x, sigma) = grad_x log (1/N) sum_i N(x; x_i, sigma^2 I), checked against autograd (float64)."""
        generator = torch.Generator().manual_seed(0)
        points = torch.randn(7, 3, generator=generator, dtype=torch.float64)
        model = EmpiricalScoreModel.from_training_points(points)
        assert model.training_points.dtype == torch.float32  # stored as float32; compare against the stored points
        stored = model.training_points.double()
        model = model.double()
        sample = (torch.randn(5, 3, generator=generator, dtype=torch.float64) * 1.5).requires_grad_(True)
        for sigma in (0.05, 0.3, 1.0):
            log_density = torch.logsumexp(-(sample[:, None] - stored[None]).pow(2).sum(-1) / (2 * sigma**2), -1)
            (expected,) = torch.autograd.grad(log_density.sum(), sample)
            outputs = model(sample.detach(), sigma=sigma)
            torch.testing.assert_close(outputs.score, expected, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(outputs.denoised, sample.detach() + sigma**2 * expected)
            (from_model,) = torch.autograd.grad(model.log_density(sample, sigma).sum(), sample)
            torch.testing.assert_close(from_model, expected, rtol=1e-9, atol=1e-9)

    def test_vp_timestep_score_is_that_of_the_vp_marginal(self):
        """At time t of the VP SDE, p_t = (1/N) sum_i N(alpha_t x_i, sigma_t^2 I)."""
        generator = torch.Generator().manual_seed(0)
        model = EmpiricalScoreModel.from_training_points(torch.randn(6, 2, generator=generator), sde="vp").double()
        points = model.training_points
        sample = torch.randn(4, 2, generator=generator, dtype=torch.float64).requires_grad_(True)
        timestep = torch.tensor([0.05, 0.2, 0.5, 0.9], dtype=torch.float64)
        alpha, sigma = model.schedule.alpha_sigma(timestep)
        squared = (sample[:, None] - alpha[:, None, None] * points[None]).pow(2).sum(-1)
        log_density = torch.logsumexp(-squared / (2 * sigma[:, None] ** 2), -1)
        (expected,) = torch.autograd.grad(log_density.sum(), sample)
        torch.testing.assert_close(model(sample.detach(), timestep=timestep).score, expected, rtol=1e-8, atol=1e-8)

    def test_small_sigma_snaps_to_the_nearest_training_point(self):
        points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        model = EmpiricalScoreModel.from_training_points(points)
        sample = torch.tensor([[0.1, 0.05], [0.9, 0.2], [0.1, 0.7]])
        denoised = model(sample, sigma=1e-4).denoised
        assert torch.equal(denoised, points)

    def test_without_points_raises(self):
        model = EmpiricalScoreModel(EmpiricalScoreConfig(data_dim=2))
        with pytest.raises(ValueError, match="from_training_points"):
            model(torch.zeros(1, 2), sigma=1.0)
        with pytest.raises(ValueError, match="training_points"):
            EmpiricalScoreModel.from_training_points(torch.zeros(3, 2, 5))

    def test_keeps_the_sde_of_a_given_config(self):
        config = ScoreSdeConfig(sde="vp", data_dim=4, beta_max=10.0)
        model = EmpiricalScoreModel.from_training_points(torch.zeros(5, 2), config=config)
        assert (model.config.sde, model.config.beta_max, model.config.data_dim) == ("vp", 10.0, 2)
        assert model.config.model_type == "score_sde_empirical"
        assert model.config.auto_map["AutoModel"] == "modeling_score_sde.EmpiricalScoreModel"


def test_schedule_matches_its_formulas():
    """Digest B3: VE sigma_min (sigma_max/sigma_min)^t and g^2 = d sigma^2 / dt; VP alpha_t = exp(-t^2 (b1-b0)/4 -
    t b0 / 2); OU alpha = e^-t, sigma^2 = 1 - e^-2t; f and g^2 consistent with d(sigma_t^2)/dt = 2 f sigma^2 + g^2."""
    t = torch.tensor([0.01, 0.3, 0.7, 1.0], dtype=torch.float64)
    ve = ScoreSdeSchedule("ve", sigma_min=0.01, sigma_max=50.0)
    torch.testing.assert_close(ve.alpha_sigma(t)[1], 0.01 * 5000.0**t)
    vp = ScoreSdeSchedule("vp")
    torch.testing.assert_close(vp.alpha_sigma(t)[0], torch.exp(-(t**2) * (20 - 0.1) / 4 - t * 0.1 / 2))
    ou = ScoreSdeSchedule("ou", horizon=5.0)
    torch.testing.assert_close(ou.alpha_sigma(t)[1] ** 2, 1 - torch.exp(-2 * t))
    for schedule in (ve, vp, ou):
        step = 1e-6
        variance = lambda time, s=schedule: (s.alpha_sigma(time)[1] / s.alpha_sigma(time)[0]) ** 2  # noqa: E731
        derivative = (variance(t + step) - variance(t - step)) / (2 * step)  # d(sigma/alpha)^2/dt = g^2 / alpha^2
        torch.testing.assert_close(
            derivative, schedule.diffusion_squared(t) / schedule.alpha_sigma(t)[0] ** 2, rtol=1e-5, atol=0
        )
    assert ve.prior_std == 50.0 and vp.prior_std == 1.0
    assert math.isclose(ve.noise_level_range[1], 50.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sigma_min": 1.0, "sigma_max": 1.0}, "sigma_min"),
        ({"sigma_min": 2.0, "sigma_max": 1.0}, "sigma_min"),
        ({"sigma_min": -1.0}, "sigma_min"),
        ({"sde": "subvp"}, "sde"),
        ({"parameterization": "eps"}, "parameterization"),
        ({"time_embedding": "sinusoidal"}, "time_embedding"),
        ({"backbone": "vit"}, "backbone"),
        ({"beta_min": 30.0}, "beta_min"),
        ({"sampling_eps": 2.0}, "sampling_eps"),
        ({"backbone": "unet", "block_out_channels": [12, 16], "norm_num_groups": 8}, "norm_num_groups"),
        ({"backbone": "unet", "image_size": 10, "block_out_channels": [8, 8, 8]}, "image_size"),
        ({"data_dim": 0}, "data_dim"),
    ],
)
def test_bad_configs_raise_value_errors_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        ScoreSdeConfig(**fields)


def test_presets():
    assert ScoreSdeConfig().to_dict() == ScoreSdeConfig.from_preset("score-sde-circle").to_dict()
    assert ScoreSdeConfig.from_preset("score-sde-unet-32").data_shape == (3, 32, 32)
    assert ScoreSdeConfig.from_preset("score-sde-tiny", data_dim=5).num_features == 5
    with pytest.raises(ValueError, match="Unknown Score-SDE preset"):
        ScoreSdeConfig.from_preset("score-sde-huge")
    with torch.device("meta"):
        model = ScoreSdeModel(ScoreSdeConfig.from_preset("score-sde-circle"))
    assert 5e5 < sum(p.numel() for p in model.parameters()) < 7e5  # 4 x 256 residual MLP
