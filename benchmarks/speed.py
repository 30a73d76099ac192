"""Every hfvision model against its closest transformers / diffusers peer, side by side in one process (issue #19).

For each pair, both sides get the same inputs, batch, device and dtype (`--dtype bfloat16` runs both under autocast):

- `lps`: `LpsResNetForImageClassification` (lps-resnet18) vs `ResNetForImageClassification` in the ResNet-18 shape;
- `lps-stride`: the same class with `downsample="stride"` vs the same ResNet-18;
- `mcmae-s`, `mcmae-b`: `McMaeForPreTraining` (mcmae-small / -base) pretraining step vs `ViTMAEForPreTraining` of
  `matching_vitmae_config` (the paper's pairing);
- `pyramidclip`: `PyramidClipModel` image + text features vs `CLIPModel` of the same sizes (as
  `pyramidclip_vs_clip.py --size small`);
- `vatt`: `VattForVideoClassification` (the video tower) vs `VivitForVideoClassification` of the same sizes;
- `scaffold`: `ScaffoldVitForImageClassification` vs `ViTForImageClassification` of the same sizes;
- `score-sde`: `sample_score_sde` (VE ancestral) vs diffusers' `ScoreSdeVeScheduler` loop, on one network.

A pretraining step is forward + loss + backward (no optimizer). FLOPs come from torch's `FlopCounterMode` on one
call of each side (a multiply-add counts 2; backward included for steps). Times are medians over `--repeats` rounds in
which the two sides take turns (after a warm-up each), so a busy machine slows both alike. Ratios are ours / peer:
`time ratio`, `FLOP ratio` and `time/FLOP ratio` = time ratio / FLOP ratio (how efficiently each FLOP runs).

Goals (issue #19): time/FLOP ratio <= 1.2 for every row, and in time <= 1.2 for `lps-stride` and <= 1.1 for
`pyramidclip`. A row that misses its goal gets the profile line of the op that takes most of our time
(`torch.profiler`, self CPU/CUDA time), beside the same op's share in the peer.

    OMP_NUM_THREADS=1 python benchmarks/speed.py --output docs/speed.md      # CPU, batch 2, a few minutes
    python benchmarks/speed.py --rows lps,lps-stride --batch-size 8 --repeats 10
    python benchmarks/speed.py --device cuda --dtype bfloat16 --batch-size 32 --output docs/speed_cuda.md
    python benchmarks/speed.py --tiny --repeats 1                             # seconds: tiny configs, smoke run
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    CLIPConfig,
    CLIPModel,
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTMAEForPreTraining,
    VivitConfig,
    VivitForVideoClassification,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/timing.py, also when loaded by path
from timing import timed

from hfvision.models.lps import LpsResNetConfig, LpsResNetForImageClassification
from hfvision.models.mcmae import McMaeConfig, McMaeForPreTraining, matching_vitmae_config
from hfvision.models.pyramidclip import PyramidClipConfig, PyramidClipModel
from hfvision.models.scaffold import ScaffoldVitConfig, ScaffoldVitForImageClassification
from hfvision.models.score_sde import ScoreSdeConfig, ScoreSdeModel, ScoreSdeVeAncestralScheduler, sample_score_sde
from hfvision.models.vatt import VattConfig, VattForVideoClassification

TIME_PER_FLOP_GOAL = 1.2
TIME_GOALS = {"lps-stride": 1.2, "pyramidclip": 1.1}  # rows whose time ratio itself has a goal


@dataclass
class Pair:
    """One row: two zero-argument calls to compare and what they are."""

    ours_name: str
    peer_name: str
    task: str
    ours: Callable[[], object]
    peer: Callable[[], object]
    ours_parameters: int
    peer_parameters: int


@dataclass
class Setup:
    batch_size: int
    device: str
    autocast: torch.autocast
    tiny: bool


def num_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def inference(model: nn.Module, setup: Setup, **inputs: torch.Tensor) -> Callable[[], object]:
    model.eval().to(setup.device)

    def run() -> object:
        with torch.inference_mode(), setup.autocast:
            return model(**inputs)

    return run


def pretraining_step(model: nn.Module, setup: Setup, **inputs: torch.Tensor) -> Callable[[], None]:
    model.train().to(setup.device)

    def run() -> None:
        model.zero_grad(set_to_none=True)
        with setup.autocast:
            loss = model(**inputs).loss
        loss.backward()

    return run


def resnet18_peer(num_labels: int, tiny: bool) -> ResNetForImageClassification:
    """transformers' ResNet in the ResNet-18 shape (the tiny version: the tiny LPS preset's widths and depths)."""
    if tiny:
        sizes = {"embedding_size": 8, "hidden_sizes": [8, 16, 16], "depths": [1, 1, 1]}
    else:
        sizes = {"embedding_size": 64, "hidden_sizes": [64, 128, 256, 512], "depths": [2, 2, 2, 2]}
    return ResNetForImageClassification(ResNetConfig(**sizes, layer_type="basic", num_labels=num_labels))


def lps_pair(setup: Setup, downsample: str) -> Pair:
    image_size = 32 if setup.tiny else 224
    preset = {"stem": "imagenet", "embedding_size": 8, "hidden_sizes": [8, 16, 16], "depths": [1, 1, 1]}
    config = LpsResNetConfig.from_preset(
        "lps-resnet18", downsample=downsample, num_labels=1000, **(preset if setup.tiny else {})
    )
    ours, peer = LpsResNetForImageClassification(config), resnet18_peer(1000, setup.tiny)
    pixel_values = torch.randn(setup.batch_size, 3, image_size, image_size, device=setup.device)
    return Pair(
        f'LPS-ResNet-18 (`downsample="{downsample}"`)',
        "transformers ResNet-18",
        f"inference {image_size}px",
        inference(ours, setup, pixel_values=pixel_values),
        inference(peer, setup, pixel_values=pixel_values),
        num_parameters(ours),
        num_parameters(peer),
    )


def mcmae_pair(setup: Setup, size: str) -> Pair:
    preset = "mcmae-tiny" if setup.tiny else f"mcmae-{size}"
    config = McMaeConfig.from_preset(preset, mask_ratio=0.75, norm_pix_loss=True)
    ours = McMaeForPreTraining._from_config(config, attn_implementation="sdpa")
    peer = ViTMAEForPreTraining._from_config(matching_vitmae_config(config), attn_implementation="sdpa")
    image_size, patch_size = config.image_size, config.patch_size
    pixel_values = torch.randn(setup.batch_size, 3, image_size, image_size, device=setup.device)
    noise = torch.rand(setup.batch_size, (image_size // patch_size) ** 2, device=setup.device)  # same mask for both
    return Pair(
        f"MCMAE-{size[0].upper()} (`{preset}`)",
        f"ViTMAE-{size[0].upper()}",
        f"pretraining step {image_size}px",
        pretraining_step(ours, setup, pixel_values=pixel_values, noise=noise),
        pretraining_step(peer, setup, pixel_values=pixel_values, noise=noise),
        num_parameters(ours),
        num_parameters(peer),
    )


def pyramidclip_pair(setup: Setup) -> Pair:
    """The sizes of `benchmarks/pyramidclip_vs_clip.py --size small` (ViT-B/32 grid, 6 x 256 towers)."""
    image_size, patch_size = (32, 16) if setup.tiny else (224, 32)
    width, layers = (32, 2) if setup.tiny else (256, 6)
    vision = {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": layers}
    vision |= {"num_attention_heads": 4, "image_size": image_size, "patch_size": patch_size}
    text = {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": layers, "num_attention_heads": 4}
    leff = layers - layers // 3
    ours = PyramidClipModel(
        PyramidClipConfig(
            vision_config={**vision, "num_leff_layers": leff, "num_roi_layers": layers - leff}, text_config=text
        )
    )
    peer = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=512))
    for model in (ours, peer):
        model.set_attn_implementation("sdpa")
    pixel_values = torch.randn(setup.batch_size, 3, image_size, image_size, device=setup.device)
    input_ids = torch.randint(1, 49000, (setup.batch_size, 77), device=setup.device)

    def features(model: nn.Module) -> Callable[[], object]:
        model.eval().to(setup.device)

        def run() -> object:
            with torch.inference_mode(), setup.autocast:
                return model.get_image_features(pixel_values=pixel_values), model.get_text_features(input_ids)

        return run

    return Pair(
        "PyramidCLIP image + text features",
        "CLIPModel",
        f"inference {image_size}px/{patch_size}, 77 tokens",
        features(ours),
        features(peer),
        num_parameters(ours),
        num_parameters(peer),
    )


def vatt_pair(setup: Setup) -> Pair:
    """VATT's video tower (Small width, 16 frames of 112 px, tubelets 4 x 16 x 16: 196 tokens) against ViViT."""
    if setup.tiny:
        video = {"num_frames": 4, "image_size": 16, "tubelet_size": [2, 8, 8], "hidden_size": 32}
        video |= {"intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    else:
        video = {"num_frames": 16, "image_size": 112, "tubelet_size": [4, 16, 16], "hidden_size": 512}
        video |= {"intermediate_size": 2048, "num_hidden_layers": 6, "num_attention_heads": 8}
    ours = VattForVideoClassification._from_config(
        VattConfig.from_preset("vatt-tiny" if setup.tiny else "vatt-bbs", video_config=video, num_labels=400),
        attn_implementation="sdpa",
    )
    peer = VivitForVideoClassification._from_config(
        VivitConfig(**video, layer_norm_eps=1e-6, num_labels=400), attn_implementation="sdpa"
    )
    frames = video["num_frames"]
    clips = torch.rand(setup.batch_size, frames, 3, video["image_size"], video["image_size"], device=setup.device)
    clips = clips * 2 - 1  # VATT's [-1, 1] pixels; ViViT takes the same tensor
    return Pair(
        "VATT video tower + classifier",
        "VivitForVideoClassification",
        f"inference {frames}x{video['image_size']}px",
        inference(ours, setup, pixel_values_videos=clips),
        inference(peer, setup, pixel_values=clips),
        num_parameters(ours),
        num_parameters(peer),
    )


def scaffold_pair(setup: Setup) -> Pair:
    preset = "scaffold-vit-digits" if setup.tiny else "scaffold-vit-base"
    config = ScaffoldVitConfig.from_preset(preset, num_labels=10)
    ours = ScaffoldVitForImageClassification._from_config(config, attn_implementation="sdpa")
    sizes = ("image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers")
    sizes += ("num_attention_heads", "intermediate_size", "layer_norm_eps")
    peer = ViTForImageClassification._from_config(
        ViTConfig(**{name: getattr(config, name) for name in sizes}, num_labels=10), attn_implementation="sdpa"
    )
    shape = (setup.batch_size, config.num_channels, config.image_size, config.image_size)
    pixel_values = torch.randn(shape, device=setup.device)
    return Pair(
        f"Scaffold ViT (`{preset}`)",
        "ViTForImageClassification",
        f"inference {config.image_size}px",
        inference(ours, setup, pixel_values=pixel_values),
        inference(peer, setup, pixel_values=pixel_values),
        num_parameters(ours),
        num_parameters(peer),
    )


def score_sde_pair(setup: Setup) -> Pair:
    """Our VE ancestral sampler against diffusers' `ScoreSdeVeScheduler` loop, on one network (same trajectory)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from score_sde_speed import diffusers_loop  # the loop of diffusers' ScoreSdeVePipeline

    preset, steps, batch = ("score-sde-tiny", 5, 8) if setup.tiny else ("score-sde-circle", 100, 1000)
    model = ScoreSdeModel(ScoreSdeConfig.from_preset(preset)).eval().to(setup.device)
    prior = torch.randn(batch, *model.config.data_shape, generator=torch.Generator().manual_seed(0))
    prior = prior.to(setup.device)
    scheduler = ScoreSdeVeAncestralScheduler.from_config(model.config, steps)

    def ours() -> object:
        with torch.inference_mode(), setup.autocast:
            generator = torch.Generator(device=setup.device).manual_seed(1)
            sample = prior * scheduler.schedule.prior_std
            return sample_score_sde(model, scheduler, sample=sample, generator=generator, device=setup.device)

    def peer() -> object:
        with torch.inference_mode(), setup.autocast:
            return diffusers_loop(model, prior, steps, 0, 0.16, seed=1)

    parameters = num_parameters(model)
    return Pair(
        f"Score SDE sampler (`{preset}`)",
        "diffusers ScoreSdeVeScheduler",
        f"sampling, {batch} points, {steps} steps",
        ours,
        peer,
        parameters,
        parameters,
    )


ROWS: dict[str, Callable[[Setup], Pair]] = {
    "lps": lambda setup: lps_pair(setup, "lps"),
    "lps-stride": lambda setup: lps_pair(setup, "stride"),
    "mcmae-s": lambda setup: mcmae_pair(setup, "small"),
    "mcmae-b": lambda setup: mcmae_pair(setup, "base"),
    "pyramidclip": pyramidclip_pair,
    "vatt": vatt_pair,
    "scaffold": scaffold_pair,
    "score-sde": score_sde_pair,
}


def count_flops(run: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def top_op(run: Callable[[], object], device: str) -> dict[str, tuple[float, float, int]]:
    """Per op name: (self time in ms, share of the total self time, calls), from one profiled call."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        run()
    events = profile.key_averages()
    attribute = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    total = sum(getattr(event, attribute) for event in events) or 1.0
    return {
        event.key: (getattr(event, attribute) / 1000, getattr(event, attribute) / total, event.count)
        for event in events
    }


def measure(key: str, pair: Pair, repeats: int, device: str) -> dict[str, object]:
    """FLOPs, parameters, times and ratios of one pair; the profile line behind a missed goal."""
    flops = {"ours": count_flops(pair.ours), "peer": count_flops(pair.peer)}
    milliseconds = timed({"ours": pair.ours, "peer": pair.peer}, repeats, device)
    time_ratio = milliseconds["ours"] / milliseconds["peer"]
    flop_ratio = flops["ours"] / flops["peer"]
    per_flop = time_ratio / flop_ratio
    met = per_flop <= TIME_PER_FLOP_GOAL and time_ratio <= TIME_GOALS.get(key, float("inf"))
    row = {
        "key": key,
        "pair": pair,
        "flops": flops,
        "ms": milliseconds,
        "time_ratio": time_ratio,
        "flop_ratio": flop_ratio,
        "time_per_flop_ratio": per_flop,
        "met": met,
        "profile": None,
    }
    if not met:
        ours, peer = top_op(pair.ours, device), top_op(pair.peer, device)
        name, (self_ms, share, calls) = max(ours.items(), key=lambda item: item[1][0])
        peer_ms, peer_share, peer_calls = peer.get(name, (0.0, 0.0, 0))
        ops_ms = {side: sum(ms for ms, _, _ in ops.values()) for side, ops in (("ours", ours), ("peer", peer))}
        row["profile"] = (
            f"`{name}`: {self_ms:.1f} ms self time, {share:.0%} of ours ({calls} calls) vs {peer_ms:.1f} ms, "
            f"{peer_share:.0%} of the peer's ({peer_calls} calls); all ops {ops_ms['ours']:.1f} ms vs "
            f"{ops_ms['peer']:.1f} ms (the rest of the wall time is Python and dispatch)"
        )
    return row


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {torch.get_num_threads()} threads"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def goal_text(key: str) -> str:
    goal = f"time/FLOP <= {TIME_PER_FLOP_GOAL}"
    return goal + (f", time <= {TIME_GOALS[key]}" if key in TIME_GOALS else "")


def markdown(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    lines = [
        f"Device: {device_name(args.device)}; dtype {args.dtype}; batch {args.batch_size}; median of "
        f"{args.repeats} rounds; torch {torch.__version__}.",
        f"Command: `python benchmarks/speed.py {' '.join(args.argv)}`".rstrip() + ".",
        "",
        "| ours | peer | measured | params ours / peer (M) | GFLOPs ours / peer | ms ours / peer | time ratio | "
        "FLOP ratio | time/FLOP ratio | goal | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        pair: Pair = row["pair"]
        lines.append(
            f"| {pair.ours_name} | {pair.peer_name} | {pair.task} | "
            f"{pair.ours_parameters / 1e6:.2f} / {pair.peer_parameters / 1e6:.2f} | "
            f"{row['flops']['ours'] / 1e9:.2f} / {row['flops']['peer'] / 1e9:.2f} | "
            f"{row['ms']['ours']:.1f} / {row['ms']['peer']:.1f} | {row['time_ratio']:.2f} | {row['flop_ratio']:.2f} | "
            f"{row['time_per_flop_ratio']:.2f} | {goal_text(row['key'])} | {'yes' if row['met'] else 'no'} |"
        )
    missed = [row for row in rows if row["profile"]]
    if missed:
        lines += ["", "Rows that miss the goal, with the op that takes most of our time (one profiled call):", ""]
        lines += [f"- {row['pair'].ours_name}: {row['profile']}" for row in missed]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Measure the chosen rows; print the markdown table (and write it to `--output`).

    Returns:
        One dict per row: `key`, `flops`, `ms` (each `{"ours", "peer"}`), `time_ratio`, `flop_ratio`,
        `time_per_flop_ratio`, `met`, `profile` (the profile line of a missed goal, else `None`) and `pair`.
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"Comma-separated subset of {', '.join(ROWS)}.")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="autocast")
    parser.add_argument("--tiny", action="store_true", help="Tiny configs and inputs (a smoke run in seconds).")
    parser.add_argument("--output", type=Path, default=None, help="Also write the markdown table here.")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.argv = argv
    keys = [key.strip() for key in args.rows.split(",") if key.strip()]
    unknown = sorted(set(keys) - set(ROWS))
    if unknown or not keys:
        parser.error(f"--rows: unknown {unknown}; choose from {', '.join(ROWS)}")
    if args.batch_size < 1 or args.repeats < 1:
        parser.error("--batch-size and --repeats must be >= 1")

    dtype = getattr(torch, args.dtype)
    autocast = torch.autocast(device_type=args.device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)
    setup = Setup(args.batch_size, args.device, autocast, args.tiny)
    rows = []
    for key in keys:
        torch.manual_seed(0)
        rows.append(measure(key, ROWS[key](setup), args.repeats, args.device))
        print(f"[{key}] time ratio {rows[-1]['time_ratio']:.2f}, FLOP ratio {rows[-1]['flop_ratio']:.2f}", flush=True)
    table = markdown(rows, args)
    print(table)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table)
    return rows


if __name__ == "__main__":
    main()
