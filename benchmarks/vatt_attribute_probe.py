"""Which clip attributes (colour, size, shape, motion) a VATT model has learned: the README's video->audio diagnosis.

Two probes on the synthetic clips of `benchmarks/vatt_synthetic.py`:

- `embeddings RUN DATA`: nearest-centroid probe of a pretraining run's held-out embeddings (`RUN/final`; clips from
  `DATA/eval`, no augmentation, no DropToken): for each space (video in the video-audio and video-text spaces, audio,
  text) and attribute, the first half of the clips gives one centroid per value, the second half is scored.
- `supervised`: the same tiny video tower (`vatt-tiny`) trained with cross-entropy on one attribute (4096 seeded
  training clips, 512 held-out, no augmentation, AdamW 1e-3, batch 32): can the tower see it at all?
- `contrastive`: `VattForPreTraining` (`vatt-tiny`, DropToken off) trained on the same clips held in memory, every
  clip captioned, no augmentation, AdamW 1e-3 with 50 warmup steps and cosine decay, batch 32: the pretraining loss
  with each pair's weight and the word embeddings' freezing as flags, so one part of the objective can be switched
  off; prints held-out video->text and video->audio R@1 (a hit names / sounds like the query's attributes) and the
  nearest-centroid probe of the video embeddings every 500 steps.
- `targets`: the video tower and its FAC heads trained with the same NCE against one vector per attribute
  combination (96 of them; fixed random, or learned) in place of the text tower: how fast NCE at batch 32 teaches
  the tower what cross-entropy teaches it in 1500 steps.

    python benchmarks/vatt_attribute_probe.py embeddings runs/vatt_synthetic/vatt_droptoken_0 runs/vatt_synthetic/data
    python benchmarks/vatt_attribute_probe.py supervised --attribute motion --steps 1500   # ~1 CPU minute
    python benchmarks/vatt_attribute_probe.py contrastive --video_audio_weight 0             # ~1 CPU minute
    python benchmarks/vatt_attribute_probe.py targets --learned
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import get_cosine_schedule_with_warmup

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import pretrain_vatt

from hfvision.data.av_clips import COLOURS, MOTIONS, SHAPES, SIZES, AvClips
from hfvision.models.vatt import (
    VattConfig,
    VattFeatureExtractor,
    VattForPreTraining,
    VattForVideoClassification,
    VattProcessor,
    VattVideoProcessor,
    train_vatt_tokenizer,
)
from hfvision.models.vatt.modeling_vatt import nce_loss

VALUES = {"colour": list(COLOURS), "size": list(SIZES), "shape": list(SHAPES), "motion": list(MOTIONS)}


def probe_embeddings(run_dir: str, data_dir: str) -> dict[str, dict[str, float]]:
    """Nearest-centroid accuracy per embedding space and attribute."""
    model = VattForPreTraining.from_pretrained(f"{run_dir}/final").eval()
    processor = VattProcessor.from_pretrained(f"{run_dir}/final")
    data_args = argparse.Namespace(eval_split="eval", max_eval_samples=None)
    clips = pretrain_vatt.load_eval_clips(data_args, data_dir)
    embeddings = pretrain_vatt.embed_clips(model, processor, clips, batch_size=128)
    attributes = np.array([[str(clip[name]) for name in VALUES] for clip in clips])
    return {space: centroid_probe(values.numpy(), attributes) for space, values in embeddings.items()}


def clip_tensors(num_clips: int, split: str, attribute: str, image_size: int, num_frames: int) -> tuple:
    """`(N, T, 3, H, W)` frames in [-1, 1] (every `8 // num_frames`-th frame, area-resized from 32 px) and labels."""
    clips = AvClips(num_clips, seed=42, split=split, num_frames=8, image_size=32, num_samples=1280)
    frames = torch.from_numpy(np.stack([clips[i]["frames"] for i in range(num_clips)])).float()
    frames = frames.permute(0, 1, 4, 2, 3)[:, :: 8 // num_frames]
    if image_size != 32:
        flat = F.interpolate(frames.flatten(0, 1), size=(image_size, image_size), mode="bilinear", antialias=True)
        frames = flat.unflatten(0, (num_clips, num_frames))
    labels = torch.tensor([VALUES[attribute].index(clips.attributes(i)[attribute]) for i in range(num_clips)])
    return frames / 127.5 - 1, labels


def probe_supervised(attribute: str, steps: int, image_size: int, num_frames: int, seed: int) -> float:
    """Held-out accuracy of the tiny video tower trained with cross-entropy on `attribute`."""
    torch.manual_seed(seed)
    train_x, train_y = clip_tensors(4096, "train", attribute, image_size, num_frames)
    test_x, test_y = clip_tensors(512, "eval", attribute, image_size, num_frames)
    video = {"image_size": image_size, "num_frames": num_frames}
    config = VattConfig.from_preset("vatt-tiny", num_labels=len(VALUES[attribute]), video_config=video)
    model = VattForVideoClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    for _ in range(steps):
        batch = torch.randint(0, len(train_x), (32,))
        loss = model(pixel_values_videos=train_x[batch], labels=train_y[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return float((model(pixel_values_videos=test_x).logits.argmax(-1) == test_y).float().mean())


def clip_batches(num_train: int = 4096, num_eval: int = 512) -> tuple[dict[str, Any], dict[str, Any], VattProcessor]:
    """Every clip of both splits through the real processor (4 frames of 16 px, 1280 samples at 8 kHz, a word
    tokenizer trained on the training captions), captioned, without augmentation: `videos`, `audio`, `input_ids`,
    `attention_mask` tensors and `attributes` `(N, 4)` (colour, size, shape, motion) per split."""
    splits = {
        split: AvClips(size, seed=42, split=split, num_frames=8, image_size=32, num_samples=1280, text_fraction=1.0)
        for split, size in (("train", num_train), ("eval", num_eval))
    }
    captions = [splits["train"][index]["caption"] for index in range(num_train)]
    processor = VattProcessor(
        image_processor=VattVideoProcessor(
            num_frames=4, size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}
        ),
        feature_extractor=VattFeatureExtractor(sampling_rate=8000, num_samples=1280),
        tokenizer=train_vatt_tokenizer(captions, vocab_size=100, model_max_length=8),
    )
    batches = []
    for clips in splits.values():
        items = [clips[index] for index in range(len(clips))]
        text = processor(text=[item["caption"] for item in items])
        batches.append(
            {
                "videos": processor.image_processor([list(item["frames"]) for item in items], return_tensors="pt")[
                    "pixel_values_videos"
                ],
                "audio": processor.feature_extractor(
                    [item["audio"] for item in items], sampling_rate=8000, return_tensors="pt"
                )["input_values"],
                "input_ids": text["input_ids"],
                "attention_mask": text["attention_mask"],
                "attributes": np.array([[item[name] for name in VALUES] for item in items]),
            }
        )
    return batches[0], batches[1], processor


def centroid_probe(features: np.ndarray, attributes: np.ndarray) -> dict[str, float]:
    """Nearest-centroid accuracy per attribute: the first half fits one centroid per value, the second is scored."""
    half = len(features) // 2
    scores = {}
    for column, name in enumerate(VALUES):
        labels = attributes[:, column]
        present = sorted(set(labels[:half]))
        centroids = np.stack([features[:half][labels[:half] == value].mean(0) for value in present])
        predicted = np.array(present)[(features[half:] @ centroids.T).argmax(1)]
        scores[name] = float((predicted == labels[half:]).mean())
    return scores


def probe_contrastive(args: argparse.Namespace) -> None:
    """Train the tiny pretraining model in memory; print held-out R@1 and the video probe every 500 steps."""
    torch.manual_seed(args.seed)
    train, held_out, processor = clip_batches()
    config = VattConfig.from_preset(
        "vatt-tiny",
        droptoken_rate=0.0,
        video_text_loss_weight=args.video_text_weight,
        video_audio_loss_weight=args.video_audio_weight,
        audio_config={"num_samples": 1280},
        text_config={"vocab_size": len(processor.tokenizer), "freeze_word_embeddings": args.freeze_word_embeddings},
    )
    model = VattForPreTraining(config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.05)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=50, num_training_steps=args.steps)
    print("| step | loss | video->text R@1 | video->audio R@1 | video probe: " + " | ".join(VALUES) + " |")
    print("|---" * (4 + len(VALUES)) + "|")
    for step in range(1, args.steps + 1):
        batch = torch.randint(0, len(train["videos"]), (32,))
        loss = model(
            pixel_values_videos=train["videos"][batch],
            input_values=train["audio"][batch],
            input_ids=train["input_ids"][batch],
            attention_mask=train["attention_mask"][batch],
        ).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 500 and step != args.steps:
            continue
        model.eval()
        with torch.no_grad():
            outputs = model.vatt(
                pixel_values_videos=held_out["videos"],
                input_values=held_out["audio"],
                input_ids=held_out["input_ids"],
                attention_mask=held_out["attention_mask"],
                droptoken=False,
            )
        model.train()
        attributes = held_out["attributes"]
        recall = []
        for video, other, columns in (
            (outputs.video_embeds_vt, outputs.text_embeds, [0, 1, 2, 3]),  # a caption names all four
            (outputs.video_embeds_va, outputs.audio_embeds, [1, 2, 3]),  # a soundtrack has size, shape, motion
        ):
            top = (video @ other.t()).argmax(1).numpy()
            recall.append(float((attributes[top][:, columns] == attributes[:, columns]).all(1).mean()))
        probe = centroid_probe(outputs.video_embeds_va.numpy(), attributes)
        cells = [f"{loss.item():.3f}", *(f"{value:.3f}" for value in recall)]
        cells += [f"{probe[name]:.2f}" for name in VALUES]
        print(f"| {step} | " + " | ".join(cells) + " |", flush=True)


def probe_targets(args: argparse.Namespace) -> None:
    """NCE of the video tower + FAC heads against one vector per attribute combination (fixed or learned)."""
    torch.manual_seed(args.seed)
    train, held_out, _ = clip_batches()
    combinations = sorted(set(map(tuple, train["attributes"])))
    index = {combination: k for k, combination in enumerate(combinations)}
    train_ids = torch.tensor([index[tuple(row)] for row in train["attributes"]])
    config = VattConfig.from_preset("vatt-tiny", droptoken_rate=0.0, audio_config={"num_samples": 1280})
    vatt = VattForPreTraining(config).vatt
    targets = torch.randn(len(combinations), config.d_vt, requires_grad=args.learned)
    parameters = [*vatt.parameters(), *([targets] if args.learned else [])]
    optimizer = torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.05)

    def embed(videos: torch.Tensor) -> torch.Tensor:
        pooled = vatt.get_video_features(videos, droptoken=False, return_dict=True).pooler_output
        return F.normalize(vatt.projection_heads.video_va_to_vt(pooled), dim=-1)

    kind = "learned" if args.learned else "fixed random"
    print(f"| step | NCE | nearest {kind} target: " + " | ".join(VALUES) + " |\n" + "|---" * (2 + len(VALUES)) + "|")
    for step in range(1, args.steps + 1):
        batch = torch.randint(0, len(train_ids), (32,))
        loss = nce_loss(embed(train["videos"][batch]), F.normalize(targets, dim=-1)[train_ids[batch]], 0.07)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 500 and step != args.steps:
            continue
        vatt.eval()
        with torch.no_grad():
            nearest = (embed(held_out["videos"]) @ F.normalize(targets, dim=-1).t()).argmax(1).numpy()
        vatt.train()
        predicted = np.array(combinations)[nearest]
        accuracy = (predicted == held_out["attributes"]).mean(0)
        print(f"| {step} | {loss.item():.3f} | " + " | ".join(f"{value:.2f}" for value in accuracy) + " |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    embeddings = commands.add_parser("embeddings", help="nearest-centroid probe of a run's embeddings")
    embeddings.add_argument("run_dir")
    embeddings.add_argument("data_dir")
    supervised = commands.add_parser("supervised", help="train the tiny video tower on one attribute")
    supervised.add_argument("--attribute", choices=list(VALUES), default="motion")
    supervised.add_argument("--steps", type=int, default=1500)
    supervised.add_argument("--image_size", type=int, default=16)
    supervised.add_argument("--num_frames", type=int, default=4)
    supervised.add_argument("--seed", type=int, default=0)
    contrastive = commands.add_parser("contrastive", help="the pretraining objective in memory, parts switchable")
    contrastive.add_argument("--video_text_weight", type=float, default=1.0)
    contrastive.add_argument("--video_audio_weight", type=float, default=1.0)
    contrastive.add_argument("--freeze_word_embeddings", action="store_true")
    targets = commands.add_parser("targets", help="NCE of the video tower against per-combination vectors")
    targets.add_argument("--learned", action="store_true", help="learn the target vectors (default: fixed random)")
    for command in (contrastive, targets):
        command.add_argument("--steps", type=int, default=1500)
        command.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "contrastive":
        probe_contrastive(args)
    elif args.command == "targets":
        probe_targets(args)
    elif args.command == "embeddings":
        print("| space | " + " | ".join(VALUES) + " |\n|---|---|---|---|---|")
        for space, row in probe_embeddings(args.run_dir, args.data_dir).items():
            print(f"| {space} | " + " | ".join(f"{row[name]:.2f}" for name in VALUES) + " |")
    else:
        accuracy = probe_supervised(args.attribute, args.steps, args.image_size, args.num_frames, args.seed)
        chance = 1 / len(VALUES[args.attribute])
        print(f"{args.attribute}: held-out accuracy {accuracy:.3f} (chance {chance:.3f}) after {args.steps} steps")


if __name__ == "__main__":
    main()
