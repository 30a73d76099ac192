"""Publish `org/pyramidclip-base` through the official-checkpoint converter, and load it by repo id without hfvision.

No official weights can be downloaded here, so the checkpoint converted is an official-format one with random weights:
1. start the local Hub (the embedded default, as `make demo`);
2. write a ViT-B/16 checkpoint in the official release's format (`{"state_dict": ...}` in a `.pth.tar`, the key names
   of the official `models/models.py`): a randomly initialised `PyramidClipModel` (`pyramidclip-base` preset) written
   under the official names by inverting the converter's key mapping; its key layout is checked, block for block,
   against the official-format fixture `tests/fixtures/pyramidclip_official_tiny.safetensors` (made with the
   official code), so it is that fixture's format scaled to the base shape;
3. convert it with `convert_pyramidclip_original_to_hf` (`--preset pyramidclip-base`) and push the result to
   `org/pyramidclip-base`, its model card marked as converted from an official-format checkpoint with random weights;
4. in a fresh process where hfvision cannot be imported: `AutoModel.from_pretrained("org/pyramidclip-base",
   trust_remote_code=True)` and `pipeline("zero-shot-image-classification", ...)` on one image.

    python training/publish_pyramidclip_base.py [--output_dir runs/pyramidclip_base]

The published folder weighs about 600 MB (about 150M parameters), and the run writes it four times (official
checkpoint, converted folder, Hub store, Hub cache). With the real `.pth.tar`, README.md ("Converting official
checkpoints") gives the converter command that publishes the real base model to the real Hub.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from demo_common import REPO, start_local_hub, step

FIXTURE = REPO / "tests" / "fixtures" / "pyramidclip_official_tiny.safetensors"
CARD_NOTE = "Converted from an official-format checkpoint with random weights."
LABELS = ["a photo of a cat", "a photo of a dog", "a diagram"]

# Run by a fresh interpreter in which every `hfvision` import fails: only the checkpoint's own code is available.
LOAD_WITHOUT_HFVISION = textwrap.dedent(
    """
    import json, sys

    class HideHfvision:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "hfvision":
                raise ModuleNotFoundError(name)

    sys.meta_path.insert(0, HideHfvision())
    import numpy as np
    from PIL import Image
    from transformers import AutoModel, pipeline

    repo_id, labels = sys.argv[1], sys.argv[2:]
    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True)
    classifier = pipeline("zero-shot-image-classification", model=repo_id, trust_remote_code=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    scores = classifier(image, candidate_labels=labels)
    hidden = not any(name.split(".")[0] == "hfvision" for name in sys.modules)
    print(json.dumps({"model_class": type(model).__module__ + "." + type(model).__name__,
                      "pipeline_model_class": type(classifier.model).__name__, "scores": scores,
                      "hfvision_hidden": hidden}))
    """
)


def _layout(keys: object) -> set[str]:
    """Official key names with block indices replaced by `*`: the format, independent of depth."""
    return {re.sub(r"\.resblocks([12])\.\d+\.", r".resblocks\1.*.", key) for key in keys}


def write_official_format_checkpoint(path: Path, seed: int) -> None:
    """A random-weight ViT-B/16 PyramidCLIP saved in the official release's format (see the module docstring)."""
    import torch
    from safetensors import safe_open

    from hfvision.models.pyramidclip import PyramidClipConfig, PyramidClipModel
    from hfvision.models.pyramidclip.convert_pyramidclip_original_to_hf import SPLIT_QKV, TRANSPOSE, key_mapping

    config = PyramidClipConfig.from_preset("pyramidclip-base")
    torch.manual_seed(seed)
    hf_state = PyramidClipModel(config).state_dict()
    official = {}
    for original, hf_keys, operation in key_mapping(config):
        tensors = [hf_state[key] for key in hf_keys]
        tensor = torch.cat(tensors) if operation == SPLIT_QKV else tensors[0]
        official[original] = (tensor.t() if operation == TRANSPOSE else tensor).contiguous()
    with safe_open(FIXTURE, "pt") as fixture:
        names = fixture.keys()  # a safe_open handle is not iterable
    fixture_keys = [name.removeprefix("state_dict.") for name in names if name.startswith("state_dict.")]
    if _layout(official) != _layout(fixture_keys):
        raise RuntimeError(f"key layout differs from the official fixture: {_layout(official) ^ _layout(fixture_keys)}")
    torch.save({"state_dict": official, "epoch": 0}, path)


def load_without_hfvision(repo_id: str) -> dict:
    """Load `repo_id` with transformers alone (hfvision hidden) and classify one image; returns what it printed."""
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_HFVISION, repo_id, *LABELS],
        env={**os.environ, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"loading {repo_id} without hfvision failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/pyramidclip_base")
    parser.add_argument("--repo_id", default="org/pyramidclip-base")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir).resolve()
    hub = start_local_hub(output_dir)  # before any Hugging Face import
    try:
        from hfvision.models.pyramidclip.convert_pyramidclip_original_to_hf import convert_checkpoint

        checkpoint = output_dir / "PyramidCLIP-random-ViT-B16.pth.tar"
        step(2, f"official-format ViT-B/16 checkpoint with random weights -> {checkpoint}")
        write_official_format_checkpoint(checkpoint, args.seed)

        converted = output_dir / "pyramidclip-base"
        step(3, f"convert -> {converted} and publish -> {args.repo_id}")
        convert_checkpoint(
            checkpoint, converted, preset="pyramidclip-base", push_to_hub=args.repo_id, card_note=CARD_NOTE
        )
        checkpoint.unlink()  # the official-format pickle is only the converter's input

        step(4, f"load {args.repo_id} by repo id in a process without hfvision, zero-shot classify one image")
        loaded = load_without_hfvision(args.repo_id)
        (output_dir / "loaded_without_hfvision.json").write_text(json.dumps(loaded, indent=2))
        print(f"   {loaded['model_class']}", flush=True)
        for score in loaded["scores"]:
            print(f"   {score['score']:.4f}  {score['label']}", flush=True)
        return loaded
    finally:
        hub.stop()


if __name__ == "__main__":
    main()
