"""Which clip attributes (colour, size, shape, motion) a VATT model has learned: the README's video->audio diagnosis.

Two probes on the synthetic clips of `benchmarks/vatt_synthetic.py`:

- `embeddings RUN DATA`: nearest-centroid probe of a pretraining run's held-out embeddings (`RUN/final`; clips from
  `DATA/eval`, no augmentation, no DropToken): for each space (video in the video-audio and video-text spaces, audio,
  text) and attribute, the first half of the clips gives one centroid per value, the second half is scored.
- `supervised`: the same tiny video tower (`vatt-tiny`) trained with cross-entropy on one attribute (4096 seeded
  training clips, 512 held-out, no augmentation, AdamW 1e-3, batch 32): can the tower see it at all?

    python benchmarks/vatt_attribute_probe.py embeddings runs/vatt_synthetic/vatt_droptoken_0 runs/vatt_synthetic/data
    python benchmarks/vatt_attribute_probe.py supervised --attribute motion --steps 1500   # ~1 CPU minute
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import pretrain_vatt

from hfvision.data.av_clips import COLOURS, MOTIONS, SHAPES, SIZES, AvClips
from hfvision.models.vatt import VattConfig, VattForPreTraining, VattForVideoClassification, VattProcessor

VALUES = {"colour": list(COLOURS), "size": list(SIZES), "shape": list(SHAPES), "motion": list(MOTIONS)}


def probe_embeddings(run_dir: str, data_dir: str) -> dict[str, dict[str, float]]:
    """Nearest-centroid accuracy per embedding space and attribute."""
    model = VattForPreTraining.from_pretrained(f"{run_dir}/final").eval()
    processor = VattProcessor.from_pretrained(f"{run_dir}/final")
    data_args = argparse.Namespace(eval_split="eval", max_eval_samples=None)
    clips = pretrain_vatt.load_eval_clips(data_args, data_dir)
    embeddings = pretrain_vatt.embed_clips(model, processor, clips, batch_size=128)
    half = len(clips) // 2
    scores: dict[str, dict[str, float]] = {}
    for space, values in embeddings.items():
        features = values.numpy()
        scores[space] = {}
        for attribute, names in VALUES.items():
            labels = np.array([names.index(clip[attribute]) for clip in clips])
            present = [k for k in range(len(names)) if (labels[:half] == k).any()]
            centroids = np.stack([features[:half][labels[:half] == k].mean(0) for k in present])
            predicted = np.array(present)[(features[half:] @ centroids.T).argmax(1)]
            scores[space][attribute] = float((predicted == labels[half:]).mean())
    return scores


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
    args = parser.parse_args(argv)
    if args.command == "embeddings":
        print("| space | " + " | ".join(VALUES) + " |\n|---|---|---|---|---|")
        for space, row in probe_embeddings(args.run_dir, args.data_dir).items():
            print(f"| {space} | " + " | ".join(f"{row[name]:.2f}" for name in VALUES) + " |")
    else:
        accuracy = probe_supervised(args.attribute, args.steps, args.image_size, args.num_frames, args.seed)
        chance = 1 / len(VALUES[args.attribute])
        print(f"{args.attribute}: held-out accuracy {accuracy:.3f} (chance {chance:.3f}) after {args.steps} steps")


if __name__ == "__main__":
    main()
