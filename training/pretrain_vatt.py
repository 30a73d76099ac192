"""Pretrain VATT (Akbari et al., NeurIPS 2021, arXiv 2104.11178) on a video + audio + text stream with Accelerate.

Usage (one or many processes, CPU or GPUs; a YAML file gives defaults that command-line flags override)::

    accelerate launch training/pretrain_vatt.py --config training/configs/pretrain_vatt_tiny.yaml
    python training/pretrain_vatt.py --config training/configs/pretrain_vatt_tiny.yaml --max_steps 50
    python training/pretrain_vatt.py --train_data path/to/av_clips --model_preset vatt-bbs --output_dir runs/vatt

What it does, in order:
1. data: `--synthetic` first writes seeded synthetic clips (`hfvision.data.build_av_clips`: a moving shape, a tone
   that follows it, a caption; a share of the clips without caption, as the paper mixes AudioSet into HowTo100M)
   into `output_dir/synthetic_data` on the main process; otherwise `--train_data` / `--eval_data` name a folder
   holding `<split>/*.tar` shards in that format, read by `hfvision.data.load_av_clip_stream` (corrupt clips are
   skipped and counted);
2. processor: the video processor and audio feature extractor at the model's sizes and a word-level tokenizer
   trained on the first captions of the training stream (main process; saved to `output_dir/processor`, which the
   other processes and resumed runs load), unless `--model_name_or_path` or `--tokenizer_name_or_path` provides one;
3. model (`VattForPreTraining`) from a preset (`--model_preset`) or a checkpoint; AdamW, linear warmup then cosine
   decay: the shared loop of `hfvision.training` (accumulation, mixed precision, checkpoints with exact resume,
   skip counting, progress bar, trackers);
4. each batch: frames sampled to the model's frame count with one seeded random resized crop + flip per clip
   (`hfvision.training.batch_seed` of the sample keys, so a resumed run replays it), the waveform at the model's
   rate and length, and the caption (clips without one are masked out of the MIL-NCE); the loss is the paper's
   NCE(video, audio) + MIL-NCE(video, text) with DropToken on video and audio (`droptoken_rate` of the config);
5. every `eval_steps` and at the end, on the main process, on the held-out clips (all captioned) without DropToken:
   video->text and text->video recall@1/5/10 in the video-text space, video->audio and audio->video recall@1/5/10
   in the video-audio space (`hfvision/metrics/retrieval_recall`);
6. at the end: `save_pretrained` of the model and processor into `output_dir/final` (safetensors), with
   `eval_results.json`, `retrieval_examples.png` (held-out clips with the captions the model ranks first) and a
   model card `README.md` rendered from `model_cards/vatt.md` with the measured numbers.

Ground truth of the retrieval on synthetic clips: a caption matches a clip when it names the clip's four attributes
(colour, size, shape, motion; any of the phrasings), a soundtrack matches a clip when it has the clip's audible
attributes (shape, size, motion); the paper's benchmarks (YouCook2, MSR-VTT) pair each clip with its own caption only.

Deviations from the paper's recipe (also in the model card): synthetic clips instead of HowTo100M + AudioSet; one
caption per clip (the paper's MIL-NCE uses the neighbouring narrations as extra positives); a word-level tokenizer
trained on the captions instead of the paper's 2^16-word vocabulary from pretrained word2vec; frames are sampled from
the whole clip and the audio is the whole clip's soundtrack (no 3.2 s random window inside a longer video); with
gradient accumulation each micro-batch is its own contrastive batch. The tiny config crops at least half the frame
and does not flip (`--crop_min_area 0.5 --horizontal_flip false`): a flip would swap the "left" and "right" that the
synthetic captions and beeps name, and the paper's 8% crops of a 32-px frame cut the 7-12 px shape out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from torch import nn
from transformers import AutoTokenizer

import hfvision  # noqa: F401  (registers VATT with the Auto classes)
from hfvision import training
from hfvision.data import SkipCounter, build_av_clips, load_av_clip_stream
from hfvision.data.av_clips import draw_av_clips
from hfvision.metrics import load_metric
from hfvision.models.vatt import (
    VattConfig,
    VattFeatureExtractor,
    VattForPreTraining,
    VattProcessor,
    VattVideoProcessor,
    train_vatt_tokenizer,
)
from hfvision.training import StreamDataArguments, StreamTrainingArguments

logger = get_logger(__name__)

RECALL_AT = (1, 5, 10)
LOSS_TERMS = ("loss_video_audio", "loss_video_text")
AUDIBLE = ("shape", "size", "motion")  # what the synthetic soundtrack encodes (colour is silent)
DESCRIBED = ("colour", "size", "shape", "motion")  # what a synthetic caption names
NUM_EXAMPLES = 4  # held-out clips drawn in retrieval_examples.png


# --- arguments -----------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    model_preset: str = field(
        default="vatt-tiny",
        metadata={"help": "Preset to train from scratch: vatt-tiny, vatt-ma-tiny, vatt-bbs, vatt-mbs, vatt-lbs, ..."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint (model + processor) to continue pretraining from."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to use instead of training one on the training captions."}
    )
    num_frames: int | None = field(default=None, metadata={"help": "Frames per clip; default: the preset's."})
    image_size: int | None = field(default=None, metadata={"help": "Frame side; default: the preset's."})
    audio_num_samples: int | None = field(
        default=None, metadata={"help": "Audio samples per clip at the model's rate; default: the preset's."}
    )
    droptoken_rate: float | None = field(
        default=None, metadata={"help": "Share of video and audio tokens dropped in training; default: the preset's."}
    )
    tokenizer_vocab_size: int = field(default=1000, metadata={"help": "Vocabulary size of the trained tokenizer."})
    tokenizer_train_samples: int = field(
        default=2048, metadata={"help": "The tokenizer is trained on the captions of this many first clips."}
    )
    hub_model_id: str = field(
        default="org/vatt-tiny", metadata={"help": "Repo id the model card names (used by `hfvision publish`)."}
    )


@dataclass
class DataArguments(StreamDataArguments):
    synthetic: bool = field(
        default=False, metadata={"help": "Build seeded synthetic clips in output_dir/synthetic_data, train on them."}
    )
    synthetic_num_train: int = field(default=2048, metadata={"help": "Synthetic training clips."})
    synthetic_num_eval: int = field(default=256, metadata={"help": "Synthetic held-out clips (all captioned)."})
    synthetic_num_frames: int = field(default=8, metadata={"help": "Frames of a synthetic clip."})
    synthetic_image_size: int = field(default=32, metadata={"help": "Frame side of a synthetic clip."})
    synthetic_sampling_rate: int = field(default=8000, metadata={"help": "Audio rate of a synthetic clip (Hz)."})
    synthetic_num_samples: int = field(default=1280, metadata={"help": "Audio samples of a synthetic clip."})
    synthetic_text_fraction: float = field(default=0.8, metadata={"help": "Share of training clips with a caption."})
    synthetic_shards_per_process: int = field(default=2, metadata={"help": "Synthetic tars per training process."})
    crop_min_area: float = field(
        default=0.08, metadata={"help": "Smallest area share of the random resized crop (the paper's 0.08)."}
    )
    horizontal_flip: bool = field(
        default=True,
        metadata={"help": "Random horizontal flip (the paper's); off where left and right carry meaning (synthetic)."},
    )


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[ModelArguments, DataArguments, StreamTrainingArguments]:
    """Parses `--config file.yaml` (optional) and the flags of the three argument dataclasses."""
    model_args, data_args, training_args = training.parse_args(
        (ModelArguments, DataArguments, StreamTrainingArguments), argv
    )
    if data_args.synthetic and data_args.train_data:
        raise ValueError("pass either `--synthetic` or `--train_data`, not both")
    if not data_args.synthetic and not data_args.train_data:
        raise ValueError("pass `--train_data` (a folder of `<split>/*.tar` clip shards) or `--synthetic`")
    if not 0.0 < data_args.crop_min_area <= 1.0:
        raise ValueError(f"`crop_min_area` must be in (0, 1], got {data_args.crop_min_area}")
    return model_args, data_args, training_args


# --- data ----------------------------------------------------------------------------------------------------------


def prepare_synthetic_data(data_args: DataArguments, output_dir: Path, accelerator: Accelerator, seed: int) -> Path:
    """Builds the synthetic clips once (main process first; the others then find them) and returns their folder."""
    data_dir = output_dir / "synthetic_data"
    world_size = accelerator.num_processes
    build_args = {
        "num_train": data_args.synthetic_num_train,
        "num_eval": data_args.synthetic_num_eval,
        "seed": seed,
        "num_shards": world_size * data_args.synthetic_shards_per_process,
        "num_eval_shards": 1,
        "world_size": world_size,
        "text_fraction": data_args.synthetic_text_fraction,
        "num_frames": data_args.synthetic_num_frames,
        "image_size": data_args.synthetic_image_size,
        "sampling_rate": data_args.synthetic_sampling_rate,
        "num_samples": data_args.synthetic_num_samples,
    }
    stamp = data_dir / "build_args.json"
    with accelerator.main_process_first():
        if accelerator.is_main_process and (not stamp.exists() or json.loads(stamp.read_text()) != build_args):
            build_av_clips(data_dir, **build_args, overwrite=True)
            stamp.write_text(json.dumps(build_args, indent=1) + "\n")
    return data_dir


def split_shards(source: str, split: str) -> list[str]:
    """The sorted `<source>/<split>/*.tar` shards of a clip folder."""
    shards = sorted(str(path) for path in (Path(source) / split).glob("*.tar"))
    if not shards:
        raise FileNotFoundError(f"no clip shards in {Path(source) / split} (expected `*.tar` from build_av_clips)")
    return shards


def load_clip_stream(
    source: str,
    split: str,
    shuffle_buffer: int | None = None,
    seed: int = 0,
    skip_counter: SkipCounter | None = None,
) -> datasets.IterableDataset:
    """A clip folder's split as a stream of numpy samples, shuffled (shard order, then a sample buffer) when
    `shuffle_buffer` is set; the reader `hfvision.training.prepare_stream` takes as `load_stream`."""
    stream = load_av_clip_stream(split_shards(source, split), skip_counter=skip_counter)
    if shuffle_buffer is not None:
        if shuffle_buffer < 1:
            raise ValueError(f"`shuffle_buffer` must be None or >= 1, got {shuffle_buffer}")
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    return stream.with_format("numpy")


def _caption(sample: dict[str, Any]) -> str | None:
    return str(sample["caption"]) if bool(sample["has_text"]) else None


class ClipBatchCollator:
    """collate_fn of the training DataLoader: clips -> `pixel_values_videos`, `input_values`, captions (+ keys).

    The video augmentation (one random resized crop + flip per clip) is seeded by `hfvision.training.batch_seed` of
    (seed, epoch, the batch's sample keys), so resumed runs replay it. `epoch` is set by `TrainStream` before each
    pass. Clips without a caption get `text_mask` 0 and are left out of the MIL-NCE.
    """

    def __init__(
        self,
        processor: VattProcessor,
        seed: int,
        augment: bool = True,
        crop_min_area: float = 0.08,
        horizontal_flip: bool = True,
    ) -> None:
        self.processor = processor
        self.seed = seed
        self.augment = augment
        self.crop_scale = (crop_min_area, 1.0)
        self.horizontal_flip = horizontal_flip
        self.epoch = 0

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [str(sample["__key__"]) for sample in samples]
        rates = {int(sample["sampling_rate"]) for sample in samples}
        if len(rates) != 1:
            raise ValueError(f"a batch mixes audio sampling rates {sorted(rates)}; resample the data to one rate")
        batch = dict(
            self.processor.image_processor(
                [list(np.asarray(sample["frames"], dtype=np.uint8)) for sample in samples],  # Arrow gives int64
                do_augment=self.augment,
                crop_scale=self.crop_scale,
                do_flip=self.horizontal_flip,
                seed=training.batch_seed(self.seed, self.epoch, keys),
                return_tensors="pt",
            )
        )
        batch.update(
            self.processor.feature_extractor(
                [sample["audio"] for sample in samples], sampling_rate=rates.pop(), return_tensors="pt"
            )
        )
        batch.update(self.processor(text=[_caption(sample) for sample in samples]))
        return {**batch, "keys": keys}


# --- processor and model -------------------------------------------------------------------------------------------


def model_config(model_args: ModelArguments) -> VattConfig:
    """The preset's config with the size overrides (or the checkpoint's config)."""
    if model_args.model_name_or_path:
        return VattConfig.from_pretrained(model_args.model_name_or_path)
    overrides: dict[str, Any] = {}
    sizes = (("num_frames", model_args.num_frames), ("image_size", model_args.image_size))
    video = {name: value for name, value in sizes if value is not None}
    if video:
        overrides["video_config"] = video
    if model_args.audio_num_samples is not None:
        overrides["audio_config"] = {"num_samples": model_args.audio_num_samples}
    if model_args.droptoken_rate is not None:
        overrides["droptoken_rate"] = model_args.droptoken_rate
    return VattConfig.from_preset(model_args.model_preset, **overrides)


def load_or_train_processor(
    model_args: ModelArguments,
    config: VattConfig,
    train_source: str,
    train_split: str,
    output_dir: Path,
    accelerator: Accelerator,
    reuse_saved: bool,
) -> VattProcessor:
    """The processor: from the checkpoint, or built at the config's sizes around a given or trained tokenizer.

    A built processor is saved to `output_dir/processor` by the main process; the other processes (and a resumed
    run, `reuse_saved`) load that copy, so every rank tokenizes identically.
    """
    if model_args.model_name_or_path and not model_args.tokenizer_name_or_path:
        return VattProcessor.from_pretrained(model_args.model_name_or_path)
    saved = output_dir / "processor"
    with accelerator.main_process_first():
        if accelerator.is_main_process and not (reuse_saved and (saved / "processor_config.json").is_file()):
            max_words = config.text_config.max_position_embeddings
            if model_args.tokenizer_name_or_path:
                tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name_or_path)
            else:
                stream = load_av_clip_stream(split_shards(train_source, train_split))
                captions = [
                    sample["caption"]
                    for sample in stream.take(model_args.tokenizer_train_samples)
                    if sample["has_text"]
                ]
                tokenizer = train_vatt_tokenizer(
                    captions, vocab_size=model_args.tokenizer_vocab_size, model_max_length=max_words
                )
            video, audio = config.video_config, config.audio_config
            VattProcessor(
                image_processor=VattVideoProcessor(
                    num_frames=video.num_frames,
                    size={"shortest_edge": video.image_size},
                    crop_size={"height": video.image_size, "width": video.image_size},
                ),
                feature_extractor=VattFeatureExtractor(
                    sampling_rate=audio.sampling_rate, num_samples=audio.num_samples
                ),
                tokenizer=tokenizer,
            ).save_pretrained(saved)
    return VattProcessor.from_pretrained(saved)


def build_model(model_args: ModelArguments, config: VattConfig, vocab_size: int) -> VattForPreTraining:
    """A fresh `VattForPreTraining` of `config` sized to the tokenizer, or the checkpoint to continue from."""
    if model_args.model_name_or_path:
        model = VattForPreTraining.from_pretrained(model_args.model_name_or_path)
        if vocab_size > model.config.text_config.vocab_size:
            raise ValueError(
                f"the tokenizer has {vocab_size} ids, the checkpoint's text tower only "
                f"{model.config.text_config.vocab_size}"
            )
        return model
    config.text_config.vocab_size = vocab_size
    return VattForPreTraining(config)


# --- evaluation ----------------------------------------------------------------------------------------------------


def load_eval_clips(data_args: DataArguments, eval_source: str) -> list[dict[str, Any]] | None:
    """The held-out clips in file order (captioned ones only), or None when there is no eval split."""
    try:
        stream = load_clip_stream(eval_source, data_args.eval_split)
    except (ValueError, FileNotFoundError) as error:
        logger.warning("no evaluation: %s", error)
        return None
    clips = [{**clip, "frames": np.asarray(clip["frames"], dtype=np.uint8)} for clip in stream if clip["has_text"]]
    if data_args.max_eval_samples:
        clips = clips[: data_args.max_eval_samples]
    return clips or None


def matching_indices(clips: list[dict[str, Any]], attributes: Sequence[str]) -> list[list[int]]:
    """For each clip, the indices of the clips whose `attributes` all equal its own (itself included)."""
    codes = np.asarray([[str(clip[name]) for name in attributes] for clip in clips])
    equal = (codes[:, None, :] == codes[None, :, :]).all(-1)  # (N, N)
    return [np.flatnonzero(row).tolist() for row in equal]


@torch.no_grad()
def embed_clips(
    model: VattForPreTraining, processor: VattProcessor, clips: list[dict[str, Any]], batch_size: int
) -> dict[str, torch.Tensor]:
    """L2-normalised embeddings of held-out clips (no augmentation, no DropToken): `video_va`, `video_vt`, `audio`,
    `text`, each `(N, D)` on the CPU."""
    collator = ClipBatchCollator(processor, seed=0, augment=False)
    parts: dict[str, list[torch.Tensor]] = {"video_va": [], "video_vt": [], "audio": [], "text": []}
    for start in range(0, len(clips), batch_size):
        batch = collator(clips[start : start + batch_size])
        outputs = model.vatt(
            pixel_values_videos=batch["pixel_values_videos"].to(model.device),
            input_values=batch["input_values"].to(model.device),
            input_ids=batch["input_ids"].to(model.device),
            attention_mask=batch["attention_mask"].to(model.device),
            droptoken=False,
        )
        parts["video_va"].append(outputs.video_embeds_va.float().cpu())
        parts["video_vt"].append(outputs.video_embeds_vt.float().cpu())
        parts["audio"].append(outputs.audio_embeds.float().cpu())
        parts["text"].append(outputs.text_embeds.float().cpu())
    return {name: torch.cat(values) for name, values in parts.items()}


def evaluate_retrieval(
    model: VattForPreTraining, processor: VattProcessor, clips: list[dict[str, Any]], batch_size: int
) -> dict[str, float]:
    """Video<->text and video<->audio recall@1/5/10 over the held-out clips (each clip a query and a candidate)."""
    was_training = model.training
    model.eval()
    embeds = embed_clips(model, processor, clips, batch_size)
    model.train(was_training)
    recall = load_metric("retrieval_recall")
    metrics: dict[str, float] = {}
    for name, video, other, attributes in (
        ("text", embeds["video_vt"], embeds["text"], DESCRIBED),
        ("audio", embeds["video_va"], embeds["audio"], AUDIBLE),
    ):
        result = recall.compute(
            predictions=(video @ other.t()).numpy(),
            references=matching_indices(clips, attributes),
            recall_at=RECALL_AT,
        )
        for key, value in result.items():  # image_to_text_recall@k -> video_to_text_recall@k, and back
            direction = f"video_to_{name}" if key.startswith("image_to_text") else f"{name}_to_video"
            metrics[f"{direction}_recall@{key.rsplit('@', 1)[1]}"] = value
    metrics["num_samples"] = float(len(clips))
    return metrics


@torch.no_grad()
def save_retrieval_examples(
    model: VattForPreTraining, processor: VattProcessor, clips: list[dict[str, Any]], path: Path, batch_size: int
) -> None:
    """A picture of the first held-out clips (frames, waveform) with the true caption and the model's top caption."""
    was_training = model.training
    model.eval()
    embeds = embed_clips(model, processor, clips, batch_size)
    model.train(was_training)
    best = (embeds["video_vt"][:NUM_EXAMPLES] @ embeds["text"].t()).argmax(1).tolist()
    rows = [
        {**clip, "caption": f"true: {clip['caption']} | top-1: {clips[index]['caption']}"}
        for clip, index in zip(clips[:NUM_EXAMPLES], best, strict=True)
    ]
    draw_av_clips(rows, scale=2).save(path)


# --- main ----------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the pretraining; returns the final metrics (eval metrics on the main process, train losses everywhere)."""
    model_args, data_args, training_args = parse_args(argv)
    output_dir = Path(training_args.output_dir)
    accelerator = training.make_accelerator(training_args)
    run_config = training.run_config(model_args, data_args, training_args)
    # Refuses to resume another run's checkpoint or to mix a fresh run into one (--overwrite_output_dir starts over).
    resume_checkpoint = training.prepare_output_dir(accelerator, training_args, run_config)

    # 1. Data sources.
    if data_args.synthetic:
        train_source = eval_source = str(prepare_synthetic_data(data_args, output_dir, accelerator, training_args.seed))
    else:
        train_source, eval_source = data_args.train_data, data_args.eval_data or data_args.train_data

    # 2. Processor and model (same initial weights on every rank; DDP also broadcasts rank 0's).
    config = model_config(model_args)
    processor = load_or_train_processor(
        model_args,
        config,
        train_source,
        data_args.train_split,
        output_dir,
        accelerator,
        reuse_saved=resume_checkpoint is not None,
    )
    model = build_model(model_args, config, vocab_size=len(processor.tokenizer))
    logger.info("%.2fM parameters", sum(parameter.numel() for parameter in model.parameters()) / 1e6)
    optimizer, lr_scheduler = training.build_optimizer(model, training_args)

    # 3. Training stream: prepare() gives each rank whole shards; a checkpoint restores everything.
    collator = ClipBatchCollator(
        processor,
        seed=training_args.seed,
        crop_min_area=data_args.crop_min_area,
        horizontal_flip=data_args.horizontal_flip,
    )
    model, optimizer, stream, global_step = training.prepare_stream(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        train_source,
        collator,
        data_args,
        training_args.seed,
        resume_checkpoint,
        load_stream=load_clip_stream,
    )

    # 4. Evaluation (main process only).
    eval_clips = load_eval_clips(data_args, eval_source) if accelerator.is_main_process else None
    batch_size = data_args.per_device_eval_batch_size

    def evaluate(unwrapped: nn.Module) -> dict[str, float]:
        return evaluate_retrieval(unwrapped, processor, eval_clips, batch_size)

    def forward(model: nn.Module, batch: dict[str, Any]) -> Any:
        return model(**batch)

    # 5. Train.
    accelerator.init_trackers("pretrain_vatt", config={k: v for k, v in run_config.items() if v is not None})
    metrics = training.train(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        stream,
        training_args,
        global_step,
        forward=forward,
        loss_terms=LOSS_TERMS,
        evaluate=evaluate if eval_clips else None,
        description="pretrain vatt",
        run_arguments=run_config,
    )

    # 6. Final model, processor, results, picture and card.
    def card_pictures(final_dir: Path) -> None:
        if eval_clips:
            unwrapped = accelerator.unwrap_model(model)
            save_retrieval_examples(unwrapped, processor, eval_clips, final_dir / "retrieval_examples.png", batch_size)

    training.save_final(accelerator, model, processor, output_dir, metrics, run_config, card_pictures=card_pictures)
    training.finish(accelerator)
    return metrics


if __name__ == "__main__":
    main()
    training.exit_cleanly()
