"""VATT: the transformers-model contract, token counts, DropToken, VATT-MA sharing, the losses and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hfvision.models.vatt import (
    VattConfig,
    VattForAudioClassification,
    VattForPreTraining,
    VattForVideoClassification,
    VattModel,
    droptoken_indices,
    mil_nce_loss,
    nce_loss,
)
from tests.models.common import ModelCommonTests

PRETRAINING_CLASSES = (VattModel, VattForPreTraining)


class VattModelTester:
    batch_size = 3
    seq_length = 6
    preset = "vatt-tiny"

    def get_config(self, **overrides) -> VattConfig:
        return VattConfig.from_preset(self.preset, num_labels=4, **overrides)

    def video(self, generator: torch.Generator, batch_size: int | None = None) -> torch.Tensor:
        config = self.get_config().video_config
        shape = (batch_size or self.batch_size, config.num_frames, 3, config.image_size, config.image_size)
        return torch.rand(shape, generator=generator) * 2 - 1

    def prepare_inputs(self, model_class: type) -> dict:
        generator = torch.Generator().manual_seed(0)
        config = self.get_config()
        pixel_values_videos = self.video(generator)
        input_values = torch.randn(self.batch_size, config.audio_config.num_samples, generator=generator) * 0.1
        if model_class is VattForVideoClassification:
            return {"pixel_values_videos": pixel_values_videos}
        if model_class is VattForAudioClassification:
            return {"input_values": input_values}
        input_ids = torch.randint(
            2, config.text_config.vocab_size, (self.batch_size, self.seq_length), generator=generator
        )
        attention_mask = torch.ones_like(input_ids)
        attention_mask[1, 4:] = 0  # right padding, as the tokenizer does
        attention_mask[2, 2:] = 0
        input_ids = input_ids * attention_mask
        return {
            "pixel_values_videos": pixel_values_videos,
            "input_values": input_values,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
        }

    def slice_inputs(self, inputs: dict, index: int) -> dict:
        sliced = {name: value[index : index + 1] for name, value in inputs.items()}
        if "attention_mask" in sliced:  # drop this sample's padding entirely
            length = int(sliced["attention_mask"].sum())
            sliced["input_ids"] = sliced["input_ids"][:, :length]
            sliced["attention_mask"] = sliced["attention_mask"][:, :length]
        return sliced

    def compared(self, outputs, model_class: type) -> torch.Tensor:
        if model_class in PRETRAINING_CLASSES:
            embeds = (outputs.video_embeds_va, outputs.video_embeds_vt, outputs.audio_embeds, outputs.text_embeds)
            return torch.cat(embeds, dim=-1)
        return outputs.logits

    def recorded(self, outputs, model_class: type) -> list[tuple]:
        config = self.get_config()
        if model_class in PRETRAINING_CLASSES:
            return [
                (tower.hidden_states, tower.attentions, sub.num_hidden_layers, sub.num_attention_heads)
                for tower, sub in (
                    (outputs.video_model_output, config.video_config),
                    (outputs.audio_model_output, config.audio_config),
                    (outputs.text_model_output, config.text_config),
                )
            ]
        sub = config.video_config if model_class is VattForVideoClassification else config.audio_config
        return [(outputs.hidden_states, outputs.attentions, sub.num_hidden_layers, sub.num_attention_heads)]

    def loss_kwargs(self, model_class: type) -> dict:
        if model_class in (VattForVideoClassification, VattForAudioClassification):
            return {"labels": torch.tensor([0, 3, 1])}
        return {}  # VattForPreTraining always computes its loss; VattModel has none


class TestVattModel(ModelCommonTests):
    model_tester = VattModelTester()
    all_model_classes = (VattModel, VattForPreTraining, VattForVideoClassification, VattForAudioClassification)

    def build_model(self, model_class: type = VattModel, **overrides) -> torch.nn.Module:
        return self.build(model_class, self.model_tester.get_config(**overrides))

    # --- paper Sec. 3.1-3.2: tokens, positions, DropToken ---------------------------------------------------------
    def test_token_counts_with_and_without_droptoken(self):
        """Tiny grid: 2x2x2 = 8 video tokens, 320 / 32 = 10 audio tokens; DropToken 0.5 keeps 4 and 5 (+ AGG) in
        training mode only; text keeps its words + AGG always."""
        model = self.build_model()
        inputs = self.model_tester.prepare_inputs(VattModel)
        for training, video_tokens, audio_tokens in ((True, 1 + 4, 1 + 5), (False, 1 + 8, 1 + 10)):
            model.train(training)
            outputs = model(**inputs, output_hidden_states=True)
            assert outputs.video_model_output.last_hidden_state.shape[1] == video_tokens
            assert outputs.audio_model_output.last_hidden_state.shape[1] == audio_tokens
            assert all(h.shape[1] == video_tokens for h in outputs.video_model_output.hidden_states)
            assert outputs.text_model_output.last_hidden_state.shape[1] == 1 + self.model_tester.seq_length
        model.train()
        outputs = model(**inputs, droptoken=False)  # explicit switch overrides the mode
        assert outputs.video_model_output.last_hidden_state.shape[1] == 1 + 8

    def test_paper_token_counts(self):
        config = VattConfig()
        assert config.video_config.grid_size == (8, 14, 14) and config.video_config.num_tokens == 1568
        assert config.audio_config.num_tokens == 1200 and config.text_config.max_position_embeddings == 16
        assert len(droptoken_indices(1568, 0.5, torch.device("cpu"))) == 784
        assert len(droptoken_indices(1200, 0.5, torch.device("cpu"))) == 600

    def test_droptoken_rate_zero_equals_no_dropping(self):
        model = self.build_model(droptoken_rate=0.0)
        inputs = self.model_tester.prepare_inputs(VattModel)
        with torch.no_grad():
            dropped = model(**inputs, droptoken=True)
            kept = model(**inputs, droptoken=False)
        assert dropped.video_model_output.last_hidden_state.shape[1] == 9
        torch.testing.assert_close(dropped.video_embeds_va, kept.video_embeds_va, rtol=0, atol=0)
        torch.testing.assert_close(dropped.audio_embeds, kept.audio_embeds, rtol=0, atol=0)

    def test_droptoken_equals_encoder_on_the_gathered_subset(self):
        """DropToken = run the transformer on the explicitly gathered tokens (same subset for every sample), and the
        subset changes the result (negative control)."""
        model = self.build_model()
        inputs = self.model_tester.prepare_inputs(VattModel)
        noise = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.8, 0.2, 0.7, 0.6])  # keeps tokens 1, 5, 3, 2
        with torch.no_grad():
            dropped = model.get_video_features(inputs["pixel_values_videos"], droptoken=True, noise=noise)
            tokens, kept = model.video_embeddings(inputs["pixel_values_videos"])  # (B, 1 + 8, D), no dropping
            assert kept is None
            subset = torch.cat([tokens[:, :1], tokens[:, 1:][:, torch.tensor([1, 5, 3, 2])]], dim=1)
            encoded = model.video_encoder(subset).last_hidden_state[:, 0]
            expected = model.projection_heads.video_to_va(encoded)
            other = model.get_video_features(inputs["pixel_values_videos"], droptoken=True, noise=noise.flip(0))
        torch.testing.assert_close(dropped.pooler_output, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(dropped.last_hidden_state[:, 0], encoded, rtol=1e-5, atol=1e-5)
        assert (other.last_hidden_state[:, 0] - encoded).abs().max() > 1e-2  # another subset, another result

    def test_droptoken_is_seeded_and_shared_across_the_batch(self):
        torch.manual_seed(0)
        first = droptoken_indices(20, 0.5, torch.device("cpu"))
        torch.manual_seed(0)
        assert torch.equal(first, droptoken_indices(20, 0.5, torch.device("cpu")))
        assert len(set(first.tolist())) == 10
        model = self.build_model()  # eval: no dropout, so two copies of one clip differ only if their subsets do
        video = self.model_tester.video(torch.Generator().manual_seed(3), batch_size=1).expand(2, -1, -1, -1, -1)
        with torch.no_grad():
            torch.manual_seed(1)
            embeddings, kept = model.video_embeddings(video, droptoken_rate=0.5)
            full, _ = model.video_embeddings(video)
        assert embeddings.shape[1] == 1 + 4 and torch.equal(embeddings[0], embeddings[1])
        torch.testing.assert_close(embeddings[:, 1:], full[:, 1:][:, kept], rtol=0, atol=0)

    def test_factorised_positions_and_interpolation(self):
        model = self.build_model()
        embeddings = model.video_embeddings
        positions = embeddings.position_embeddings((2, 2, 2)).view(2, 2, 2, -1)
        t, h, w = 1, 0, 1
        manual = embeddings.position_layernorm(
            embeddings.temporal_position_embeddings[t]
            + embeddings.vertical_position_embeddings[h]
            + embeddings.horizontal_position_embeddings[w]
        )
        torch.testing.assert_close(positions[t, h, w], manual)
        tables = [p.clone() for p in embeddings.parameters()]
        video = self.model_tester.video(torch.Generator().manual_seed(0))
        longer = torch.cat([video, video], dim=1)  # 8 frames -> a 4 x 2 x 2 grid
        with pytest.raises(ValueError, match=r"pixel_values_videos.*8 frames.*interpolate_pos_encoding"):
            model.get_video_features(longer)
        with torch.no_grad():
            outputs = model.get_video_features(longer, interpolate_pos_encoding=True, output_hidden_states=True)
        assert outputs.hidden_states[0].shape[1] == 1 + 16
        assert all(torch.equal(a, b) for a, b in zip(tables, embeddings.parameters(), strict=True))
        assert embeddings.position_embeddings((4, 2, 2)).shape == (16, 32)

    def test_audio_positions_interpolate_to_other_durations(self):
        model = self.build_model()
        waveform = torch.randn(2, 640)  # twice the configured 320 samples -> 20 tokens
        with pytest.raises(ValueError, match=r"input_values.*640 samples.*interpolate_pos_encoding"):
            model.get_audio_features(waveform)
        with torch.no_grad():
            outputs = model.get_audio_features(waveform, interpolate_pos_encoding=True, output_hidden_states=True)
        assert outputs.hidden_states[0].shape[1] == 1 + 20 and outputs.pooler_output.shape == (2, 24)

    def test_frozen_word_embeddings_stay_frozen_after_loading(self, tmp_path):
        model = self.build_model(VattForPreTraining, text_config={"freeze_word_embeddings": True})
        assert not model.vatt.text_embeddings.word_embeddings.weight.requires_grad
        model.save_pretrained(tmp_path)
        reloaded = VattForPreTraining.from_pretrained(tmp_path).train()
        assert not reloaded.vatt.text_embeddings.word_embeddings.weight.requires_grad
        assert reloaded.vatt.text_embeddings.word_projection.weight.requires_grad

    def test_aggregation_token_has_no_position(self):
        """The AGG token enters the transformer as the bare learned vector (no position added)."""
        model = self.build_model()
        with torch.no_grad():
            tokens, _ = model.video_embeddings(self.model_tester.video(torch.Generator().manual_seed(0)))
        torch.testing.assert_close(tokens[:, 0], model.video_embeddings.agg_token.expand(3, -1))

    def test_text_relative_position_bias_is_t5s(self):
        from transformers.models.t5.modeling_t5 import T5Attention

        model = self.build_model()
        bias_module = model.text_encoder.relative_position_bias
        bias = bias_module(5, torch.device("cpu"))  # (1, H, 5, 5)
        relative = torch.arange(5)[None] - torch.arange(5)[:, None]
        buckets = T5Attention._relative_position_bucket(relative, True, 32, 64)
        torch.testing.assert_close(bias[0], bias_module.relative_attention_bias.weight[buckets].permute(2, 0, 1))
        assert torch.equal(bias[0, :, 0, 1], bias[0, :, 2, 3])  # depends on the offset only
        assert model.text_encoder.relative_position_bias is not None
        assert model.video_encoder.relative_position_bias is None

    def test_text_tower_is_the_official_t5_encoder(self):
        """Official text/t5.py + text/factory.py: AGG token in the 300-d word space before a bias-free GELU projection;
        bias-free, unscaled attention after an RMS norm; LayerNorm before a bias-free MLP; final RMS norm. Video keeps
        biased, d_kv^-0.5-scaled attention."""
        from transformers.models.t5.modeling_t5 import T5LayerNorm

        model = self.build_model()
        text, video = model.text_encoder.layers[0], model.video_encoder.layers[0]
        assert text.attention.query.bias is None and text.mlp.fc1.bias is None and text.attention.scaling == 1.0
        assert isinstance(text.layernorm_before, T5LayerNorm) and isinstance(model.text_encoder.layernorm, T5LayerNorm)
        assert video.attention.query.bias is not None and video.attention.scaling == (32 // 2) ** -0.5
        embeddings = model.text_embeddings
        assert embeddings.agg_token.shape == (12,) and embeddings.word_projection.bias is None
        ids = torch.tensor([[5, 6, 0]])
        with torch.no_grad():
            tokens = embeddings(ids)
            expected = F.gelu(embeddings.word_projection(embeddings.agg_token))
        torch.testing.assert_close(tokens[0, 0], expected)

    # --- VATT-MA -------------------------------------------------------------------------------------------------
    def test_modality_agnostic_shares_one_transformer(self):
        model = (
            self.build_model(VattModel, **{})
            if False
            else self.build(VattModel, VattConfig.from_preset("vatt-ma-tiny"))
        )
        assert model.encoder_for("video") is model.encoder_for("audio") is model.encoder_for("text") is model.encoder
        assert not any(hasattr(model, f"{name}_encoder") for name in ("video", "audio", "text"))
        calls = []
        model.encoder.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[1]))
        inputs = self.model_tester.prepare_inputs(VattModel)
        with torch.no_grad():
            model(**inputs)
        assert calls == [9, 11, 7]  # video, audio and text tokens through the same object
        specific = self.build_model()
        shared_params = sum(p.numel() for p in model.encoder.parameters())
        specific_params = sum(p.numel() for name in ("video", "audio") for p in specific.encoder_for(name).parameters())
        assert shared_params * 2 == specific_params  # one tiny transformer instead of two (plus the text one)

    def test_paper_parameter_counts(self):
        """Table 7: a Base transformer ~87.9M (incl. its tokenizer); VATT-MA Medium ~155M for all three."""
        with torch.device("meta"):
            bbs = VattModel(VattConfig.from_preset("vatt-bbs"))
            ma = VattModel(VattConfig.from_preset("vatt-ma-medium"))
        millions = lambda module: sum(p.numel() for p in module.parameters()) / 1e6  # noqa: E731
        assert 84 < millions(bbs.video_encoder) < 88
        assert 150 < millions(ma.encoder) < 155
        assert ma.encoder_for("text") is ma.encoder

    # --- losses (paper Sec. 3.3) ----------------------------------------------------------------------------------
    @pytest.mark.parametrize("loss_type", ["asymmetric", "symmetric"])
    def test_mil_nce_with_one_positive_equals_nce(self, loss_type):
        generator = torch.Generator().manual_seed(0)
        video = F.normalize(torch.randn(5, 8, generator=generator), dim=-1)
        text = F.normalize(torch.randn(5, 8, generator=generator), dim=-1)
        mil = mil_nce_loss(video, text[:, None], torch.ones(5, 1, dtype=torch.bool), 0.07, loss_type)
        torch.testing.assert_close(mil, nce_loss(video, text, 0.07, loss_type))
        two = mil_nce_loss(video, torch.stack([text, text.roll(1, 0)], 1), torch.ones(5, 2, dtype=torch.bool), 0.07)
        assert not torch.allclose(two, mil)  # a second positive changes the loss (control)

    def test_loss_minima(self):
        """Asymmetric NCE counts the positive twice (minimum log 2); the symmetric variant tends to 0."""
        embeds = torch.eye(4)
        assert abs(nce_loss(embeds, embeds, 0.01).item() - math.log(2)) < 1e-4
        assert nce_loss(embeds, embeds, 0.01, "symmetric").item() < 1e-4
        assert nce_loss(embeds, embeds.roll(1, 0), 0.01).item() > 10

    def test_a_clip_without_text_contributes_nothing_to_the_text_loss(self):
        model = self.build_model(VattForPreTraining)
        inputs = self.model_tester.prepare_inputs(VattForPreTraining)
        text_mask = torch.tensor([1, 0, 1])
        with torch.no_grad():
            base = model(**inputs, text_mask=text_mask)
            changed_ids = inputs["input_ids"].clone()
            changed_ids[1, :4] = torch.tensor([5, 6, 7, 8])
            changed = model(**{**inputs, "input_ids": changed_ids}, text_mask=text_mask)
            unmasked = model(**{**inputs, "input_ids": changed_ids})
        torch.testing.assert_close(base.loss_video_text, changed.loss_video_text, rtol=0, atol=0)
        assert not torch.allclose(unmasked.loss_video_text, changed.loss_video_text)  # control: the mask matters
        torch.testing.assert_close(base.loss_video_audio, changed.loss_video_audio, rtol=0, atol=0)
        # its captions are neither anchors nor negatives: no gradient reaches them
        video = F.normalize(torch.randn(3, 8), dim=-1)
        text = F.normalize(torch.randn(3, 2, 8), dim=-1).requires_grad_()
        caption_mask = torch.tensor([[True, True], [False, False], [True, False]])
        mil_nce_loss(video, text, caption_mask, 0.07).backward()
        assert text.grad[1].abs().sum() == 0 and text.grad[2, 1].abs().sum() == 0 and text.grad[0].abs().sum() > 0
        # no clip with text: the text loss is 0 and the total is the video-audio NCE alone
        with torch.no_grad():
            none = model(**inputs, text_mask=torch.zeros(3, dtype=torch.long))
        assert none.loss_video_text.item() == 0.0

    def test_pretraining_loss_terms_and_several_captions(self):
        model = self.build_model(VattForPreTraining)
        inputs = self.model_tester.prepare_inputs(VattForPreTraining)
        captions = torch.stack([inputs["input_ids"], inputs["input_ids"].roll(1, 0)], dim=1)  # (B, 2, L)
        mask = torch.stack([inputs["attention_mask"], inputs["attention_mask"].roll(1, 0)], dim=1)
        outputs = model(**{**inputs, "input_ids": captions, "attention_mask": mask})
        assert list(outputs.keys())[:3] == ["loss", "loss_video_audio", "loss_video_text"]
        torch.testing.assert_close(outputs.loss, (outputs.loss_video_audio + outputs.loss_video_text) / 2)
        assert outputs.text_embeds.shape == (3, 2, 16) and outputs.logits_video_text.shape == (3, 6)
        assert outputs.logits_video_audio.shape == (3, 3)
        audio_only = model(inputs["pixel_values_videos"], inputs["input_values"])
        torch.testing.assert_close(audio_only.loss, audio_only.loss_video_audio)

    def test_fac_video_to_text_goes_through_the_audio_space(self):
        model = self.build_model()
        video = self.model_tester.video(torch.Generator().manual_seed(0))
        with torch.no_grad():
            va = model.get_video_features(video, space="va").pooler_output
            vt = model.get_video_features(video, space="vt").pooler_output
        assert va.shape == (3, 24) and vt.shape == (3, 16)
        torch.testing.assert_close(vt, model.projection_heads.video_va_to_vt(va))
        with pytest.raises(ValueError, match="space"):
            model.get_video_features(video, space="at")

    def test_audio_classification_multi_label(self):
        model = self.build(
            VattForAudioClassification, self.model_tester.get_config(problem_type="multi_label_classification")
        )
        inputs = self.model_tester.prepare_inputs(VattForAudioClassification)
        labels = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0]])
        outputs = model(**inputs, labels=labels)
        torch.testing.assert_close(outputs.loss, F.binary_cross_entropy_with_logits(outputs.logits, labels))

    # --- bad inputs ------------------------------------------------------------------------------------------------
    def test_bad_inputs_get_clear_errors(self):
        model = self.build_model(VattForPreTraining)
        inputs = self.model_tester.prepare_inputs(VattForPreTraining)
        video = inputs["pixel_values_videos"]
        with pytest.raises(ValueError, match=r"pixel_values_videos.*2 frames.*takes 4 frames"):
            model(**{**inputs, "pixel_values_videos": video[:, :2]})
        with pytest.raises(ValueError, match=r"pixel_values_videos.*shape"):
            model(**{**inputs, "pixel_values_videos": video.permute(0, 2, 1, 3, 4)})
        stereo = inputs["input_values"][:, None].expand(-1, 2, -1)
        with pytest.raises(ValueError, match=r"input_values.*mono"):
            model(**{**inputs, "input_values": stereo})
        with pytest.raises(ValueError, match=r"input_values.*samples"):
            model(**{**inputs, "input_values": inputs["input_values"][:, :100]})
        with pytest.raises(ValueError, match=r"batch sizes differ.*input_values"):
            model(**{**inputs, "input_values": inputs["input_values"][:2]})
        with pytest.raises(ValueError, match=r"batch sizes differ.*input_ids"):
            model(**{**inputs, "input_ids": inputs["input_ids"][:2], "attention_mask": inputs["attention_mask"][:2]})
        with pytest.raises(ValueError, match="text_mask"):
            model(**inputs, text_mask=torch.ones(2))
        with pytest.raises(ValueError, match=r"input_ids.*at most 8"):
            model(**{**inputs, "input_ids": torch.ones(3, 9, dtype=torch.long), "attention_mask": None})
        with pytest.raises(ValueError, match=r"input_ids.*99"):
            model(**{**inputs, "input_ids": inputs["input_ids"] + 99})
        with pytest.raises(ValueError, match=r"pixel_values_videos.*torch.float32"):
            model(**{**inputs, "pixel_values_videos": video.double()})
        with pytest.raises(ValueError, match="pixel_values_videos` is required"):
            model(input_values=inputs["input_values"])
        with pytest.raises(ValueError, match="noise"):
            droptoken_indices(8, 0.5, torch.device("cpu"), noise=torch.rand(7))


class VattMaModelTester(VattModelTester):
    preset = "vatt-ma-tiny"


class TestVattModalityAgnostic(ModelCommonTests):
    """The whole contract again for VATT-MA (one shared transformer, per-modality pre/post projections)."""

    model_tester = VattMaModelTester()
    all_model_classes = (VattModel, VattForPreTraining, VattForVideoClassification, VattForAudioClassification)


@pytest.mark.slow
def test_pretraining_aligns_synthetic_clips():
    """The objective trains: a tiny VATT (no dropout, no DropToken) fitted to 12 synthetic clips retrieves each clip's
    audio and caption from its video (R@1, chance 1/12), and the asymmetric loss approaches its minimum log 2.
    ~15 s on one CPU core."""
    from hfvision.data import AvClips
    from hfvision.models.vatt import VattFeatureExtractor, VattProcessor, VattVideoProcessor, train_vatt_tokenizer

    torch.manual_seed(0)
    clips = AvClips(12, seed=0, num_frames=4, image_size=16, sampling_rate=8000, num_samples=320, text_fraction=1.0)
    items = [clips[i] for i in range(12)]
    tokenizer = train_vatt_tokenizer([clip["caption"] for clip in items], model_max_length=8)
    processor = VattProcessor(
        VattVideoProcessor(num_frames=4, size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        VattFeatureExtractor(sampling_rate=8000, num_samples=320),
        tokenizer,
    )
    batch = processor(
        videos=[clip["frames"] for clip in items],
        audio=[clip["audio"] for clip in items],
        sampling_rate=8000,
        text=[clip["caption"] for clip in items],
    )
    no_dropout = {"hidden_dropout_prob": 0.0}
    config = VattConfig.from_preset(
        "vatt-tiny",
        droptoken_rate=0.0,
        video_config=no_dropout,
        audio_config=no_dropout,
        text_config={**no_dropout, "vocab_size": len(tokenizer)},
    )
    model = VattForPreTraining(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def recall_at_1() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            outputs = model(**batch)
        model.train()
        targets = torch.arange(12)
        return (
            (outputs.logits_video_audio.argmax(1) == targets).float().mean().item(),
            (outputs.logits_video_text.argmax(1) == targets).float().mean().item(),
        )

    assert max(recall_at_1()) <= 0.25  # untrained: about chance
    for _ in range(300):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    video_audio, video_text = recall_at_1()
    assert video_audio >= 0.75 and video_text >= 0.75, (video_audio, video_text)
    assert loss.item() < 1.2  # minimum log 2 = 0.69 (each positive counted in its row and its column)
