"""Seeded synthetic video + audio + text clips whose three modalities agree (VATT's pretraining data, offline).

A clip shows one coloured shape moving across a noisy background; its soundtrack is a tone whose pitch follows the
shape (circle 262 Hz, square 392 Hz, triangle 523 Hz, a third higher when the shape is large) and whose rhythm follows
the motion (left: one long tone, right: two beeps, up: three, down: four); its caption names the colour, size, shape
and motion ("a small red circle moves left", with a few phrasings). Video-audio pairs thus share shape, size and
motion, and video-text pairs share all four attributes; colour is visible and named but silent. A share of the clips
(`text_fraction`) has no caption, as the paper mixes AudioSet (no text) into HowTo100M: their `has_text` is False
and VATT's MIL-NCE masks them out.

Shards: `build_av_clips` writes WebDataset tars with `write_shards`: per clip `<key>.png` (the frames side by side, a
lossless film strip `(H, T * W)`), `<key>.wav` (16-bit PCM mono), `<key>.txt` (the caption, when there is one) and
`<key>.json` (attributes). `load_av_clip_stream` streams them back as a `datasets.IterableDataset` (one shard per tar,
resumable) through the shared tar reader, skipping and counting corrupt samples in a `SkipCounter`.
"""

from __future__ import annotations

import io
import json
import wave
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image, ImageDraw

from .streaming import SkipCounter
from .webdataset import iter_tar_samples, write_shards

__all__ = [
    "COLOURS",
    "MOTIONS",
    "SHAPES",
    "SIZES",
    "AvClips",
    "build_av_clips",
    "decode_av_clip",
    "draw_av_clips",
    "load_av_clip_stream",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
}
SHAPES: dict[str, float] = {"circle": 261.6, "square": 392.0, "triangle": 523.3}  # pitch of the tone (Hz)
SIZES: dict[str, float] = {"small": 0.22, "large": 0.36}  # shape radius as a fraction of the frame side
MOTIONS: dict[str, tuple[tuple[float, float], int]] = {  # (direction (dx, dy), beeps per clip)
    "left": ((-1.0, 0.0), 1),
    "right": ((1.0, 0.0), 2),
    "up": ((0.0, -1.0), 3),
    "down": ((0.0, 1.0), 4),
}
LARGE_PITCH_RATIO = 1.26  # a major third up for large shapes
TEMPLATES = (
    "a {size} {colour} {shape} moves {motion}",
    "the {colour} {shape} is {size} and goes {motion}",
    "{size} {colour} {shape} moving {motion}",
)


def _wav_bytes(waveform: np.ndarray, sampling_rate: int) -> bytes:
    """16-bit PCM mono WAV of a `(S,)` float waveform in [-1, 1] (standard library `wave`)."""
    pcm = np.clip(np.rint(waveform * 32767), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sampling_rate)
        handle.writeframes(pcm.tobytes())
    return buffer.getvalue()


def _read_wav(payload: bytes) -> tuple[np.ndarray, int]:
    """`(S,)` float32 samples in [-1, 1] and the rate of a 16-bit PCM WAV (channels averaged)."""
    with wave.open(io.BytesIO(payload), "rb") as handle:
        if handle.getsampwidth() != 2:
            raise ValueError(f"expected 16-bit PCM, got {8 * handle.getsampwidth()}-bit samples")
        channels, rate = handle.getnchannels(), handle.getframerate()
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    return (pcm.reshape(-1, channels).mean(axis=1) / 32767.0).astype(np.float32), rate


class AvClips:
    """A deterministic, indexable set of clips: `clips[i]` is always the same clip for the same arguments.

    Args:
        num_clips: number of clips.
        seed: base seed.
        split: split name, mixed into the seed (train and eval are independent draws).
        num_frames: frames per clip.
        image_size: frame side in pixels.
        sampling_rate: audio rate in Hz.
        num_samples: audio samples per clip (the clip lasts `num_samples / sampling_rate` seconds).
        text_fraction: share of clips with a caption (the others have `caption=None`, `has_text=False`).
        noise: std of the background pixel noise (0-255) and 1/100 of the audio noise amplitude.
    """

    def __init__(
        self,
        num_clips: int,
        seed: int = 0,
        split: str = "train",
        num_frames: int = 8,
        image_size: int = 32,
        sampling_rate: int = 8000,
        num_samples: int = 2560,
        text_fraction: float = 0.8,
        noise: float = 8.0,
    ):
        if num_clips < 0 or num_frames < 2 or image_size < 8 or sampling_rate < 1000 or num_samples < 64:
            raise ValueError(
                "AvClips needs num_clips >= 0, num_frames >= 2, image_size >= 8, sampling_rate >= 1000 and "
                f"num_samples >= 64; got {num_clips}, {num_frames}, {image_size}, {sampling_rate}, {num_samples}."
            )
        if not 0.0 <= text_fraction <= 1.0:
            raise ValueError(f"`text_fraction` must be in [0, 1], got {text_fraction}.")
        self.num_clips, self.seed, self.split = num_clips, seed, split
        self.num_frames, self.image_size = num_frames, image_size
        self.sampling_rate, self.num_samples = sampling_rate, num_samples
        self.text_fraction, self.noise = text_fraction, noise
        self._split_salt = zlib.crc32(split.encode("utf-8"))

    def __len__(self) -> int:
        return self.num_clips

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, self._split_salt, index]))

    def attributes(self, index: int) -> dict[str, str]:
        """The clip's colour, size, shape and motion names."""
        rng = self._rng(index)
        return {
            "colour": str(rng.choice(list(COLOURS))),
            "size": str(rng.choice(list(SIZES))),
            "shape": str(rng.choice(list(SHAPES))),
            "motion": str(rng.choice(list(MOTIONS))),
        }

    def _frames(self, attributes: dict[str, str], rng: np.random.Generator) -> np.ndarray:
        """`(T, H, W, 3)` uint8 frames of the moving shape (vectorised over frames and pixels)."""
        size, num_frames = self.image_size, self.num_frames
        radius = SIZES[attributes["size"]] * size
        (dx, dy), _ = MOTIONS[attributes["motion"]]
        travel = (size - 2 * radius) * rng.uniform(0.6, 0.9)  # the path length, inside the frame
        start = rng.uniform(radius, size - radius, size=2)
        start[0] = size / 2 - dx * travel / 2 if dx else start[0]  # centred along the motion axis
        start[1] = size / 2 - dy * travel / 2 if dy else start[1]
        progress = np.linspace(0.0, 1.0, num_frames)[:, None, None]  # (T, 1, 1)
        centre_x = start[0] + dx * travel * progress
        centre_y = start[1] + dy * travel * progress
        grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # (H, W)
        offset_x, offset_y = (grid_x - centre_x) / radius, (grid_y - centre_y) / radius  # (T, H, W)
        shape = attributes["shape"]
        if shape == "circle":
            inside = offset_x**2 + offset_y**2 <= 1.0
        elif shape == "square":
            inside = np.maximum(np.abs(offset_x), np.abs(offset_y)) <= 0.8
        else:  # upward triangle: apex at the top, base at the bottom
            inside = (offset_y <= 0.8) & (offset_y >= -1.0 + 2 * np.abs(offset_x))
        background = rng.uniform(60, 160, size=3)
        pixels = background + rng.normal(0.0, self.noise, size=(num_frames, size, size, 3))
        pixels = np.where(inside[..., None], np.asarray(COLOURS[attributes["colour"]], np.float64), pixels)
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

    def _audio(self, attributes: dict[str, str], rng: np.random.Generator) -> np.ndarray:
        """`(S,)` float32 tone: pitch from the shape (and size), rhythm (beeps per clip) from the motion."""
        pitch = SHAPES[attributes["shape"]] * (LARGE_PITCH_RATIO if attributes["size"] == "large" else 1.0)
        pitch *= rng.uniform(0.98, 1.02)
        _, beeps = MOTIONS[attributes["motion"]]
        time = np.arange(self.num_samples) / self.sampling_rate
        phase = (np.arange(self.num_samples) / self.num_samples * beeps) % 1.0
        gate = np.ones_like(time) if beeps == 1 else (phase < 0.55).astype(np.float64)
        ramp = np.minimum(1.0, np.minimum(phase, 1 - phase) * beeps * self.num_samples / self.sampling_rate / 0.005)
        tone = np.sin(2 * np.pi * pitch * time + rng.uniform(0, 2 * np.pi)) * gate * ramp
        noise = rng.normal(0.0, self.noise / 800.0, size=self.num_samples)
        return (0.5 * tone + noise).astype(np.float32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Clip `index`: `frames` `(T, H, W, 3)` uint8, `audio` `(S,)` float32, `caption` (str or None),
        `has_text`, the attribute names and `sampling_rate`."""
        if not 0 <= index < self.num_clips:
            raise IndexError(f"clip index {index} out of range for {self.num_clips} clips")
        attributes = self.attributes(index)
        rng = self._rng(index)
        rng.random(4)  # the draws `attributes` made
        frames = self._frames(attributes, rng)
        audio = self._audio(attributes, rng)
        has_text = bool(rng.random() < self.text_fraction)
        caption = str(rng.choice(TEMPLATES)).format(**attributes) if has_text else None
        return {
            "frames": frames,
            "audio": audio,
            "caption": caption,
            "has_text": has_text,
            "sampling_rate": self.sampling_rate,
            **attributes,
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[index] for index in range(self.num_clips))

    def shard_samples(self) -> Iterator[dict[str, Any]]:
        """Clips in `write_shards`' layout: a PNG film strip, WAV bytes, the caption (if any) and a JSON record."""
        for index in range(self.num_clips):
            clip = self[index]
            frames = clip["frames"]
            strip = np.concatenate(list(frames), axis=1)  # (H, T * W, 3)
            sample: dict[str, Any] = {
                "__key__": f"{self.split}-{index:07d}",
                "image": Image.fromarray(strip),
                "wav": _wav_bytes(clip["audio"], self.sampling_rate),
                "num_frames": self.num_frames,
                "has_text": clip["has_text"],
                **{name: clip[name] for name in ("colour", "size", "shape", "motion")},
            }
            if clip["caption"] is not None:
                sample["caption"] = clip["caption"]
            yield sample


def build_av_clips(
    out_dir: str | Path,
    num_train: int = 2048,
    num_eval: int = 256,
    seed: int = 0,
    num_shards: int = 4,
    *,
    num_eval_shards: int | None = None,
    world_size: int = 1,
    text_fraction: float = 0.8,
    overwrite: bool = False,
    **clip_kwargs: Any,
) -> dict[str, list[str]]:
    """Write `AvClips` train and eval shards plus `build_info.json`.

    Args:
        out_dir: output folder (`train/*.tar`, `eval/*.tar`, `build_info.json`).
        num_train, num_eval: clips per split (eval is an independent draw; all eval clips have captions).
        seed: base seed; the same arguments give byte-identical tars.
        num_shards, num_eval_shards: tars per split, multiples of `world_size`.
        world_size: training processes the shards will be spread over.
        text_fraction: share of training clips with a caption.
        overwrite: replace existing tars.
        clip_kwargs: `num_frames`, `image_size`, `sampling_rate`, `num_samples`, `noise` (see `AvClips`).

    Returns:
        `{"train": [tar paths], "eval": [tar paths]}`.
    """
    out_dir = Path(out_dir)
    num_eval_shards = num_shards if num_eval_shards is None else num_eval_shards
    splits = {
        "train": (AvClips(num_train, seed, "train", text_fraction=text_fraction, **clip_kwargs), num_shards),
        "eval": (AvClips(num_eval, seed, "eval", text_fraction=1.0, **clip_kwargs), num_eval_shards),
    }
    paths = {}
    for split, (clips, shards) in splits.items():
        paths[split] = write_shards(
            clips.shard_samples(),
            out_dir / split,
            shards,
            world_size=world_size,
            num_samples=len(clips),
            image_format="png",
            overwrite=overwrite,
        )
    info = {
        "seed": seed,
        "text_fraction": text_fraction,
        "clip_kwargs": clip_kwargs,
        "splits": {split: {"num_clips": len(clips), "num_shards": shards} for split, (clips, shards) in splits.items()},
    }
    (out_dir / "build_info.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return paths


def decode_av_clip(raw: dict[str, Any]) -> dict[str, Any]:
    """Decode one raw tar sample (`iter_tar_samples`) into `frames` `(T, H, W, 3)`, `audio`, `sampling_rate`,
    `caption` (or None), `has_text` and the attributes.

    Raises:
        ValueError: with the `SkipCounter` reason as its first argument (`missing_image`, `undecodable_image`,
            `invalid_json`, `invalid_fields`) and a message.
    """
    if "png" not in raw:
        raise ValueError("missing_image", "no film strip (.png)")
    try:
        record = json.loads(raw["json"]) if "json" in raw else None
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError("invalid_json", repr(error)) from error
    if not isinstance(record, dict) or not isinstance(record.get("num_frames"), int) or record["num_frames"] < 1:
        raise ValueError("invalid_json", "the .json record needs an integer `num_frames`")
    try:
        strip = np.asarray(Image.open(io.BytesIO(raw["png"])).convert("RGB"))
    except Exception as error:  # PIL raises many types for corrupt files
        raise ValueError("undecodable_image", repr(error)) from error
    num_frames = record["num_frames"]
    height, width = strip.shape[0], strip.shape[1] // num_frames
    if strip.shape[1] != width * num_frames:
        raise ValueError("invalid_fields", f"a film strip {strip.shape[1]} wide cannot hold {num_frames} frames")
    if "wav" not in raw:
        raise ValueError("invalid_fields", "no audio track (.wav)")
    try:
        audio, rate = _read_wav(raw["wav"])
    except (wave.Error, ValueError, EOFError) as error:
        raise ValueError("invalid_fields", f"undecodable .wav: {error!r}") from error
    caption = raw["txt"].decode("utf-8") if "txt" in raw else None
    frames = strip.reshape(height, num_frames, width, 3).transpose(1, 0, 2, 3)  # (T, H, W, 3)
    return {
        "__key__": raw["__key__"],
        "frames": np.ascontiguousarray(frames),
        "audio": audio,
        "sampling_rate": rate,
        "caption": caption,
        "has_text": caption is not None,
        **{name: record.get(name) for name in ("colour", "size", "shape", "motion")},
    }


def _generate_av_clips(shards: list[str], counter: SkipCounter | None) -> Iterator[dict[str, Any]]:
    for shard in shards:
        for raw in iter_tar_samples(shard):
            if "__error__" in raw:
                if counter is not None:
                    counter.record_skip(raw["__error__"], raw["__key__"], raw.get("__detail__", ""), shard)
                continue
            try:
                clip = decode_av_clip(raw)
            except ValueError as error:
                reason, detail = (*error.args, "")[:2]
                if counter is not None:
                    counter.record_skip(str(reason), raw["__key__"], str(detail), shard)
                continue
            if counter is not None:
                counter.record_ok(shard)
            clip["caption"] = clip["caption"] or ""  # a string column for Arrow; `has_text` says whether it is real
            yield clip


def draw_av_clips(clips: Sequence[dict[str, Any]], scale: int = 2, wave_width: int = 240) -> Image.Image:
    """A picture of clips, one row each: the frames side by side, the waveform, and the caption below.

    Args:
        clips: clips as `AvClips` or `load_av_clip_stream` give them (`frames`, `audio`, `caption`).
        scale: pixel magnification of the frames.
        wave_width: width of the waveform plot in pixels.
    """
    if not clips:
        raise ValueError("`clips` is empty; pass at least one clip.")
    rows = []
    for clip in clips:
        frames = np.asarray(clip["frames"])
        strip = Image.fromarray(np.concatenate(list(frames), axis=1)).resize(
            (frames.shape[2] * frames.shape[0] * scale, frames.shape[1] * scale), Image.Resampling.NEAREST
        )
        height = strip.height
        row = Image.new("RGB", (strip.width + wave_width + 8, height + 14), "white")
        row.paste(strip, (0, 0))
        audio = np.asarray(clip["audio"], dtype=np.float32)
        columns = np.array_split(np.abs(audio), wave_width)  # peak envelope per pixel column
        peaks = np.asarray([column.max() if len(column) else 0.0 for column in columns])
        draw = ImageDraw.Draw(row)
        left, middle = strip.width + 8, height / 2
        for x, peak in enumerate(peaks):
            half = float(min(peak, 1.0)) * (height / 2 - 1)
            draw.line([(left + x, middle - half), (left + x, middle + half)], fill=(40, 40, 120))
        caption = clip.get("caption") or "(no caption)"
        draw.text((2, height + 1), caption, fill="black")
        rows.append(row)
    canvas = Image.new("RGB", (max(row.width for row in rows), sum(row.height for row in rows)), "white")
    top = 0
    for row in rows:
        canvas.paste(row, (0, top))
        top += row.height
    return canvas


def load_av_clip_stream(shards: Sequence[str], skip_counter: SkipCounter | None = None) -> datasets.IterableDataset:
    """Stream decoded clips from `build_av_clips` tars (one shard per tar: `shuffle`, `split_dataset_by_node` and
    `state_dict` work on whole tars); corrupt samples and shards are skipped and counted in `skip_counter`.

    Each sample: `frames` `(T, H, W, 3)` uint8, `audio` `(S,)` float32, `sampling_rate`, `caption` ("" when the clip
    has none), `has_text`, `colour`, `size`, `shape`, `motion`, `__key__`. Use `.with_format("numpy")` for arrays.
    """
    shards = [str(shard) for shard in shards]
    if not shards:
        raise ValueError("`shards` is empty; pass the tar paths build_av_clips returned.")
    if skip_counter is not None:
        skip_counter.register_shards(shards)
    return datasets.IterableDataset.from_generator(
        _generate_av_clips, gen_kwargs={"shards": shards, "counter": skip_counter}
    )
