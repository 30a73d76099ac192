"""`make demo DEMO=trap_replace`: a backdoored Fashion-MNIST -> Trap and Replace (both stages, accelerate) -> clean
accuracy and attack success rate -> card -> publish -> load the defended model by repo id in the pipeline.

1. start the local Hub (the embedded default);
2. `accelerate launch training/train_trap_replace.py` with `training/configs/train_trap_replace_fashion_mnist.yaml`:
   Fashion-MNIST padded to 32x32, 10% of it BadNets-poisoned (4x4 white square) towards class 0 (the last 5% held
   out clean); stage 1 trains stem + trap head + decoder on the poisoned split;
3. stage 2 (`--stage replace`): the trap head and decoder are dropped, a new head is trained on the clean holdout with
   the stem frozen; each stage measures clean accuracy and ASR and writes its model card;
4. `hfvision publish` the defended model as `org/trap-replace-fashion-mnist`;
5. load it back by repo id in `pipeline("image-classification")` and classify triggered test images of non-target
   classes: the backdoor's target should no longer come out.

    python training/demo_trap_replace.py [--output_dir runs/demo_trap_replace] [--max_steps 600]
        [--stage2_max_steps 270] [other training flags, e.g. --num_train 4000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from demo_common import parse_demo_args, start_local_hub, step, train_or_reuse


def main(argv: list[str] | None = None) -> dict:
    args, training_flags = parse_demo_args(
        argv, __doc__, "trap_replace", "org/trap-replace-fashion-mnist", "triggered test images to classify at the end"
    )
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--stage2_max_steps", type=int, default=270)
    extra_args, training_flags = extra.parse_known_args(training_flags)
    output_dir = Path(args.output_dir).resolve()
    hub = start_local_hub(output_dir)  # before any Hugging Face import
    import datasets
    from transformers import pipeline

    from hfvision.hub.publish import publish

    data_dir = output_dir / "data"
    shared = ["--backdoor_data", str(data_dir), "--hub_model_id", args.repo_id, *training_flags]
    step(2, f"stage 1 (bait and trap) on the poisoned split -> {output_dir / 'trap'}")
    trapped = train_or_reuse(
        "train_trap_replace.py", "train_trap_replace_fashion_mnist.yaml", output_dir / "trap", args.max_steps, shared
    )
    step(3, f"stage 2 (remove and patch) on the clean holdout -> {output_dir / 'replace'}")
    # the paper's stage-2 recipe first, so that flags given to the demo override it
    stage2 = [
        "--learning_rate", "0.03", "--per_device_train_batch_size", "64", *shared,
        "--stage", "replace", "--model_name_or_path", str(output_dir / "trap" / "final"),
    ]  # fmt: skip
    defended = train_or_reuse(
        "train_trap_replace.py",
        "train_trap_replace_fashion_mnist.yaml",
        output_dir / "replace",
        extra_args.stage2_max_steps,
        stage2,
    )
    before, after = trapped["metrics"], defended["metrics"]
    final_dir = output_dir / "replace" / "final"
    print(f"   model card: {final_dir / 'README.md'}", flush=True)

    step(4, f"publish {final_dir} -> {args.repo_id}")
    uploaded = publish(final_dir, args.repo_id, commit_message="Trap and Replace on BadNets Fashion-MNIST (make demo)")
    print("   " + " ".join(uploaded), flush=True)

    step(5, f"load {args.repo_id} by repo id in the image-classification pipeline; classify triggered images")
    classifier = pipeline("image-classification", model=args.repo_id)
    triggered = datasets.load_dataset("parquet", data_dir=str(data_dir / "triggered"), split="train")
    triggered = triggered.select(range(args.num_examples))
    target = classifier.model.config.id2label[int(defended["config"]["target_label"])]
    predictions = classifier(list(triggered["image"]), top_k=1)
    names = classifier.model.config.id2label
    for index, (label, prediction) in enumerate(zip(triggered["label"], predictions, strict=True)):
        print(f"   triggered image {index + 1}: true {names[int(label)]!r}, predicted {prediction[0]['label']!r}")
    hits = sum(prediction[0]["label"] == target for prediction in predictions)
    print(f"   {type(classifier.model).__name__} loaded from {hub.endpoint}/{args.repo_id}")
    print(
        f"backdoor target {target!r}: attack success rate {before['eval/attack_success_rate']:.3f} after stage 1 "
        f"(trap head), {after['eval/attack_success_rate']:.3f} after Trap and Replace; clean accuracy "
        f"{before['eval/clean_accuracy']:.3f} -> {after['eval/clean_accuracy']:.3f}; {hits} of {len(predictions)} "
        "triggered images above went to the target"
    )
    print(f"model card: {final_dir / 'README.md'} (also at {hub.endpoint}/{args.repo_id}/resolve/main/README.md)")
    hub.stop()
    return {"before": before, "after": after, "uploaded": uploaded}


if __name__ == "__main__":
    main()
