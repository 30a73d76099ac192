"""`make demo DEMO=vatt`: synthetic clips -> VATT pretraining with accelerate -> retrieval recall -> card -> publish
-> load by repo id -> zero-shot video->text retrieval pipeline.

1. start the local Hub (the embedded default);
2. `accelerate launch training/pretrain_vatt.py --config training/configs/pretrain_vatt_tiny.yaml`: the script builds
   seeded synthetic video + audio + text clips, pretrains the tiny VATT with NCE + MIL-NCE and DropToken, measures
   video<->text and video<->audio recall@1/5/10 on held-out clips, draws `final/retrieval_examples.png` and renders
   the model card (`model_cards/vatt.md`) with those numbers into the final checkpoint;
3. `hfvision publish` the checkpoint as `org/vatt-tiny`;
4. load it back by repo id with `AutoModel` (the `VattModel` encoder) and rank the held-out captions for a few
   held-out clips with `pipeline("video-text-retrieval")`.

    python training/demo_vatt.py [--output_dir runs/demo_vatt] [--max_steps 3000] [other pretraining flags]

The Hub client variables must be set before `huggingface_hub` is imported, so this file sets them first.
"""

from __future__ import annotations

from pathlib import Path

from demo_common import parse_demo_args, start_local_hub, step, train_or_reuse


def main(argv: list[str] | None = None) -> dict:
    args, training_flags = parse_demo_args(argv, __doc__, "vatt", "org/vatt-tiny", "held-out clips to caption")
    output_dir = Path(args.output_dir).resolve()
    hub = start_local_hub(output_dir)  # before any Hugging Face import
    import numpy as np
    from transformers import AutoModel, pipeline

    from hfvision.data import load_av_clip_stream
    from hfvision.hub.publish import publish

    run_dir = output_dir / "run"
    step(2, f"pretraining with accelerate (retrieval eval, card) -> {run_dir}")
    results = train_or_reuse(
        "pretrain_vatt.py", "pretrain_vatt_tiny.yaml", run_dir, args.max_steps,
        [*training_flags, "--hub_model_id", args.repo_id],
    )  # fmt: skip
    final_dir = run_dir / "final"
    metrics = results["metrics"]
    print(f"   model card with the measured recall: {final_dir / 'README.md'}", flush=True)

    step(3, f"publish {final_dir} -> {args.repo_id}")
    uploaded = publish(final_dir, args.repo_id, commit_message="tiny VATT from make demo")
    print("   " + " ".join(uploaded), flush=True)

    step(4, f"load {args.repo_id} by repo id and rank held-out captions for held-out clips")
    model = AutoModel.from_pretrained(args.repo_id)
    # as a user without hfvision would: the checkpoint ships the pipeline's code (`custom_pipelines`)
    retriever = pipeline("video-text-retrieval", model=args.repo_id, trust_remote_code=True)
    shards = sorted(str(path) for path in (run_dir / "synthetic_data" / "eval").glob("*.tar"))
    clips = [clip for clip in load_av_clip_stream(shards).with_format("numpy") if clip["has_text"]]
    captions = sorted({str(clip["caption"]) for clip in clips})
    correct = 0
    for index, clip in enumerate(clips[: args.num_examples]):
        best = retriever(np.asarray(clip["frames"], dtype=np.uint8), candidate_captions=captions, top_k=1)[0]
        truth = str(clip["caption"])
        correct += best["caption"] == truth
        print(f"   clip {index}: top caption {best['caption']!r} ({best['score']:.2f}), true {truth!r}")
    print(f"   {type(model).__name__} loaded from {hub.endpoint}/{args.repo_id}")
    print(
        f"video->text recall@1 on {int(metrics['eval/num_samples'])} held-out clips: "
        f"{metrics['eval/video_to_text_recall@1']:.3f}, recall@5 {metrics['eval/video_to_text_recall@5']:.3f}; "
        f"video->audio recall@1 {metrics['eval/video_to_audio_recall@1']:.3f}"
    )
    print(f"model card: {final_dir / 'README.md'} (also at {hub.endpoint}/{args.repo_id}/resolve/main/README.md)")
    hub.stop()
    return {"metrics": metrics, "examples_correct": correct, "uploaded": uploaded}


if __name__ == "__main__":
    main()
