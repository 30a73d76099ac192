"""Inference time of LPS-ResNet-18 against the same network with plain striding and against reference ResNet-18s.

All models run side by side in one process on the same inputs, in eval mode under `torch.inference_mode`:

- `lps`: `LpsResNetConfig.from_preset("lps-resnet18")` (circular padding, learned polyphase selection);
- `stride`: the same class with `downsample="stride"` (component 0 of every polyphase split), which strides its
  convolutions and max-pool itself (the official code computes them at stride 1 and subsamples: the same samples);
- `transformers`: transformers' `ResNetForImageClassification` in its ResNet-18 shape (true strided convolutions);
- `timm`: timm's `resnet18`, when `import timm` works (timm needs torchvision; otherwise it is reported unavailable).

    OMP_NUM_THREADS=1 python benchmarks/lps_speed.py                        # batch 8, 224x224, CPU
    python benchmarks/lps_speed.py --device cuda --batch-size 64 --repeats 20

Prints milliseconds per forward (median of `--repeats` rounds in which the models take turns, after one warm-up)
and each model's time relative to LPS.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import ResNetConfig, ResNetForImageClassification

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/timing.py, also when loaded by path
from timing import timed

from hfvision.models.lps import LpsResNetConfig, LpsResNetForImageClassification


def build_models(preset: str, num_labels: int) -> dict[str, nn.Module]:
    """The models to compare, by name; timm's only if timm imports."""
    models: dict[str, nn.Module] = {
        downsample: LpsResNetForImageClassification(
            LpsResNetConfig.from_preset(preset, downsample=downsample, num_labels=num_labels)
        )
        for downsample in ("lps", "stride")
    }
    models["transformers"] = ResNetForImageClassification(
        ResNetConfig(
            embedding_size=64,
            hidden_sizes=[64, 128, 256, 512],
            depths=[2, 2, 2, 2],
            layer_type="basic",
            num_labels=num_labels,
        )
    )
    try:
        import timm
    except ImportError as error:  # timm imports torchvision, which is not a dependency
        print(f"timm unavailable ({error}); comparing without it")
    else:
        models["timm"] = timm.create_model("resnet18", pretrained=False, num_classes=num_labels)
    return models


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Time every model; print a markdown table.

    Returns:
        Per model name, `ms` (median milliseconds per forward), `relative_to_lps` and `parameters` (millions).
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="lps-resnet18", help="LpsResNetConfig preset of the LPS/stride models.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224, help="A multiple of the preset's total stride.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    models = {name: model.eval().to(args.device) for name, model in build_models(args.preset, 1000).items()}
    pixel_values = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=args.device)

    def forward(model: nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return model(pixel_values)

        return run

    milliseconds = timed({name: forward(model) for name, model in models.items()}, args.repeats, args.device)
    results = {
        name: {
            "ms": milliseconds[name],
            "relative_to_lps": milliseconds[name] / milliseconds["lps"],
            "parameters": sum(parameter.numel() for parameter in model.parameters()) / 1e6,
        }
        for name, model in models.items()
    }
    threads = torch.get_num_threads() if args.device == "cpu" else "-"
    size = f"{args.image_size}x{args.image_size}"
    print(f"{args.preset}, batch {args.batch_size}, {size}, {args.device}, {threads} threads")
    print("| model | params (M) | ms / forward | time / LPS time |\n|---|---|---|---|")
    for name, row in results.items():
        print(f"| {name} | {row['parameters']:.2f} | {row['ms']:.1f} | {row['relative_to_lps']:.2f} |")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
