"""Training-step time of VATT's video tower against transformers' `VivitModel` at the same depth, width and tokens.

Both run side by side in one process on the same clips, in training mode, each with a linear classifier on its first
token (VATT's aggregation token, ViViT's CLS token) and a cross-entropy loss; one step is forward + backward:

- `vatt`: `VattForVideoClassification` (Conv3d tubelets, factorised time + height + width positions with LayerNorm,
  pre-norm transformer, attention through transformers' attention interface);
- `vivit`: `VivitForVideoClassification` (transformers' ViViT: Conv3d tubelets, one learned position table);
- `vatt+droptoken`: the same VATT video tower as in pretraining (`VattModel.get_video_features` with DropToken at
  `--droptoken_rate`, the paper's 50% by default), for the saving DropToken buys on top.

Dropout is 0 in both models (ViViT's default; VATT's 0.1 is turned off) so they do the same work. Both use the same
attention implementation (`--attn_implementation`, SDPA by default). The default size is the paper's Small transformer
(6 layers, width 512, MLP 2048, 8 heads) on 16 frames of 112x112 cut into 4x16x16 tubelets (196 tokens + 1), batch 2,
to fit a CPU; `--size base --num_frames 32 --image_size 224` is the paper's video Base on its 1568 tokens.

    OMP_NUM_THREADS=1 python benchmarks/vatt_speed.py
    python benchmarks/vatt_speed.py --size base --num_frames 32 --image_size 224 --batch_size 8 --device cuda

Prints milliseconds per step (median of `--repeats` rounds in which the models take turns, after one warm-up step
each) and each model's time relative to ViViT.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import VivitConfig, VivitForVideoClassification

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/timing.py, also when loaded by path
from timing import timed

from hfvision.models.vatt import VattConfig, VattForVideoClassification, VattModel
from hfvision.models.vatt.configuration_vatt import TRANSFORMER_SIZES

NUM_LABELS = 10


def build_models(args: argparse.Namespace) -> dict[str, nn.Module]:
    """VATT's video classifier, its pretraining video tower and ViViT, all of one size and attention implementation."""
    sizes = TRANSFORMER_SIZES[args.size]
    tubelet = [4, 16, 16]
    video = {
        **sizes,
        "num_frames": args.num_frames,
        "image_size": args.image_size,
        "tubelet_size": tubelet,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    attn = args.attn_implementation
    vatt_config = VattConfig(video_config=video, num_labels=NUM_LABELS, classifier_dropout=0.0)
    vatt_config.droptoken_rate = args.droptoken_rate
    vivit_config = VivitConfig(
        **sizes,
        num_frames=args.num_frames,
        image_size=args.image_size,
        tubelet_size=tubelet,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=NUM_LABELS,
    )
    return {
        "vatt": VattForVideoClassification._from_config(vatt_config, attn_implementation=attn),
        "vivit": VivitForVideoClassification._from_config(vivit_config, attn_implementation=attn),
        "vatt+droptoken": VattModel._from_config(vatt_config, attn_implementation=attn),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Time one training step of each model; print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(TRANSFORMER_SIZES), default="small")
    parser.add_argument("--num_frames", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=112)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--droptoken_rate", type=float, default=0.5)
    parser.add_argument("--attn_implementation", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batch_size < 2:
        parser.error("--batch_size must be >= 2: the DropToken row runs the FAC heads (BatchNorm in training mode)")

    torch.manual_seed(args.seed)
    models = {name: model.to(args.device).train() for name, model in build_models(args).items()}
    clips = torch.rand(args.batch_size, args.num_frames, 3, args.image_size, args.image_size, device=args.device)
    clips = clips * 2 - 1  # VATT's [-1, 1]
    labels = torch.randint(0, NUM_LABELS, (args.batch_size,), device=args.device)

    def classifier_step(model: nn.Module, input_name: str) -> Callable[[], None]:
        def step() -> None:
            model.zero_grad(set_to_none=True)
            model(**{input_name: clips}, labels=labels).loss.backward()

        return step

    def droptoken_step() -> None:
        model = models["vatt+droptoken"]
        model.zero_grad(set_to_none=True)
        model.get_video_features(clips, droptoken=True).pooler_output.square().mean().backward()

    steps = {
        "vatt": classifier_step(models["vatt"], "pixel_values_videos"),
        "vivit": classifier_step(models["vivit"], "pixel_values"),
        "vatt+droptoken": droptoken_step,
    }
    milliseconds = timed(steps, args.repeats, args.device)
    tokens = models["vatt"].config.video_config.num_tokens
    kept = int(tokens * (1 - args.droptoken_rate) + 1e-6)
    print(
        f"forward+backward, {args.size} ({TRANSFORMER_SIZES[args.size]}), {args.batch_size} clips of "
        f"{args.num_frames}x{args.image_size}x{args.image_size}, tubelets 4x16x16 -> {tokens} tokens + 1, "
        f"{args.attn_implementation} attention, {args.device}, median of {args.repeats}"
    )
    print("| model | tokens | ms / step | time vs ViViT |")
    print("|---|---|---|---|")
    for name, value in milliseconds.items():
        count = f"{kept} + 1" if name == "vatt+droptoken" else f"{tokens} + 1"
        print(f"| {name} | {count} | {value:.1f} | {value / milliseconds['vivit']:.2f}x |")
    return milliseconds


if __name__ == "__main__":
    main()
