"""Synthetic video + audio + text clips: seeded, the three modalities agree, shards round-trip and corrupt samples
are skipped and counted."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from hfvision.data import SkipCounter, write_shards
from hfvision.data.av_clips import (
    COLOURS,
    MOTIONS,
    SHAPES,
    AvClips,
    build_av_clips,
    draw_av_clips,
    load_av_clip_stream,
)


def test_clips_are_seeded_and_splits_independent():
    first, again = AvClips(4, seed=1)[2], AvClips(4, seed=1)[2]
    assert np.array_equal(first["frames"], again["frames"]) and np.array_equal(first["audio"], again["audio"])
    assert first["caption"] == again["caption"]
    other = AvClips(4, seed=1, split="eval")[2]
    assert not np.array_equal(first["frames"], other["frames"])
    with pytest.raises(IndexError):
        AvClips(4)[4]
    with pytest.raises(ValueError, match="text_fraction"):
        AvClips(4, text_fraction=1.5)


def test_the_three_modalities_agree():
    clips = AvClips(24, seed=0, text_fraction=1.0, noise=0.0)
    for clip in clips:
        # text names every attribute
        for name in ("colour", "size", "shape", "motion"):
            assert clip[name] in clip["caption"]
        # video: the shape's pixels have its colour and travel in the named direction
        mask = np.all(clip["frames"] == np.asarray(COLOURS[clip["colour"]], np.uint8), axis=-1)  # (T, H, W)
        ys, xs = np.nonzero(mask[0])
        ye, xe = np.nonzero(mask[-1])
        (dx, dy), beeps = MOTIONS[clip["motion"]]
        moved = np.array([xe.mean() - xs.mean(), ye.mean() - ys.mean()])
        assert moved @ np.array([dx, dy]) > 4  # pixels along the motion
        # audio: the pitch follows the shape (and size), the rhythm (beeps) follows the motion
        audio, rate = clip["audio"], clip["sampling_rate"]
        spectrum = np.abs(np.fft.rfft(audio))
        peak = np.argmax(spectrum) * rate / len(audio)
        pitch = SHAPES[clip["shape"]] * (1.26 if clip["size"] == "large" else 1.0)
        assert abs(peak - pitch) < 0.05 * pitch
        envelope = np.abs(audio).reshape(-1, 32).max(axis=1) > 0.1
        onsets = int(envelope[0]) + int(np.sum(envelope[1:] & ~envelope[:-1]))
        assert onsets == beeps


def test_text_fraction_mixes_clips_without_captions():
    clips = AvClips(200, seed=0, text_fraction=0.7)
    with_text = [clip["has_text"] for clip in clips]
    assert 0.6 < np.mean(with_text) < 0.8
    assert all((clip["caption"] is None) != clip["has_text"] for clip in clips)


def test_shards_round_trip_and_are_reproducible(tmp_path):
    paths = build_av_clips(tmp_path / "a", num_train=8, num_eval=4, num_shards=2, num_eval_shards=1)
    again = build_av_clips(tmp_path / "b", num_train=8, num_eval=4, num_shards=2, num_eval_shards=1)
    for left, right in zip(paths["train"], again["train"], strict=True):
        assert Path(left).read_bytes() == Path(right).read_bytes()  # byte-identical tars
    with tarfile.open(paths["train"][0]) as archive:
        names = archive.getnames()
    assert {"train-0000000.png", "train-0000000.wav", "train-0000000.json"} <= set(names)
    counter = SkipCounter()
    streamed = list(load_av_clip_stream(paths["train"], counter).with_format("numpy"))
    reference = AvClips(8, seed=0, text_fraction=0.8)
    assert len(streamed) == 8 and counter.num_ok == 8 and counter.num_skipped == 0
    for index, sample in enumerate(streamed):
        clip = reference[index]
        assert np.array_equal(sample["frames"], clip["frames"])  # lossless PNG film strip
        assert np.abs(sample["audio"] - clip["audio"]).max() <= 1 / 32767 + 1e-7  # 16-bit PCM
        assert sample["has_text"] == clip["has_text"] and sample["caption"] == (clip["caption"] or "")
    assert all(sample["has_text"] for sample in load_av_clip_stream(paths["eval"]))


def test_corrupt_samples_are_skipped_and_counted(tmp_path):
    clips = AvClips(4, seed=0)
    samples = list(clips.shard_samples())
    samples[1]["wav"] = b"not a wav file"
    del samples[2]["wav"]
    shards = write_shards(samples, tmp_path, 1, image_format="png")
    counter = SkipCounter()
    streamed = list(load_av_clip_stream(shards, counter))
    assert [sample["__key__"] for sample in streamed] == ["train-0000000", "train-0000003"]
    assert counter.by_reason()["invalid_fields"] == 2
    with pytest.raises(ValueError, match="not a free file extension"):
        write_shards([{**samples[0], "json": b"{}"}], tmp_path / "bad", 1, image_format="png")


def test_draw_av_clips_shows_frames_and_waveform():
    clips = AvClips(2, seed=0, num_frames=4, image_size=16)
    picture = draw_av_clips([clips[0], clips[1]], scale=2, wave_width=50)
    assert picture.size == (4 * 16 * 2 + 50 + 8, 2 * (16 * 2 + 14))
    pixels = np.asarray(picture)
    assert np.array_equal(pixels[0, 0], clips[0]["frames"][0, 0, 0])  # the first frame, magnified
    assert (pixels[:32, 4 * 16 * 2 + 8 :] == (40, 40, 120)).all(axis=-1).any()  # the waveform is drawn
    with pytest.raises(ValueError, match="clips"):
        draw_av_clips([])
