"""Audio feature extractor for VATT: raw mono waveform -> `input_values` `(B, num_samples)`.

VATT reads the raw waveform (paper Sec. 3.1): 3.2 s at 48 kHz = 153,600 samples at pretraining, no spectrogram and
no normalisation. The extractor resamples to the configured rate (Fourier method: exact for band-limited signals,
computed with numpy so it runs as remote code), then crops or right-pads with zeros to `num_samples`. Multi-channel
audio is rejected: mix it down (e.g. `read_clip(..., mono=True)` averages channels) before calling it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature

# A 2-D array with this many rows (or columns) or fewer is one multi-channel recording (stereo, 5.1, 7.1), not a batch.
MAX_CHANNELS = 8


def resample_waveform(waveform: np.ndarray, orig_sampling_rate: int, sampling_rate: int) -> np.ndarray:
    """Resample a 1-D waveform by zero-padding or truncating its spectrum (scipy's `resample` method).

    Args:
        waveform: `(S,)` samples.
        orig_sampling_rate: its rate in Hz.
        sampling_rate: the target rate in Hz.

    Returns:
        `(round(S * sampling_rate / orig_sampling_rate),)` float32 samples.
    """
    if orig_sampling_rate == sampling_rate:
        return waveform.astype(np.float32)
    num_in = waveform.shape[0]
    num_out = max(1, round(num_in * sampling_rate / orig_sampling_rate))
    spectrum = np.fft.rfft(waveform.astype(np.float64))
    resized = np.zeros(num_out // 2 + 1, dtype=spectrum.dtype)
    keep = min(len(spectrum), len(resized))
    resized[:keep] = spectrum[:keep]
    if num_out < num_in and num_out % 2 == 0:  # the new Nyquist bin holds both halves of a real signal's energy
        resized[-1] = resized[-1].real
    return (np.fft.irfft(resized, n=num_out) * (num_out / num_in)).astype(np.float32)


class VattFeatureExtractor(SequenceFeatureExtractor):
    r"""Raw waveforms -> `input_values` `(B, num_samples)` at `sampling_rate`.

    Args:
        sampling_rate (`int`, *optional*, defaults to 48000): the model's rate (`audio_config.sampling_rate`).
        num_samples (`int`, *optional*, defaults to 153600): samples per clip (`audio_config.num_samples`); longer
            waveforms are cropped from `offset`, shorter ones right-padded with `padding_value`.
        padding_value (`float`, *optional*, defaults to 0.0): value of padded samples.
    """

    model_input_names = ["input_values"]

    def __init__(
        self, sampling_rate: int = 48000, num_samples: int = 153600, padding_value: float = 0.0, **kwargs: Any
    ):
        kwargs.pop("feature_size", None)  # always 1 (a mono waveform); saved configs carry it
        super().__init__(feature_size=1, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        self.num_samples = num_samples

    def _to_mono(self, waveform: Any, index: int) -> np.ndarray:
        if hasattr(waveform, "detach"):
            waveform = waveform.detach().cpu().numpy()
        array = np.asarray(waveform)
        if array.dtype == object or not (
            np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
        ):
            raise TypeError(f"`raw_audio` item {index} must be a numeric array of samples, got dtype {array.dtype}.")
        if array.ndim == 2 and 1 in array.shape:
            array = array.reshape(-1)
        if array.ndim != 1:
            raise ValueError(
                f"`raw_audio` item {index} has shape {array.shape}: VATT takes mono audio (one channel, shape "
                "(samples,)); mix stereo or multi-channel audio down to mono first, e.g. `waveform.mean(axis=0)`."
            )
        if array.size == 0:
            raise ValueError(f"`raw_audio` item {index} is empty; expected at least one sample.")
        if np.issubdtype(array.dtype, np.integer):  # PCM integers -> [-1, 1]
            array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
        if not np.isfinite(array).all():
            raise ValueError(f"`raw_audio` item {index} holds NaN or infinite samples.")
        return array.astype(np.float32)

    def __call__(
        self,
        raw_audio: Any,
        sampling_rate: int | None = None,
        offset: int | list[int] = 0,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Turn one waveform or a list of waveforms into `input_values`.

        Args:
            raw_audio: a `(S,)` waveform (numpy, torch or list of floats; integer PCM is scaled to [-1, 1]) or a list
                of them, or a `(B, S)` array of equal-length waveforms with B > 8 (a 2-D array with 8 rows or fewer is
                read as multi-channel audio and rejected: mix it down, or pass a list for a small batch).
            sampling_rate: rate of `raw_audio`; resampled to `self.sampling_rate` when it differs. Required, as a
                wrong rate silently changes what the model hears.
            offset: first sample kept (after resampling) when cropping, per clip or for all.
            return_tensors: `"pt"` (default), `"np"` or `None`.

        Returns:
            `BatchFeature` with `input_values` `(B, num_samples)`.
        """
        if sampling_rate is None:
            raise ValueError(
                f"`sampling_rate` is required: the rate of `raw_audio` in Hz (this model takes {self.sampling_rate})."
            )
        is_batch = (
            isinstance(raw_audio, (list, tuple))
            and len(raw_audio) > 0
            and (isinstance(raw_audio[0], (list, tuple)) or getattr(raw_audio[0], "ndim", 0) >= 1)
        )
        if not is_batch and getattr(raw_audio, "ndim", 1) == 2 and min(raw_audio.shape) > MAX_CHANNELS:
            is_batch = True  # a (B, S) array; with at most MAX_CHANNELS rows it reads as channels and is rejected
        waveforms = list(raw_audio) if is_batch else [raw_audio]
        if not waveforms:
            raise ValueError("`raw_audio` is empty; expected at least one waveform.")
        offsets = offset if isinstance(offset, (list, tuple)) else [offset] * len(waveforms)
        if len(offsets) != len(waveforms):
            raise ValueError(f"`offset` must have one entry per waveform ({len(waveforms)}), got {len(offsets)}.")
        batch = np.full((len(waveforms), self.num_samples), self.padding_value, dtype=np.float32)
        for index, waveform in enumerate(waveforms):
            mono = resample_waveform(self._to_mono(waveform, index), sampling_rate, self.sampling_rate)
            start = int(offsets[index])
            if not 0 <= start < max(1, len(mono)):
                raise ValueError(f"`offset` {start} is outside waveform {index} ({len(mono)} samples).")
            kept = mono[start : start + self.num_samples]
            batch[index, : len(kept)] = kept
        return BatchFeature(data={"input_values": batch}, tensor_type=return_tensors)


__all__ = ["VattFeatureExtractor", "resample_waveform"]
