"""Speed of PyramidCLIP against its closest existing implementation, transformers' CLIPModel, in one process.

Both models get the same widths, depths, heads, patch size and inputs; PyramidCLIP differs by its LeFF blocks
(BatchNorm + depthwise conv on patch tokens), max-pooled text features and, for the training step, the pyramid
objective (two views, three texts and the ROI branch, i.e. about 3x the encoder work of a CLIP step). Both use SDPA.

    python benchmarks/pyramidclip_vs_clip.py                     # small size, CPU
    python benchmarks/pyramidclip_vs_clip.py --size base --device cuda --dtype bfloat16

Prints milliseconds per call (median of `--repeats`) and the PyramidCLIP / CLIP ratio for inference (image + text
features) and for a training step (forward + backward of each model's own loss).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import CLIPConfig, CLIPModel

from hfvision.models.pyramidclip import PyramidClipConfig, PyramidClipModel

SIZES = {
    "small": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 6, "num_attention_heads": 4},
    "base": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
}


def build(size: str, image_size: int, patch_size: int) -> tuple[PyramidClipModel, CLIPModel]:
    vision = {**SIZES[size], "image_size": image_size, "patch_size": patch_size}
    text = {"hidden_size": 512 if size == "base" else 256, "num_hidden_layers": vision["num_hidden_layers"]}
    text |= {"intermediate_size": 4 * text["hidden_size"], "num_attention_heads": 8 if size == "base" else 4}
    leff = 9 if size == "base" else 4
    pyramid = PyramidClipModel(
        PyramidClipConfig(
            vision_config={**vision, "num_leff_layers": leff, "num_roi_layers": vision["num_hidden_layers"] - leff},
            text_config=text,
        )
    )
    clip = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=512))
    return pyramid, clip


def timed(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()

    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    pyramid, clip = (model.to(args.device) for model in build(args.size, args.image_size, args.patch_size))
    batch, device = args.batch_size, args.device
    pixels = torch.randn(batch, 3, args.image_size, args.image_size, device=device)
    input_ids = torch.randint(1, 49000, (batch, 77), device=device)
    roi = torch.randn(batch, 10, pyramid.config.vision_config.roi_feature_dim, device=device)
    autocast = torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32)

    def infer(model):
        def run():
            with torch.no_grad(), autocast:
                model.get_image_features(pixel_values=pixels)
                model.get_text_features(input_ids=input_ids)

        return run

    def train_pyramid():
        with autocast:
            loss = pyramid(
                input_ids=input_ids, pixel_values=pixels, pixel_values_local=pixels, summary_input_ids=input_ids,
                attribute_input_ids=input_ids, roi_features=roi, return_loss=True,
            ).loss  # fmt: skip
        loss.backward()

    def train_clip():
        with autocast:
            loss = clip(input_ids=input_ids, pixel_values=pixels, return_loss=True).loss
        loss.backward()

    pyramid.eval(), clip.eval()
    rows = [("inference (image + text features)", timed(infer(pyramid), args.repeats, device),
             timed(infer(clip), args.repeats, device))]  # fmt: skip
    pyramid.train(), clip.train()
    rows.append(("training step (own loss, fwd + bwd)", timed(train_pyramid, args.repeats, device),
                 timed(train_clip, args.repeats, device)))  # fmt: skip

    print(
        f"size={args.size} batch={batch} image={args.image_size}/{args.patch_size} device={device} dtype={args.dtype}"
    )
    print(f"{'':38s} {'PyramidCLIP ms':>15s} {'CLIP ms':>10s} {'ratio':>7s}")
    for name, ours, theirs in rows:
        print(f"{name:38s} {ours:15.1f} {theirs:10.1f} {ours / theirs:7.2f}")


if __name__ == "__main__":
    main()
