"""`make demo DEMO=autolink`: stick figures -> AutoLink training with accelerate -> keypoint/skeleton evaluation ->
card -> publish -> load by repo id.

1. start the local Hub (the embedded default);
2. `accelerate launch training/train_autolink.py` with `training/configs/train_autolink_stick_figures.yaml`
   (seeded stick figures with a known 7-joint skeleton; no labels are used in training); the script measures the
   keypoint error after linear regression to the true joints, how many of the graph's strongest edges are true bones,
   and draws `final/keypoints.png`;
3. render the model card with those numbers and the overlay into the final checkpoint;
4. `hfvision publish` it as `org/autolink-stick-figures`;
5. load it back by repo id with `AutoModel` and `pipeline("keypoint-detection")`, detect keypoints on held-out
   figures and draw them with the learned skeleton: `output_dir/keypoints_from_hub.png`.

    python training/demo_autolink.py [--output_dir runs/demo_autolink] [--max_steps 600] [other training flags]
"""

from __future__ import annotations

from pathlib import Path

from demo_common import parse_demo_args, start_local_hub, step, train_or_reuse


def main(argv: list[str] | None = None) -> dict:
    args, training_flags = parse_demo_args(
        argv, __doc__, "autolink", "org/autolink-stick-figures", "held-out figures to draw at the end"
    )
    output_dir = Path(args.output_dir).resolve()
    hub = start_local_hub(output_dir)  # before any Hugging Face import
    from transformers import AutoModel, pipeline

    from hfvision.data import load_image_stream
    from hfvision.hub.card import write_model_card
    from hfvision.hub.publish import publish
    from hfvision.models.autolink import draw_keypoint_strip

    run_dir = output_dir / "run"
    step(2, f"training with accelerate -> {run_dir}")
    results = train_or_reuse(
        "train_autolink.py", "train_autolink_stick_figures.yaml", run_dir, args.max_steps, training_flags
    )
    final_dir = run_dir / "final"
    metrics = results["metrics"]

    step(3, "model card from the measured results")
    write_model_card(  # the card the run wrote, naming the repo it goes to
        final_dir,
        model_id=args.repo_id,
        training_data_description=(
            f"Trained for {metrics['global_step']} steps on seeded 32x32 dark-on-light stick figures on "
            "a CPU: a demonstration of the method and its integration, far from the paper's 20,000-step training on "
            "real images."
        ),
    )
    print(f"   {final_dir / 'README.md'}", flush=True)

    step(4, f"publish {final_dir} -> {args.repo_id}")
    uploaded = publish(final_dir, args.repo_id, commit_message="AutoLink on stick figures from make demo")
    print("   " + " ".join(uploaded), flush=True)

    step(5, f"load {args.repo_id} by repo id and detect keypoints on held-out figures")
    model = AutoModel.from_pretrained(args.repo_id)
    # as a user without hfvision would: the checkpoint ships the pipeline's code (`custom_pipelines`)
    detector = pipeline("keypoint-detection", model=args.repo_id, trust_remote_code=True)
    images = [sample["image"] for sample in load_image_stream(str(run_dir / "stick_figures_data"), split="eval")]
    images = images[: args.num_examples]
    results = detector(images)
    strip = draw_keypoint_strip(images, results)
    strip_path = output_dir / "keypoints_from_hub.png"
    strip.save(strip_path)
    edges = [(i, j) for i, j, _ in results[0]["edges"]]
    print(f"   {type(model).__name__} loaded from {hub.endpoint}/{args.repo_id}; strongest edges {edges}")
    print(f"   keypoints and skeleton on {len(images)} held-out figures: {strip_path}")
    print(
        f"regressed keypoint error (NME) on {int(metrics['eval/num_samples']) // 2} held-out figures: "
        f"{metrics['eval/keypoint_nme']:.3f} (mean-pose baseline {metrics['eval/mean_pose_nme']:.3f}); "
        f"strongest-edge precision {metrics['eval/edge_precision']:.2f}, "
        f"true bones among the strongest edges {metrics['eval/nearest_joint_bone_recall']:.2f}"
    )
    print(f"model card: {final_dir / 'README.md'} (also at {hub.endpoint}/{args.repo_id}/resolve/main/README.md)")
    hub.stop()
    return {"metrics": metrics, "uploaded": uploaded, "strip": str(strip_path)}


if __name__ == "__main__":
    main()
