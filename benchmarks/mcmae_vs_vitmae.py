"""Pretraining speed and size of MCMAE (ConvMAE) against transformers' ViTMAEForPreTraining, in one process.

Comparable sizes follow the paper's pairing (ConvMAE-B against MAE's ViT-B/16), as `matching_vitmae_config` builds
it: the ViTMAE encoder takes the width, heads and MLP ratio of MCMAE's transformer stage and 12 blocks where MCMAE has
11 (its conv stages, 2 + 2 blocks, stand in for the 12th block and the patch embedding), which gives both encoders
about the same parameter count; both get the same MAE decoder, token stride, mask ratio, `norm_pix_loss` and
attention implementation (SDPA).

    --size small   mcmae-small (widths 128/256/384, depths 2/2/11, 6 heads)  vs  ViT-S/16 MAE (384 wide, 12 blocks)
    --size base    mcmae-base  (widths 256/384/768, depths 2/2/11, 12 heads) vs  ViT-B/16 MAE (768 wide, 12 blocks)
    --size tiny    mcmae-tiny  (32x32 images, token stride 8)                vs  a ViTMAE of its stage-3 shape, 3 blocks
    (decoder: 512 wide, 8 blocks for small and base, the tiny preset's for tiny)

Both models get the same images and the same `noise`, so they mask the same patches (ViTMAE's CLS token is never
masked; MCMAE has none). MCMAE's conv stages run on the full stride-4 / stride-8 grids (masked convolution zeroes the
masked positions, it does not drop them), which is where its extra cost comes from.

    python benchmarks/mcmae_vs_vitmae.py --size small --batch-size 8               # CPU
    python benchmarks/mcmae_vs_vitmae.py --size base --device cuda --dtype bfloat16 --batch-size 64

Prints parameter counts (the whole pretraining model, and the encoder `.mcmae` / `.vit`, i.e. without MCMAE's fusion
convs and encoder norm), the median time of a pretraining step (forward + loss + backward; no optimizer) of each model
over `--repeats` (the two models take turns, `benchmarks/timing.py`), and the MCMAE / ViTMAE step-time ratio.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import ViTMAEForPreTraining

from hfvision.models.mcmae import McMaeConfig, McMaeForPreTraining, matching_vitmae_config

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/timing.py, also when loaded by path
from timing import timed

SIZES = {"tiny": "mcmae-tiny", "small": "mcmae-small", "base": "mcmae-base"}


def build(size: str, image_size: int | None, mask_ratio: float) -> tuple[McMaeForPreTraining, ViTMAEForPreTraining]:
    """MCMAE of the `size` preset and the matching ViTMAE (see the module docstring), both `image_size` pixels."""
    overrides = {"mask_ratio": mask_ratio, "norm_pix_loss": True}
    if image_size is not None:
        overrides["image_size"] = image_size
    mcmae_config = McMaeConfig.from_preset(SIZES[size], **overrides)
    vitmae_config = matching_vitmae_config(mcmae_config)
    return (
        McMaeForPreTraining._from_config(mcmae_config, attn_implementation="sdpa"),
        ViTMAEForPreTraining._from_config(vitmae_config, attn_implementation="sdpa"),
    )


def num_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--image-size", type=int, default=None, help="Default: the preset's (224; 32 for tiny).")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="autocast")
    args = parser.parse_args()

    torch.manual_seed(0)
    device, dtype = args.device, getattr(torch, args.dtype)
    mcmae, vitmae = (model.to(device).train() for model in build(args.size, args.image_size, args.mask_ratio))
    image_size, patch = mcmae.config.image_size, mcmae.config.patch_size
    pixel_values = torch.randn(args.batch_size, 3, image_size, image_size, device=device)  # (B, 3, H, W)
    noise = torch.rand(args.batch_size, (image_size // patch) ** 2, device=device)  # (B, N): same mask for both
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)

    def pretraining_step(model: nn.Module) -> Callable[[], None]:
        def step() -> None:
            model.zero_grad(set_to_none=True)
            with autocast:
                loss = model(pixel_values=pixel_values, noise=noise).loss
            loss.backward()

        return step

    with torch.no_grad():  # same patches masked in both models
        assert torch.equal(mcmae(pixel_values=pixel_values, noise=noise).mask, vitmae(pixel_values, noise=noise).mask)
    models = {"MCMAE": (mcmae, mcmae.mcmae), "ViTMAE": (vitmae, vitmae.vit)}  # name -> (model, encoder)
    times = timed({name: pretraining_step(model) for name, (model, _) in models.items()}, args.repeats, device)

    print(
        f"size={args.size} image={image_size}/{patch} batch={args.batch_size} mask_ratio={args.mask_ratio} "
        f"device={device} dtype={args.dtype} threads={torch.get_num_threads()} repeats={args.repeats}"
    )
    print(f"{'':10s} {'params (M)':>11s} {'encoder (M)':>12s} {'step ms':>9s}")
    for name, (model, encoder) in models.items():
        millions = num_parameters(model) / 1e6, num_parameters(encoder) / 1e6
        print(f"{name:10s} {millions[0]:11.2f} {millions[1]:12.2f} {times[name]:9.1f}")
    print(f"step-time ratio MCMAE / ViTMAE: {times['MCMAE'] / times['ViTMAE']:.2f}")


if __name__ == "__main__":
    main()
