"""`make demo`: data -> pretraining with accelerate -> zero-shot eval -> model card -> publish -> load by repo id.

1. start the local Hub (the embedded default; `--endpoint` or unset variables reach the real Hub instead);
2. `accelerate launch training/pretrain_pyramidclip.py` on seeded synthetic scenes (built by the script) with the
   tiny config: the script evaluates zero-shot top-1/top-5 and retrieval on held-out scenes at the end;
3. render the model card from the measured results (`model_cards/pyramidclip.md`) into the final checkpoint;
4. `hfvision publish` the checkpoint as `org/pyramidclip-tiny`;
5. load it back by repo id with `AutoModel` and `pipeline("zero-shot-image-classification")` and print the
   predictions for a few held-out images.

    python training/demo_pyramidclip.py [--output_dir runs/demo] [--max_steps 300] [other pretraining flags]

The Hub client variables must be set before `huggingface_hub` is imported, so this file sets them first.
"""

from __future__ import annotations

import json
from pathlib import Path

from demo_common import parse_demo_args, start_local_hub, step, train_or_reuse


def main(argv: list[str] | None = None) -> dict:
    args, training_flags = parse_demo_args(
        argv, __doc__, "pyramidclip", "org/pyramidclip-tiny", "held-out images to classify at the end"
    )
    output_dir = Path(args.output_dir).resolve()
    hub = start_local_hub(output_dir)  # before any Hugging Face import
    from transformers import AutoModel, pipeline

    from hfvision.data import load_image_text_stream
    from hfvision.hub.card import write_model_card
    from hfvision.hub.publish import publish

    run_dir = output_dir / "run"
    step(2, f"pretraining with accelerate -> {run_dir}")
    results = train_or_reuse(
        "pretrain_pyramidclip.py", "pretrain_pyramidclip_tiny.yaml", run_dir, args.max_steps, training_flags
    )
    final_dir = run_dir / "final"
    metrics = results["metrics"]

    step(3, "model card from the measured results")
    write_model_card(final_dir, model_id=args.repo_id)  # the card the run wrote, naming the repo it goes to
    print(f"   {final_dir / 'README.md'}", flush=True)

    step(4, f"publish {final_dir} -> {args.repo_id}")
    uploaded = publish(final_dir, args.repo_id, commit_message="tiny PyramidCLIP from make demo")
    print("   " + " ".join(uploaded), flush=True)

    step(5, f"load {args.repo_id} by repo id and classify held-out scenes")
    model = AutoModel.from_pretrained(args.repo_id)
    classifier = pipeline("zero-shot-image-classification", model=args.repo_id)
    class_names = json.loads((run_dir / "synthetic_data" / "class_names.json").read_text())
    stream = load_image_text_stream(str(run_dir / "synthetic_data"), split="eval")
    correct = 0
    for index, sample in zip(range(args.num_examples), stream, strict=False):
        prediction = classifier(sample["image"], candidate_labels=class_names, hypothesis_template="a photo of a {}.")[
            0
        ]
        truth = class_names[sample["label"]]
        correct += prediction["label"] == truth
        print(f"   image {index}: predicted {prediction['label']!r} ({prediction['score']:.2f}), true {truth!r}")
    print(f"   {type(model).__name__} loaded from {hub.endpoint}/{args.repo_id}")
    print(
        f"zero-shot top-1 on {int(metrics['eval/num_samples'])} held-out scenes: "
        f"{metrics['eval/zero_shot_top1_accuracy']:.3f} (chance {1 / len(class_names):.3f}); "
        f"top-5 {metrics['eval/zero_shot_top5_accuracy']:.3f}"
    )
    print(f"model card: {final_dir / 'README.md'} (also at {hub.endpoint}/{args.repo_id}/resolve/main/README.md)")
    hub.stop()
    return {"metrics": metrics, "examples_correct": correct, "uploaded": uploaded}


if __name__ == "__main__":
    main()
