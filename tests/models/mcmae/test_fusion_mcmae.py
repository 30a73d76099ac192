"""MCMAE's multi-scale fusion (paper Sec. 3.3): the stage-1 and stage-2 feature maps, projected to the token grid by
strided convolutions (kernel = stride = 4 and 2 at the paper's sizes), are added to the stage-3 encoder tokens at the
visible positions before the encoder LayerNorm; the sum is the decoder's input. Checked here: the decoder input is
exactly that sum (recomputed with an independent unfold-and-matmul projection), each path changes it, and each path
carries gradient back into its own conv stage.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from hfvision.models.mcmae import McMaeConfig, McMaeForPreTraining

BATCH_SIZE = 3


@pytest.fixture(scope="module")
def model() -> McMaeForPreTraining:
    torch.manual_seed(0)
    # float64: recomputation agrees to 1e-10, far below every difference the tests look for.
    return McMaeForPreTraining(McMaeConfig.from_preset("mcmae-tiny")).double().eval()


@pytest.fixture(scope="module")
def inputs(model) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    size, num_patches = model.config.image_size, model.config.num_patches
    return {
        "pixel_values": torch.randn(BATCH_SIZE, 3, size, size, generator=generator, dtype=torch.float64),
        "noise": torch.rand(BATCH_SIZE, num_patches, generator=generator),
    }


def strided_projection(features: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """`(B, C, H, W)` -> `(B, N, D)`: each token's own `stride x stride` block of the map, times the conv's weight
    (written as unfold + matmul, independent of the model's convolution call), in raster token order."""
    stride = conv.stride[0]
    blocks = F.unfold(features, kernel_size=stride, stride=stride)  # (B, C * stride * stride, N)
    return (conv.weight.flatten(1) @ blocks + conv.bias[:, None]).transpose(1, 2)


def visible_ids(noise: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """Indices of the kept tokens in the order the encoder holds them (lowest noise first), `(B, N_visible)`."""
    num_kept = int(noise.shape[1] * (1 - mask_ratio))
    return noise.argsort(dim=1)[:, :num_kept]


def at(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.gather(tokens, 1, ids[..., None].expand(-1, -1, tokens.shape[-1]))


def test_config_uses_the_fusion_at_the_papers_strides(model):
    """Each fusion conv covers exactly one token's block of its map: kernel = stride = the map's step to the tokens."""
    strides = model.config.patch_sizes
    assert model.config.use_multiscale_fusion
    assert model.stage1_fusion.stride[0] == model.stage1_fusion.kernel_size[0] == strides[1] * strides[2]
    assert model.stage2_fusion.stride[0] == model.stage2_fusion.kernel_size[0] == strides[2]
    paper = McMaeConfig()  # the official Base: stage strides 4, 2, 2 -> fusion convs 4x4/4 and 2x2/2
    assert paper.patch_sizes[1] * paper.patch_sizes[2] == 4 and paper.patch_sizes[2] == 2


def test_decoder_input_is_the_stage3_tokens_plus_both_projections_at_the_visible_positions(model, inputs):
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=True)
    stage1, stage2 = outputs.conv_hidden_states
    tokens = outputs.hidden_states[-1]  # (B, N_visible, D): the encoder's final visible tokens, before fusion
    ids = visible_ids(inputs["noise"], model.config.mask_ratio)
    fused1 = at(strided_projection(stage1, model.stage1_fusion), ids)
    fused2 = at(strided_projection(stage2, model.stage2_fusion), ids)
    expected = model.encoder_norm(tokens + fused1 + fused2)
    torch.testing.assert_close(outputs.last_hidden_state, expected, rtol=0, atol=1e-10)
    # Both paths are of the tokens' order of magnitude, and the positions matter: the projections taken at other
    # tokens (the first N_visible in raster order) do not give the decoder input.
    assert fused1.norm() > 0.1 * tokens.norm() and fused2.norm() > 0.1 * tokens.norm()
    raster = torch.arange(ids.shape[1]).expand_as(ids)
    misplaced = model.encoder_norm(
        tokens
        + at(strided_projection(stage1, model.stage1_fusion), raster)
        + at(strided_projection(stage2, model.stage2_fusion), raster)
    )
    assert (outputs.last_hidden_state - misplaced).abs().max() > 1e-3


@pytest.mark.parametrize("removed", [("stage1_fusion",), ("stage2_fusion",), ("stage1_fusion", "stage2_fusion")])
def test_each_path_changes_the_decoder_input_and_the_reconstruction(model, inputs, removed):
    """Zeroing a fusion conv leaves the encoder's tokens as they were and changes what the decoder gets and predicts;
    with both zeroed the decoder input is the LayerNorm of the encoder tokens alone."""
    ablated = copy.deepcopy(model)
    for name in removed:
        torch.nn.init.zeros_(getattr(ablated, name).weight)
        torch.nn.init.zeros_(getattr(ablated, name).bias)
    with torch.no_grad():
        full = model(**inputs, output_hidden_states=True)
        without = ablated(**inputs, output_hidden_states=True)
    torch.testing.assert_close(without.hidden_states[-1], full.hidden_states[-1], rtol=0, atol=0)
    assert (without.last_hidden_state - full.last_hidden_state).abs().max() > 1e-2
    assert (without.logits - full.logits).abs().max() > 1e-3
    if len(removed) == 2:
        expected = model.encoder_norm(full.hidden_states[-1])
        torch.testing.assert_close(without.last_hidden_state, expected, rtol=0, atol=1e-12)


def _grads(model: McMaeForPreTraining, inputs: dict[str, torch.Tensor], detach: str | None = None) -> dict:
    """Gradients of the pretraining loss; `detach` cuts the named fusion conv off from its conv stage (its input is
    detached), which leaves the forward as it was."""
    model = copy.deepcopy(model)
    outputs_of_fusion = {}
    for name in ("stage1_fusion", "stage2_fusion"):
        conv = getattr(model, name)
        if name == detach:
            conv.register_forward_pre_hook(lambda module, args: (args[0].detach(),))

        def keep(module, args, output, name=name):
            output.retain_grad()
            outputs_of_fusion[name] = output

        conv.register_forward_hook(keep)
    outputs = model(**inputs)
    outputs.loss.backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    grads.update({f"{name}.output": output.grad for name, output in outputs_of_fusion.items()})
    return {"loss": outputs.loss.detach(), "mask": outputs.mask, **grads}


def test_each_path_receives_gradient_at_the_visible_positions_and_passes_it_to_its_stage(model, inputs):
    full = _grads(model, inputs)
    grid = model.config.image_size // model.config.patch_size
    for name in ("stage1_fusion", "stage2_fusion"):
        assert full[f"{name}.weight"].abs().sum() > 0 and full[f"{name}.bias"].abs().sum() > 0, name
        # The projection is added at the visible tokens only: its gradient is non-zero there and exactly 0 elsewhere.
        per_token = full[f"{name}.output"].reshape(BATCH_SIZE, -1, grid * grid).abs().sum(dim=1)  # (B, N)
        masked = full["mask"].bool()
        assert (per_token[~masked] > 0).all() and (per_token[masked] == 0).all(), name

    # Cutting a path leaves the loss unchanged and takes its share out of the gradient of its conv stage.
    for name, stage in (("stage1_fusion", "mcmae.conv_stages.0."), ("stage2_fusion", "mcmae.conv_stages.1.")):
        cut = _grads(model, inputs, detach=name)
        torch.testing.assert_close(cut["loss"], full["loss"], rtol=0, atol=0)
        stage_params = [key for key in full if key.startswith(stage)]
        assert stage_params, stage
        difference = max((full[key] - cut[key]).abs().max() for key in stage_params)
        scale = max(full[key].abs().max() for key in stage_params)
        assert difference > 1e-3 * scale, name
