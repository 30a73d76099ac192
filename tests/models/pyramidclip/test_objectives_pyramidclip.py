"""The objectives of `training/pretrain_pyramidclip.py --objective`: the paper's and the ablations that separate it.

Every objective trains the same towers; only the config settings (`softening_alpha`, `objective`) and the part of the
pyramid batch the model reads differ. Each loss is recomputed here from the model's embeddings with an independent
InfoNCE (`F.cross_entropy`, label smoothing alpha * N / (N - 1) for the softened one), and each ablation is checked to
reduce to the objective it must reduce to: `clip_soft` at alpha 0 is `clip`, `pyramid_hard` is `pyramid` at alpha 0,
`clip_multi` with three identical texts is `clip`.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError

from hfvision.models.pyramidclip import PyramidClipConfig, PyramidClipModel
from hfvision.models.pyramidclip.modeling_pyramidclip import LOSS_TERMS, MULTI_CAPTION_LOSS_TERMS
from tests.models.pyramidclip.conftest import six_embeddings
from tests.training.conftest import load_training_script

BATCH_SIZE = 4
VOCAB_SIZE = 99


@pytest.fixture(scope="module")
def script():
    return load_training_script("pretrain_pyramidclip")


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    """One set of float64 weights that every objective's model loads (the objective is no weight)."""
    torch.manual_seed(0)
    return PyramidClipModel(_config()).double().state_dict()


def _config(**overrides) -> PyramidClipConfig:
    return PyramidClipConfig.from_preset(
        "pyramidclip-tiny", text_config={"vocab_size": VOCAB_SIZE, "max_position_embeddings": 16}, **overrides
    )


def model_for(script, objective: str, weights: dict[str, torch.Tensor], **overrides) -> PyramidClipModel:
    """The model with the settings of `--objective`, on the shared weights; float64 and eval (the LeFF BatchNorm then
    uses running statistics, so each tower call is independent of the others)."""
    model = PyramidClipModel(_config(**{**script.OBJECTIVES[objective].config, **overrides})).double().eval()
    model.load_state_dict(weights)
    return model


@pytest.fixture(scope="module")
def batch(weights) -> dict[str, torch.Tensor]:
    """A pyramid batch as `PyramidBatchCollator` yields it (keys removed): three different texts per image."""
    generator = torch.Generator().manual_seed(1)
    config = _config()
    size, roi_dim = config.vision_config.image_size, config.vision_config.roi_feature_dim

    def pixels() -> torch.Tensor:
        return torch.randn(BATCH_SIZE, 3, size, size, generator=generator, dtype=torch.float64)

    def tokens(length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.randint(2, VOCAB_SIZE, (BATCH_SIZE, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[0, length - 2 :] = 0  # right padding, as the tokenizer does
        return ids, mask

    (input_ids, attention_mask), (summary_ids, summary_mask), (attribute_ids, attribute_mask) = (
        tokens(7),
        tokens(5),
        tokens(4),
    )
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": pixels(),
        "pixel_values_local": pixels(),
        "summary_input_ids": summary_ids,
        "summary_attention_mask": summary_mask,
        "attribute_input_ids": attribute_ids,
        "attribute_attention_mask": attribute_mask,
        "roi_features": torch.randn(BATCH_SIZE, 3, roi_dim, generator=generator, dtype=torch.float64),
        "roi_mask": torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]]),
    }


def run(script, objective: str, model: PyramidClipModel, batch: dict[str, torch.Tensor]):
    with torch.no_grad():
        return model(**script.OBJECTIVES[objective].select(batch), return_loss=True)


def scale_of(model: PyramidClipModel) -> torch.Tensor:
    return model.logit_scale.detach().exp().clamp(max=100)


def infonce(visual: torch.Tensor, textual: torch.Tensor, scale: torch.Tensor, alpha: float) -> torch.Tensor:
    """Symmetric InfoNCE of normalised `(N, D)` embeddings, the softened targets as label smoothing."""
    logits, labels = scale * visual @ textual.t(), torch.arange(visual.shape[0])
    smoothing = alpha * visual.shape[0] / (visual.shape[0] - 1)  # 1 - alpha on the positive, alpha / (N-1) elsewhere
    return (
        F.cross_entropy(logits, labels, label_smoothing=smoothing)
        + F.cross_entropy(logits.t(), labels, label_smoothing=smoothing)
    ) / 2


def test_every_objective_trains_with_its_settings_and_logs_its_terms(script, weights, batch):
    expected_alpha = {"pyramid": 0.2, "pyramid_hard": 0.0, "clip": 0.0, "clip_soft": 0.2, "clip_multi": 0.0}
    assert set(script.OBJECTIVES) == set(expected_alpha)
    for name, alpha in expected_alpha.items():
        model = model_for(script, name, weights)
        assert model.config.softening_alpha == alpha, name
        outputs = run(script, name, model, batch)
        assert outputs.loss.ndim == 0 and torch.isfinite(outputs.loss), name
        logged = script.OBJECTIVES[name].loss_terms
        for term in ("loss_global_text", *LOSS_TERMS):
            assert (getattr(outputs, term) is not None) == (term in logged), (name, term)


def test_clip_soft_is_the_softened_single_pair_and_at_alpha_zero_is_clip(script, weights, batch):
    clip_model, soft_model = model_for(script, "clip", weights), model_for(script, "clip_soft", weights)
    clip, soft = run(script, "clip", clip_model, batch), run(script, "clip_soft", soft_model, batch)
    embeds, scale = six_embeddings(clip_model, batch), scale_of(clip_model)
    torch.testing.assert_close(clip.loss, infonce(embeds["global"], embeds["text"], scale, 0.0))
    torch.testing.assert_close(soft.loss, infonce(embeds["global"], embeds["text"], scale, 0.2))
    assert abs(float(soft.loss - clip.loss)) > 1e-4  # the softening changes the loss
    soft_at_zero = run(script, "clip_soft", model_for(script, "clip_soft", weights, softening_alpha=0.0), batch)
    torch.testing.assert_close(soft_at_zero.loss, clip.loss, rtol=0, atol=1e-12)


def test_pyramid_hard_is_the_pyramid_at_alpha_zero(script, weights, batch):
    hard = run(script, "pyramid_hard", model_for(script, "pyramid_hard", weights), batch)
    pyramid_model = model_for(script, "pyramid", weights)
    pyramid = run(script, "pyramid", pyramid_model, batch)
    pyramid_at_zero = run(script, "pyramid", model_for(script, "pyramid", weights, softening_alpha=0.0), batch)
    for term in ("loss", *LOSS_TERMS):
        torch.testing.assert_close(getattr(hard, term), getattr(pyramid_at_zero, term), rtol=0, atol=1e-12)
    # Independently: the six plain InfoNCE terms of the paper's pairs, each weighted 1/6 (lambda = mu = 1/3).
    embeds, scale = six_embeddings(pyramid_model, batch), scale_of(pyramid_model)
    pairs = [("global", "summary"), ("local", "text"), ("global", "attribute"), ("region", "summary"),
             ("local", "attribute"), ("region", "text")]  # fmt: skip
    plain = [infonce(embeds[visual], embeds[textual], scale, 0.0) for visual, textual in pairs]
    for term, value in zip(LOSS_TERMS, plain, strict=True):
        torch.testing.assert_close(getattr(hard, term), value)
    torch.testing.assert_close(hard.loss, sum(plain) / 6)
    assert abs(float(pyramid.loss - hard.loss)) > 1e-4  # the paper's alpha 0.2 differs


def test_clip_multi_averages_the_global_view_against_each_text(script, weights, batch):
    model = model_for(script, "clip_multi", weights)
    outputs = run(script, "clip_multi", model, batch)
    embeds, scale = six_embeddings(model, batch), scale_of(model)
    expected = {
        term: infonce(embeds["global"], embeds[text], scale, 0.0)
        for term, text in zip(MULTI_CAPTION_LOSS_TERMS, ("text", "summary", "attribute"), strict=True)
    }
    for term, value in expected.items():
        torch.testing.assert_close(getattr(outputs, term), value)
    torch.testing.assert_close(outputs.loss, sum(expected.values()) / 3)
    values = sorted(float(value) for value in expected.values())
    assert values[1] - values[0] > 1e-4 and values[2] - values[1] > 1e-4  # so a mis-paired term would show
    # Swapping the summary and attribute inputs swaps exactly their two terms.
    swapped = dict(batch)
    for suffix in ("input_ids", "attention_mask"):
        swapped[f"summary_{suffix}"], swapped[f"attribute_{suffix}"] = (
            batch[f"attribute_{suffix}"],
            batch[f"summary_{suffix}"],
        )
    after = run(script, "clip_multi", model, swapped)
    torch.testing.assert_close(after.loss_global_summary, outputs.loss_global_attribute)
    torch.testing.assert_close(after.loss_global_attribute, outputs.loss_global_summary)
    torch.testing.assert_close(after.loss_global_text, outputs.loss_global_text)


def test_clip_multi_with_identical_texts_is_clip(script, weights, batch):
    same_texts = dict(batch)
    for prefix in ("summary_", "attribute_"):
        same_texts[f"{prefix}input_ids"], same_texts[f"{prefix}attention_mask"] = (
            batch["input_ids"],
            batch["attention_mask"],
        )
    multi = run(script, "clip_multi", model_for(script, "clip_multi", weights), same_texts)
    clip = run(script, "clip", model_for(script, "clip", weights), batch)
    torch.testing.assert_close(multi.loss, clip.loss, rtol=0, atol=1e-12)
    with_own_texts = run(script, "clip_multi", model_for(script, "clip_multi", weights), batch)
    assert abs(float(with_own_texts.loss - clip.loss)) > 1e-4  # the extra captions are what changes it


def test_multi_caption_objective_names_the_inputs_it_does_not_read(weights, batch):
    model = PyramidClipModel(_config(objective="multi_caption")).double().eval()
    model.load_state_dict(weights)
    with pytest.raises(ValueError, match=r"pixel_values_local.*roi_features.*multi_caption"):
        model(**batch, return_loss=True)
    with pytest.raises(ValueError, match="together"):
        model(**{key: batch[key] for key in ("input_ids", "pixel_values", "summary_input_ids")}, return_loss=True)
    with pytest.raises(StrictDataclassClassValidationError, match="objective"):
        _config(objective="clip")


def test_the_objective_replaces_a_continued_checkpoints_settings(script, tiny_checkpoint, tiny_processor):
    """`--model_name_or_path` with `--objective clip` trains with alpha 0 even from an alpha-0.2 checkpoint."""
    roi_dim = tiny_processor.image_processor.roi_feature_dim
    for objective, alpha, name in (("clip", 0.0, "pyramid"), ("clip_multi", 0.0, "multi_caption")):
        model_args = script.ModelArguments(model_name_or_path=str(tiny_checkpoint), objective=objective)
        model = script.build_model(model_args, vocab_size=len(tiny_processor.tokenizer), roi_feature_dim=roi_dim)
        assert (model.config.softening_alpha, model.config.objective) == (alpha, name)
        assert model.pyramid_loss.alpha == alpha
