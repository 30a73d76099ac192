"""`make demo DEMO=lps`: Fashion-MNIST -> LPS training with the generic Trainer script -> shift consistency and plot ->
model card -> publish -> load by repo id.

1. start the local Hub (the embedded default; unset variables reach the real Hub instead);
2. build LPS-ResNet-18 (CIFAR stem, stage widths `--width` x [1, 2, 4, 8], circular padding) and, as the baseline,
   the same network with plain stride-2 subsampling, each saved with a 32x32 `LpsImageProcessor`;
3. train both for the same budget with `accelerate launch training/finetune_image_classification.py
   training/configs/finetune_lps_fashion_mnist.yaml` (the two runs side by side, one core each); the script anneals
   LPS's Gumbel temperature with `GumbelTemperatureCallback` (the official CIFAR-10 step decay, compressed to the
   run: x0.85 every `max_steps / 25` steps, floor 0.025);
4. evaluate accuracy and circular / standard shift consistency (`shift_consistency` metric) on Fashion-MNIST test
   images under shifts (o, o), o = 0..8, and draw consistency vs shift for both networks (`lps_shift.png`, in the
   LPS checkpoint's folder with `training_curves.png`, so both are published with it);
5. render the model card from the measured numbers (`model_cards/lps.md`) into the LPS checkpoint;
6. publish it as `org/lps-resnet18-fashion-mnist`;
7. load it back by repo id with `AutoModelForImageClassification` and `pipeline("image-classification")` and print
   predictions for a few test images.

    python training/demo_lps.py [--output_dir runs/demo_lps] [--max_steps 200] [other fine-tuning flags]

Measured with the defaults: 4 min 19 s on 2 CPU cores shared with other jobs (4 min 7 s of CPU time in all); LPS
79.8% accuracy and 100% circular-shift consistency on 500 test images, the stride baseline 79.8% and 18.8%.
Deviations from the paper's training: 200 AdamW steps on Fashion-MNIST (resized to 32x32 RGB) instead of 250 epochs
of SGD on CIFAR-10, and the temperature schedule compressed to the run (25 decays in 200 steps).

The evaluation and the plot reuse `benchmarks/lps_shift.py` (which trains all four downsampling modes with its own
loop); the Hub client variables must be set before `huggingface_hub` is imported, so this file sets them first.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import yaml
from demo_common import REPO, accelerate_command, follow_training, plot_training, start_local_hub, step

CONFIG = REPO / "training" / "configs" / "finetune_lps_fashion_mnist.yaml"
METHODS = ("lps", "stride")  # the learned sampling and its plain-stride baseline


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The demo's own flags, and the rest (passed on to the fine-tuning script)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/demo_lps")
    parser.add_argument("--max_steps", type=int, default=200, help="optimizer steps of each training run")
    parser.add_argument("--train_samples", type=int, default=20000, help="Fashion-MNIST training images used")
    parser.add_argument("--eval_samples", type=int, default=500, help="test images for accuracy and consistency")
    parser.add_argument("--width", type=int, default=8, help="stem width; stages get width x [1, 2, 4, 8]")
    parser.add_argument("--max_offset", type=int, default=8, help="largest shift offset o; shifts are (o, o)")
    parser.add_argument("--repo_id", default="org/lps-resnet18-fashion-mnist")
    parser.add_argument("--num_examples", type=int, default=6, help="test images to classify at the end")
    args, training_flags = parser.parse_known_args(argv)
    for name in ("max_steps", "train_samples", "eval_samples", "width", "num_examples"):
        if getattr(args, name) < 1:
            raise ValueError(f"`--{name}` must be >= 1, got {getattr(args, name)}.")
    return args, training_flags


def load_benchmark() -> ModuleType:
    """`benchmarks/lps_shift.py` as a module (benchmarks are scripts, not a package): evaluation, table and plot."""
    spec = importlib.util.spec_from_file_location("lps_shift", REPO / "benchmarks" / "lps_shift.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def build_checkpoints(run_dir: Path, width: int, bench: ModuleType) -> dict[str, Path]:
    """Freshly initialised LPS and stride networks (same seed), each with its 32x32 image processor."""
    import torch

    from hfvision.data.fashion_mnist import FASHION_MNIST_CLASS_NAMES
    from hfvision.models.lps import LpsImageProcessor, LpsResNetConfig, LpsResNetForImageClassification

    id2label = dict(enumerate(FASHION_MNIST_CLASS_NAMES))
    paths = {}
    for method in METHODS:
        config = LpsResNetConfig.from_preset(
            "lps-resnet18-cifar",
            embedding_size=width,
            hidden_sizes=[width * 2**stage for stage in range(4)],
            downsample=method,
            id2label=id2label,
            label2id={name: index for index, name in id2label.items()},
        )
        # 28x28 -> 32x32, a multiple of the total stride (8), normalised with the Fashion-MNIST statistics that the
        # benchmark's evaluation applies after shifting
        processor = LpsImageProcessor(
            size={"height": 32, "width": 32},
            size_divisor=config.total_stride,
            image_mean=[bench.PIXEL_MEAN] * 3,
            image_std=[bench.PIXEL_STD] * 3,
        )
        paths[method] = run_dir / f"init_{method}"
        torch.manual_seed(0)
        LpsResNetForImageClassification(config).save_pretrained(paths[method])
        processor.save_pretrained(paths[method])
    return paths


def train(init: dict[str, Path], run_dir: Path, args: argparse.Namespace, training_flags: list[str]) -> dict[str, Path]:
    """Both fine-tuning runs at once, one process and one thread each (two cores); returns the trained folders."""
    common = [
        "--max_steps", str(args.max_steps), "--max_train_samples", str(args.train_samples),
        "--max_eval_samples", str(args.eval_samples),
        "--gumbel_tau_decay_steps", str(max(args.max_steps // 25, 1)),  # 25 decays, as in 250 official epochs
    ]  # fmt: skip
    trained = {method: run_dir / method for method in METHODS}
    processes = {}
    for method in METHODS:
        if (trained[method] / "eval_results.json").exists():
            print(f"   already trained: {trained[method]}", flush=True)
            continue
        launch_args = [str(CONFIG), "--model_name_or_path", str(init[method]), "--output_dir", str(trained[method])]
        log = open(run_dir / f"train_{method}.log", "w")  # noqa: SIM115  (closed once the process has ended)
        processes[method] = (
            subprocess.Popen(
                accelerate_command("finetune_image_classification.py", launch_args + common + training_flags),
                env={**os.environ, "OMP_NUM_THREADS": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
            ),
            log,
        )
        print(f"   {method}: training, log in {log.name}", flush=True)
    exit_codes = follow_training(
        {method: (process, Path(log.name)) for method, (process, log) in processes.items()}, args.max_steps
    )
    for method, (_, log) in processes.items():
        log.close()
        if exit_codes[method]:
            tail = Path(log.name).read_text()[-3000:]
            raise RuntimeError(f"training {method} failed (exit {exit_codes[method]}):\n{tail}")
    return trained


def main(argv: list[str] | None = None) -> dict:
    start = time.perf_counter()
    args, training_flags = parse_args(argv)
    output_dir = Path(args.output_dir).resolve()
    hub = start_local_hub(output_dir)  # before any Hugging Face import
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    from hfvision.data.fashion_mnist import load_fashion_mnist
    from hfvision.hub.card import DATASETS, render_model_card
    from hfvision.hub.publish import publish
    from hfvision.models.lps import gumbel_tau_buffers

    bench = load_benchmark()
    run_dir = output_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    step(2, f"LPS-ResNet-18 (CIFAR stem, width {args.width}) and its stride baseline -> {run_dir}")
    init = build_checkpoints(run_dir, args.width, bench)

    step(3, f"train both on Fashion-MNIST with the generic Trainer script ({args.max_steps} steps each)")
    trained = train(init, run_dir, args, training_flags)
    plot_training(trained["lps"], trained["lps"])  # Trainer's trainer_state.json -> training_curves.png

    shifts = f"shifts (o, o), o = 0..{args.max_offset}"
    step(4, f"accuracy and shift consistency on {args.eval_samples} test images, {shifts}")
    test = load_fashion_mnist("test", limit=args.eval_samples)
    images = [image.convert("RGB") for image in test["image"]]
    labels = torch.tensor(test["label"])
    rows = {}
    for method in METHODS:
        model = AutoModelForImageClassification.from_pretrained(trained[method]).eval()
        processor = AutoImageProcessor.from_pretrained(trained[method])
        # shift the [0, 1] pixels, then normalise (inside the benchmark): a standard shift fills with black
        pixels = processor(images, do_normalize=False, return_tensors="pt")["pixel_values"]  # (N, 3, 32, 32)
        rows[method] = bench.evaluate_shifts(model, pixels, labels, args.max_offset)
        rows[method]["script_accuracy"] = json.loads((trained[method] / "eval_results.json").read_text())[
            "eval_top1_accuracy"
        ]
    print(bench.markdown_table(rows))
    for method, row in rows.items():  # the script's own evaluation of the same images, through the same processor
        print(f"   {method}: accuracy {row['accuracy']:.4f} (training script: {row['script_accuracy']:.4f})")
    plot = bench.draw_plot(rows, trained["lps"] / "lps_shift.png")  # in the published folder, for the card
    print(f"   consistency vs shift: {plot}", flush=True)
    lps = rows["lps"]
    final_tau = float(gumbel_tau_buffers(AutoModelForImageClassification.from_pretrained(trained["lps"]))[0])
    print(f"   LPS Gumbel temperature at the end of training: {final_tau:.4f}", flush=True)

    step(5, "model card from the measured results")
    fashion_mnist = DATASETS["fashion_mnist"]
    dataset = {"dataset_type": fashion_mnist.type, "dataset_name": fashion_mnist.name, "dataset_split": "test"}
    task = {"task_type": "image-classification", "task_name": "Image classification"}
    eval_results = [
        {**task, **dataset, "metric_type": "accuracy", "metric_name": "Top-1 accuracy",
         "metric_value": lps["accuracy"]},
    ] + [
        {**task, **dataset, "metric_type": f"{mode}_shift_consistency",
         "metric_name": f"{mode.capitalize()}-shift consistency", "metric_config": f"offsets 0-{args.max_offset}",
         "metric_value": lps[f"{mode}_consistency"]}
        for mode in ("circular", "standard")
    ]  # fmt: skip
    config = yaml.safe_load(CONFIG.read_text())
    config.pop("output_dir")  # the demo passes its own
    config |= {
        "max_steps": args.max_steps,
        "max_train_samples": args.train_samples,
        "max_eval_samples": args.eval_samples,
        "gumbel_tau_decay_steps": max(args.max_steps // 25, 1),
        "model": f"lps-resnet18-cifar, widths {[args.width * 2**stage for stage in range(4)]}",
        "extra_flags": training_flags,
    }
    stride = rows["stride"]
    card = render_model_card(
        "lps",
        model_id=args.repo_id,
        eval_results=eval_results,
        baselines=[  # the same network with plain striding, trained and evaluated the same way
            f"stride {stride[key]:.4f}" for key in ("accuracy", "circular_consistency", "standard_consistency")
        ],
        training_config={key: value for key, value in config.items() if value is not None},
        datasets=[fashion_mnist.hub_id],
        training_data=f"{fashion_mnist.name} ({args.train_samples:,} training images): {fashion_mnist.description}.",
        model_description=(
            f"A narrow LPS-ResNet-18 (CIFAR stem, widths {args.width}-{8 * args.width}, circular padding) trained "
            f"for {args.max_steps} steps on Fashion-MNIST (28x28 grayscale, resized to 32x32 RGB) by "
            "`make demo DEMO=lps`. The same network with plain striding, trained the same way, reaches "
            f"{stride['accuracy']:.1%} accuracy with {stride['circular_consistency']:.1%} circular-shift consistency."
        ),
        training_data_description=(
            f"Trained for {args.max_steps} steps on {args.train_samples} Fashion-MNIST images on CPU, far from the "
            "paper's CIFAR-10 / ImageNet training; its accuracy says nothing about the paper's numbers."
        ),
        extra_deviations=[
            "Training: AdamW with a cosine schedule for a few hundred steps instead of SGD for 250 epochs; the "
            "Gumbel temperature follows the official CIFAR-10 step decay (x0.85, floor 0.025) compressed to the run "
            "(25 decays over the run instead of one per 10 epochs).",
        ],
    )
    final_dir = trained["lps"]
    card.save(final_dir / "README.md")
    print(f"   {final_dir / 'README.md'}", flush=True)

    step(6, f"publish {final_dir} -> {args.repo_id}")
    uploaded = publish(final_dir, args.repo_id, commit_message="LPS-ResNet-18 on Fashion-MNIST from make demo")
    print("   " + " ".join(uploaded), flush=True)

    step(7, f"load {args.repo_id} by repo id and classify test images")
    model = AutoModelForImageClassification.from_pretrained(args.repo_id)
    classifier = pipeline("image-classification", model=args.repo_id)
    correct = 0
    for index in range(min(args.num_examples, len(images))):
        prediction = classifier(images[index])[0]
        truth = model.config.id2label[int(labels[index])]
        correct += prediction["label"] == truth
        print(f"   image {index}: predicted {prediction['label']!r} ({prediction['score']:.2f}), true {truth!r}")
    print(f"   {type(model).__name__} loaded from {hub.endpoint}/{args.repo_id}")
    print(
        f"LPS on {args.eval_samples} test images: accuracy {lps['accuracy']:.3f}, circular-shift consistency "
        f"{lps['circular_consistency']:.3f}, standard-shift consistency {lps['standard_consistency']:.3f}; "
        f"stride baseline: {stride['accuracy']:.3f}, {stride['circular_consistency']:.3f}, "
        f"{stride['standard_consistency']:.3f}"
    )
    print(f"model card: {final_dir / 'README.md'} (also at {hub.endpoint}/{args.repo_id}/resolve/main/README.md)")
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    hub.stop()
    return {"results": rows, "examples_correct": correct, "uploaded": uploaded, "final_gumbel_tau": final_tau}


if __name__ == "__main__":
    main()
