"""Processor for VATT: video processor + audio feature extractor + word-level tokenizer, and clip decoding.

`VattProcessor(videos=..., audio=..., text=...)` returns what [`VattModel`] / [`VattForPreTraining`] take:
`pixel_values_videos` `(B, T, 3, H, W)` in [-1, 1], `input_values` `(B, S)` and `input_ids` / `attention_mask`
`(B, L)` (one caption per clip) or `(B, K, L)` (K positive captions per clip; missing captions are all padding and
masked out of the loss), plus `text_mask` `(B,)` marking clips that have text.

`read_clip` decodes a video file's frames and audio track with PyAV, the decoder transformers' `video-classification`
pipeline uses (the optional `video` extra: `pip install av`), without shelling out to ffmpeg.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin


def read_clip(
    path: str,
    num_frames: int | None = None,
    frame_sampling_rate: int = 1,
    start_time: float = 0.0,
    duration: float | None = None,
    read_audio: bool = True,
    mono: bool = True,
) -> dict[str, Any]:
    """Decode frames and audio of a video file with PyAV.

    Args:
        path: the video file (any container/codec FFmpeg's libraries decode, e.g. mp4 with h264 + AAC).
        num_frames: frames to keep from `start_time`, every `frame_sampling_rate`-th (as the video-classification
            pipeline samples); `None` keeps every frame of the window.
        frame_sampling_rate: keep one frame in this many.
        start_time: start of the window in seconds.
        duration: length of the window in seconds (`None`: to the end).
        read_audio: also decode the first audio stream over the same window.
        mono: average the audio channels (VATT's audio tower is mono); `False` returns `(channels, samples)`.

    Returns:
        `{"frames": (T, H, W, 3) uint8, "fps": float, "audio": (S,) or (C, S) float32 | None,
        "sampling_rate": int | None}`.
    """
    try:
        import av
    except ImportError as error:  # the optional `video` extra
        raise ImportError("Decoding video files needs PyAV: `pip install av` (hfvision's `video` extra).") from error
    if frame_sampling_rate < 1:
        raise ValueError(f"`frame_sampling_rate` must be >= 1, got {frame_sampling_rate}.")
    end_time = None if duration is None else start_time + duration
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"`path` {path!r} has no video stream.")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        frames = []
        kept = 0
        for index, frame in enumerate(container.decode(video=0)):
            time = float(frame.time) if frame.time is not None else index / max(fps, 1e-6)
            if time < start_time - 1e-6:
                continue
            if end_time is not None and time >= end_time - 1e-6:
                break
            if kept % frame_sampling_rate == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
            kept += 1
            if num_frames is not None and len(frames) == num_frames:
                break
        if not frames:
            raise ValueError(f"`path` {path!r} has no frames in the window starting at {start_time} s.")
        result: dict[str, Any] = {"frames": np.stack(frames), "fps": fps, "audio": None, "sampling_rate": None}
        if read_audio and container.streams.audio:
            container.seek(0)
            audio_stream = container.streams.audio[0]
            rate = int(audio_stream.rate)
            chunks = [frame.to_ndarray() for frame in container.decode(audio=0)]
            # planar float frames are (channels, samples); packed layouts come as (1, samples * channels)
            channels = audio_stream.codec_context.channels or 1
            chunks = [chunk.reshape(-1, channels).T if chunk.shape[0] != channels else chunk for chunk in chunks]
            audio = np.concatenate(chunks, axis=1).astype(np.float32)  # (C, S)
            if np.issubdtype(chunks[0].dtype, np.integer):
                audio /= float(np.iinfo(chunks[0].dtype).max)
            first = round(start_time * rate)
            last = None if duration is None else first + round(duration * rate)
            audio = audio[:, first:last]
            result["audio"] = audio.mean(axis=0) if mono else audio
            result["sampling_rate"] = rate
    return result


class VattProcessor(ProcessorMixin):
    r"""Wraps a [`VattVideoProcessor`] (as `image_processor`), a [`VattFeatureExtractor`] and a word-level tokenizer."""

    def __init__(
        self, image_processor: Any = None, feature_extractor: Any = None, tokenizer: Any = None, **kwargs: Any
    ):
        super().__init__(image_processor, feature_extractor, tokenizer)

    def _tokenize(self, text: Any, return_tensors: str | None, **kwargs: Any) -> dict[str, Any]:
        """Captions -> `(B, L)` (one per clip) or `(B, K, L)` (lists of captions per clip, `None` = no text)."""
        if isinstance(text, str):
            text = [text]
        if not isinstance(text, (list, tuple)) or not text:
            raise ValueError(f"`text` must be a caption or a non-empty list of captions, got {type(text).__name__}.")
        nested = any(isinstance(item, (list, tuple)) or item is None for item in text)
        groups = [[item] if isinstance(item, str) else list(item or []) for item in text] if nested else None
        flat = [caption for group in groups for caption in group] if nested else list(text)
        for index, caption in enumerate(flat):
            if not isinstance(caption, str):
                raise TypeError(f"`text` captions must be strings; caption {index} is {type(caption).__name__}.")
        kwargs = {"padding": "max_length", "truncation": True, **kwargs}
        if not nested:
            tokens = self.tokenizer(flat, return_tensors="np", **kwargs)
            data = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
            data["text_mask"] = np.ones(len(flat), dtype=np.int64)
            return data
        num_captions = max(1, max(len(group) for group in groups))
        length = self.tokenizer.model_max_length
        input_ids = np.zeros((len(groups), num_captions, length), dtype=np.int64)
        attention_mask = np.zeros_like(input_ids)
        if flat:
            tokens = self.tokenizer(flat, return_tensors="np", **{**kwargs, "padding": "max_length"})
            rows = np.repeat(np.arange(len(groups)), [len(group) for group in groups])
            cols = np.concatenate([np.arange(len(group)) for group in groups if group]) if flat else rows
            input_ids[rows, cols] = tokens["input_ids"]
            attention_mask[rows, cols] = tokens["attention_mask"]
        text_mask = np.asarray([len(group) > 0 for group in groups], dtype=np.int64)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "text_mask": text_mask}

    def __call__(
        self,
        videos: Any = None,
        audio: Any = None,
        text: Any = None,
        sampling_rate: int | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Preprocess any of the three modalities of a batch of clips.

        Args:
            videos: a clip or a list of clips (see [`VattVideoProcessor`]).
            audio: a waveform or a list of waveforms (mono), at `sampling_rate`.
            text: a caption per clip, or per clip a list of captions (`None` or `[]` for a clip without text).
            sampling_rate: rate of `audio` in Hz (required with `audio`).
            return_tensors: `"pt"` (default) or `"np"`; other kwargs go to the tokenizer.
        """
        if videos is None and audio is None and text is None:
            raise ValueError("VattProcessor needs `videos`, `audio` or `text`; got none of them.")
        data: dict[str, Any] = {}
        if videos is not None:
            data.update(self.image_processor(videos, return_tensors="np"))
        if audio is not None:
            data.update(self.feature_extractor(audio, sampling_rate=sampling_rate, return_tensors="np"))
        if text is not None:
            data.update(self._tokenize(text, return_tensors, **kwargs))
        sizes = {name: len(data[name]) for name in ("pixel_values_videos", "input_values", "input_ids") if name in data}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"`videos`, `audio` and `text` must describe the same clips; got batch sizes {sizes}.")
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values_videos", "input_values", "input_ids", "attention_mask", "text_mask"]


__all__ = ["VattProcessor", "read_clip"]
