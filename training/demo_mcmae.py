"""`make demo DEMO=mcmae`: Fashion-MNIST -> MCMAE pretraining with accelerate -> reconstructions -> card -> publish
-> load by repo id.

1. start the local Hub (the embedded default);
2. `accelerate launch training/pretrain_mcmae.py` with `training/configs/pretrain_mcmae_fashion_mnist.yaml` (tiny
   MCMAE, 75% of the tokens masked); the script reports the masked-patch loss on held-out test images and draws
   `final/reconstructions.png` (original / masked / reconstruction / visible + predicted);
3. render the model card (with the measured loss and the reconstruction grid) into the final checkpoint;
4. `hfvision publish` it as `org/mcmae-tiny-fashion-mnist`;
5. load it back by repo id with `AutoModelForPreTraining` and `AutoImageProcessor`, reconstruct held-out images with
   the downloaded model and save that grid as `output_dir/reconstructions_from_hub.png`.

    python training/demo_mcmae.py [--output_dir runs/demo_mcmae] [--max_steps 400] [other pretraining flags]

Needs the Debian package `dataset-fashion-mnist` (`make data` installs it).
"""

from __future__ import annotations

from pathlib import Path

from demo_common import parse_demo_args, start_local_hub, step, train_or_reuse


def main(argv: list[str] | None = None) -> dict:
    args, training_flags = parse_demo_args(
        argv, __doc__, "mcmae", "org/mcmae-tiny-fashion-mnist", "held-out images to reconstruct at the end"
    )
    output_dir = Path(args.output_dir).resolve()
    hub = start_local_hub(output_dir)  # before any Hugging Face import
    import torch
    from transformers import AutoImageProcessor, AutoModelForPreTraining

    from hfvision.data import load_image_stream
    from hfvision.hub.card import write_model_card
    from hfvision.hub.publish import publish

    run_dir = output_dir / "run"
    step(2, f"pretraining with accelerate -> {run_dir}")
    results = train_or_reuse(
        "pretrain_mcmae.py", "pretrain_mcmae_fashion_mnist.yaml", run_dir, args.max_steps, training_flags
    )
    final_dir = run_dir / "final"
    metrics = results["metrics"]

    step(3, "model card from the measured results")
    write_model_card(  # the card the run wrote, naming the repo it goes to
        final_dir,
        model_id=args.repo_id,
        training_data_description=(
            "Pretrained for a few hundred steps on 28x28 Fashion-MNIST images (resized to 32x32) on a CPU: a "
            "demonstration of the method and its integration, far from the paper's ImageNet-1K pretraining."
        ),
    )
    print(f"   {final_dir / 'README.md'}", flush=True)

    step(4, f"publish {final_dir} -> {args.repo_id}")
    uploaded = publish(final_dir, args.repo_id, commit_message="tiny MCMAE from make demo")
    print("   " + " ".join(uploaded), flush=True)

    step(5, f"load {args.repo_id} by repo id and reconstruct held-out images")
    model = AutoModelForPreTraining.from_pretrained(args.repo_id).eval()
    processor = AutoImageProcessor.from_pretrained(args.repo_id)
    stream = load_image_stream(str(run_dir / "fashion_mnist_data"), split="eval").take(args.num_examples)
    pixel_values = processor([sample["image"] for sample in stream], return_tensors="pt").pixel_values
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(pixel_values.shape[0], model.config.num_patches, generator=generator)
    with torch.no_grad():
        loss = float(model(pixel_values=pixel_values, noise=noise).loss)
        grid = processor.reconstruction_grid([pixel_values, *model.reconstruct(pixel_values, noise=noise)])
    grid_path = output_dir / "reconstructions_from_hub.png"
    grid.save(grid_path)
    print(f"   {type(model).__name__} loaded from {hub.endpoint}/{args.repo_id}")
    print(f"   reconstructions ({args.num_examples} held-out images): {grid_path}")
    print(
        f"masked-patch loss on {int(metrics['eval/num_samples'])} held-out images: "
        f"{metrics['eval/reconstruction_loss']:.4f} (first training window {metrics['train/loss_first_window']:.4f}); "
        f"on the {args.num_examples} shown: {loss:.4f}"
    )
    print(f"model card: {final_dir / 'README.md'} (also at {hub.endpoint}/{args.repo_id}/resolve/main/README.md)")
    hub.stop()
    return {"metrics": metrics, "uploaded": uploaded, "grid": str(grid_path)}


if __name__ == "__main__":
    main()
