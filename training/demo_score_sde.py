"""`make demo DEMO=score_sde`: fresh points of a circle in R^10 -> Score-SDE training with accelerate -> samples and
their distance to the circle -> card -> publish -> load by repo id -> sample with the pipeline.

1. start the local Hub (the embedded default);
2. `accelerate launch training/train_score_sde.py` with `training/configs/train_score_sde_circle_demo.yaml` (fresh
   points of the unit circle embedded in R^10 by a random isometry, EDM preconditioning; the full config's model and
   data, 2000 steps instead of 6000 and 500 sampler steps instead of 1000, so the demo takes ~2-3 minutes on a
   2-core CPU); the script samples with the reverse SDE, measures the distance to the circle and the angle
   histogram, and draws `final/samples.png`;
3. render the model card (which statement of Pidstrigach 2022 each number illustrates) into the final checkpoint;
4. `hfvision publish` it as `org/score-sde-circle`;
5. load it back by repo id with `AutoModel` and `pipeline(model=repo_id, trust_remote_code=True)` (the
   `unconditional-sample-generation` pipeline ships with the checkpoint), draw new samples and plot them against the
   circle: `output_dir/samples_from_hub.png`.

    python training/demo_score_sde.py [--output_dir runs/demo_score_sde] [--max_steps 2000] [other training flags]
"""

from __future__ import annotations

from pathlib import Path

from demo_common import parse_demo_args, start_local_hub, step, train_or_reuse


def main(argv: list[str] | None = None) -> dict:
    args, training_flags = parse_demo_args(
        argv, __doc__, "score_sde", "org/score-sde-circle", "samples to draw from the loaded pipeline (x100)"
    )
    output_dir = Path(args.output_dir).resolve()
    hub = start_local_hub(output_dir)  # before any Hugging Face import
    from transformers import AutoModel, pipeline

    from hfvision.data import load_manifold
    from hfvision.hub.card import write_model_card
    from hfvision.hub.publish import publish
    from hfvision.metrics import load_metric
    from hfvision.models.score_sde import plot_samples_on_manifold

    run_dir = output_dir / "run"
    step(2, f"training with accelerate -> {run_dir}")
    results = train_or_reuse(
        "train_score_sde.py", "train_score_sde_circle_demo.yaml", run_dir, args.max_steps, training_flags
    )
    final_dir = run_dir / "final"
    metrics, config = results["metrics"], results["config"]

    step(3, "model card from the measured results")
    write_model_card(final_dir, model_id=args.repo_id)
    print(f"   {final_dir / 'README.md'}", flush=True)

    step(4, f"publish {final_dir} -> {args.repo_id}")
    uploaded = publish(final_dir, args.repo_id, commit_message="Score-SDE on a circle in R^10 from make demo")
    print("   " + " ".join(uploaded), flush=True)

    step(5, f"load {args.repo_id} by repo id and sample with its pipeline")
    model = AutoModel.from_pretrained(args.repo_id)
    generator = pipeline(model=args.repo_id, trust_remote_code=True)
    num_samples = 100 * args.num_examples
    samples = generator(num_samples, num_inference_steps=config["eval_num_inference_steps"], seed=1)["samples"]
    manifold = load_manifold(final_dir / "manifold.json")
    spec_kwargs = {"manifold": "sphere", "radius": config["manifold_radius"]}
    measured = load_metric("manifold_distance").compute(
        predictions=samples.double().numpy(), isometry=manifold.isometry.numpy(), thresholds=(0.03,), **spec_kwargs
    )
    plot = plot_samples_on_manifold(
        {"samples from the Hub checkpoint": samples},
        manifold.isometry,
        {"samples from the Hub checkpoint": manifold.distance(samples.double())},
        radius=config["manifold_radius"],
        title=f"{args.repo_id}: {num_samples} samples, {generator.task}",
    )
    plot_path = output_dir / "samples_from_hub.png"
    plot.save(plot_path)
    print(f"   {type(model).__name__} loaded from {hub.endpoint}/{args.repo_id}; pipeline {type(generator).__name__}")
    print(f"   samples against the circle: {plot_path}")
    print(
        f"{num_samples} samples of the published model: median distance to the circle "
        f"{measured['distance_median']:.4f}, {measured['within_0.03']:.1%} within 3e-2, angle chi-square "
        f"{measured['angle_chi2']:.1f} (15 dof; uniform angles give about 15); at training end "
        f"{metrics['eval/distance_median']:.4f} and {metrics['eval/within_0.03']:.1%}"
    )
    print(f"model card: {final_dir / 'README.md'} (also at {hub.endpoint}/{args.repo_id}/resolve/main/README.md)")
    hub.stop()
    return {"metrics": metrics, "measured": measured, "uploaded": uploaded, "plot": str(plot_path)}


if __name__ == "__main__":
    main()
