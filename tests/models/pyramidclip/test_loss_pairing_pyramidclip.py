"""PyramidCLIP's six loss terms each pair the paper's view with the paper's text (Sec. 3.3, Eq. 5-7).

Peer level: global view G - summary S, local view L - caption T. Cross level, global: G - attribute text A, regions
R - S; local: L - A, R - T. Each term is recomputed here from the model's embeddings with an independent softened
InfoNCE (cross-entropy with label smoothing alpha * N / (N - 1)); the nine view-text pairs give nine different
values (apart by more than 1e-4 here), so a term wired to a wrong pair cannot match. Swapping two inputs, or
misaligning one along the batch, moves exactly the terms that read it, to the values of the swapped pairs.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from hfvision.models.pyramidclip import PyramidClipConfig, PyramidClipModel
from hfvision.models.pyramidclip.modeling_pyramidclip import LOSS_TERMS, PyramidClipLoss
from tests.models.pyramidclip.conftest import six_embeddings

BATCH_SIZE = 4
VISUAL_INPUTS = {"global": "pixel_values", "local": "pixel_values_local", "region": "roi_features"}
TEXT_INPUTS = {"text": "input_ids", "summary": "summary_input_ids", "attribute": "attribute_input_ids"}
PAPER_PAIRS = {
    "loss_global_summary": ("global", "summary"),  # peer level
    "loss_local_text": ("local", "text"),
    "loss_global_attribute": ("global", "attribute"),  # cross level, global
    "loss_region_summary": ("region", "summary"),
    "loss_local_attribute": ("local", "attribute"),  # cross level, local
    "loss_region_text": ("region", "text"),
}


@pytest.fixture(scope="module")
def model() -> PyramidClipModel:
    torch.manual_seed(0)
    config = PyramidClipConfig.from_preset(
        "pyramidclip-tiny", text_config={"vocab_size": 99, "max_position_embeddings": 16}
    )
    # float64 so that recomputation agrees to 1e-9 while the nine pair losses differ by more than 1e-4; eval: the
    # LeFF BatchNorm uses its running statistics, so a tower call does not depend on what else is in the batch.
    return PyramidClipModel(config).double().eval()


@pytest.fixture(scope="module")
def inputs(model) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    size = model.config.vision_config.image_size
    roi_dim = model.config.vision_config.roi_feature_dim

    def pixels() -> torch.Tensor:
        return torch.randn(BATCH_SIZE, 3, size, size, generator=generator, dtype=torch.float64)

    def token_ids(length: int) -> torch.Tensor:
        return torch.randint(2, 99, (BATCH_SIZE, length), generator=generator)

    return {
        "pixel_values": pixels(),
        "pixel_values_local": pixels(),
        "roi_features": torch.randn(BATCH_SIZE, 3, roi_dim, generator=generator, dtype=torch.float64),
        "roi_mask": torch.ones(BATCH_SIZE, 3, dtype=torch.long),
        "input_ids": token_ids(7),
        "summary_input_ids": token_ids(5),
        "attribute_input_ids": token_ids(4),
    }


def pair_losses(model: PyramidClipModel, inputs: dict[str, torch.Tensor]) -> dict[tuple[str, str], float]:
    """The softened contrastive loss of every (view, text) pair, written independently of the model's code."""
    embeds = six_embeddings(model, inputs)
    scale = model.logit_scale.exp().clamp(max=100).detach()
    alpha, labels = model.config.softening_alpha, torch.arange(BATCH_SIZE)
    smoothing = alpha * BATCH_SIZE / (BATCH_SIZE - 1)  # puts 1 - alpha on the positive, alpha / (N-1) on each negative
    losses = {}
    for visual in VISUAL_INPUTS:
        for textual in TEXT_INPUTS:
            logits = scale * embeds[visual] @ embeds[textual].t()
            both_ways = F.cross_entropy(logits, labels, label_smoothing=smoothing) + F.cross_entropy(
                logits.t(), labels, label_smoothing=smoothing
            )
            losses[visual, textual] = float(both_ways / 2)
    return losses


def terms_of(model: PyramidClipModel, inputs: dict[str, torch.Tensor]) -> dict[str, float]:
    with torch.no_grad():
        outputs = model(**inputs, return_loss=True)
    return {name: float(getattr(outputs, name)) for name in ("loss", *LOSS_TERMS)}


def assert_paper_pairing(terms: dict[str, float], pairs: dict[tuple[str, str], float]) -> None:
    """Every term equals its paper pair's loss and no other pair's."""
    for term, pair in PAPER_PAIRS.items():
        assert terms[term] == pytest.approx(pairs[pair], abs=1e-9), (term, pair)
        others = {other: value for other, value in pairs.items() if other != pair}
        assert all(abs(terms[term] - value) > 1e-4 for value in others.values()), (term, others)


def test_the_nine_view_text_pairs_have_distinct_losses(model, inputs):
    """The premise of every check below: each (view, text) pair has its own value, so a mis-paired term is seen."""
    values = sorted(pair_losses(model, inputs).values())
    assert min(b - a for a, b in itertools.pairwise(values)) > 1e-4, values


def test_each_term_pairs_the_papers_view_with_the_papers_text(model, inputs):
    terms, pairs = terms_of(model, inputs), pair_losses(model, inputs)
    assert set(PAPER_PAIRS) == set(LOSS_TERMS)
    assert_paper_pairing(terms, pairs)
    # L = (1 - lambda - mu) (L_GS + L_LT) / 2 + lambda (L_GA + L_RS) / 2 + mu (L_LA + L_RT) / 2, lambda = mu = 1/3
    config = model.config
    weights = {
        "loss_global_summary": config.peer_level_weight,
        "loss_local_text": config.peer_level_weight,
        "loss_global_attribute": config.cross_level_global_weight,
        "loss_region_summary": config.cross_level_global_weight,
        "loss_local_attribute": config.cross_level_local_weight,
        "loss_region_text": config.cross_level_local_weight,
    }
    assert sum(weights.values()) == pytest.approx(2.0)  # the paper's weights, each term 1/6
    assert terms["loss"] == pytest.approx(sum(w * pairs[PAPER_PAIRS[t]] for t, w in weights.items()) / 2, abs=1e-9)


def _swapped(inputs: dict[str, torch.Tensor], first: str, second: str) -> dict[str, torch.Tensor]:
    swapped = dict(inputs)
    swapped[first], swapped[second] = inputs[second], inputs[first]
    return swapped


@pytest.mark.parametrize(
    "first, second",
    [("global", "local"), ("text", "summary"), ("text", "attribute"), ("summary", "attribute")],
)
def test_swapping_two_inputs_moves_exactly_the_terms_that_read_them(model, inputs, first, second):
    """Feeding input X where Y belongs: every term that reads X or Y takes the value of the pair with the two
    exchanged, and every other term stays exactly as it was."""
    keys = {**VISUAL_INPUTS, **TEXT_INPUTS}
    exchange = {first: second, second: first}
    before, pairs = terms_of(model, inputs), pair_losses(model, inputs)
    after = terms_of(model, _swapped(inputs, keys[first], keys[second]))
    for term, (visual, textual) in PAPER_PAIRS.items():
        expected = pairs[exchange.get(visual, visual), exchange.get(textual, textual)]
        assert after[term] == pytest.approx(expected, abs=1e-9), term
        if {visual, textual} & {first, second}:
            assert abs(after[term] - before[term]) > 1e-8, term  # float64 noise: 1e-15
        else:
            assert after[term] == before[term], term


@pytest.mark.parametrize("name", [*VISUAL_INPUTS, *TEXT_INPUTS])
def test_misaligning_one_input_changes_only_the_terms_that_use_it(model, inputs, name):
    """Rolling one input along the batch (sample i now carries sample i+1's view or text) breaks exactly the positive
    pairs of the terms that read it; the region sequence is covered here too (the regions with their mask)."""
    keys = {**VISUAL_INPUTS, **TEXT_INPUTS}
    rolled = dict(inputs)
    rolled[keys[name]] = inputs[keys[name]].roll(1, dims=0)
    if name == "region":
        rolled["roi_mask"] = inputs["roi_mask"].roll(1, dims=0)
    before, after = terms_of(model, inputs), terms_of(model, rolled)
    users = {term for term, pair in PAPER_PAIRS.items() if name in pair}
    assert len(users) == 2  # every view and every text is read by exactly two of the six terms
    for term in PAPER_PAIRS:
        if term in users:
            assert abs(after[term] - before[term]) > 1e-8, term  # float64 noise: 1e-15
        else:
            assert after[term] == before[term], term
    assert_paper_pairing(after, pair_losses(model, rolled))


class _MisWiredLoss(PyramidClipLoss):
    """L_GS and L_GA computed on each other's texts: what a wrong pairing looks like."""

    def forward(self, embeds: dict[str, torch.Tensor], logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = super().forward(embeds, logit_scale)
        exchanged = super().forward({**embeds, "summary": embeds["attribute"]}, logit_scale)
        terms["loss_global_summary"] = exchanged["loss_global_summary"]
        return terms


def test_a_mis_wired_loss_fails_the_pairing_check(model, inputs, monkeypatch):
    """Negative control: the check above rejects a loss that pairs the global view with the wrong text."""
    monkeypatch.setattr(model, "pyramid_loss", _MisWiredLoss(model.config))
    with pytest.raises(AssertionError, match="loss_global_summary"):
        assert_paper_pairing(terms_of(model, inputs), pair_losses(model, inputs))
