"""`hfvision demo`: build a tiny PyramidCLIP, save it, load it back (Auto classes and remote code), classify.

Steps, each printed:
1. train a small CLIP BPE tokenizer on synthetic scene captions and build a tiny PyramidCLIP + processor;
2. `save_pretrained` (safetensors + the model's own code and `auto_map`);
3. load it back with `AutoModel` / `AutoProcessor` in this process (hfvision registered);
4. load it with `trust_remote_code=True` in a fresh Python process where hfvision cannot be imported, and check the
   logits are identical;
5. run `pipeline("zero-shot-image-classification")` on one synthetic image and print the predictions.
The model is untrained, so its predictions are near uniform; the training demo is `make demo` once training lands.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoProcessor, pipeline

from hfvision.data import SyntheticScenes
from hfvision.models.pyramidclip import (
    PyramidClipConfig,
    PyramidClipImageProcessor,
    PyramidClipModel,
    PyramidClipProcessor,
    train_clip_tokenizer,
)

# Preamble of a script run by a fresh interpreter: from then on every `hfvision` import fails, so only a checkpoint's
# own code is available (hfvision may be installed in the same environment).
HIDE_HFVISION = textwrap.dedent(
    """
    import sys

    class HideHfvision:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "hfvision":
                raise ModuleNotFoundError(name)

    sys.meta_path.insert(0, HideHfvision())
    """
)
REMOTE_CODE_CHECK = HIDE_HFVISION + textwrap.dedent(
    """
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel

    checkpoint, inputs_path, out = sys.argv[1:4]
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True)
    with torch.no_grad():
        logits = model(**load_file(inputs_path)).logits_per_image
    save_file({"logits_per_image": logits.contiguous()}, out)
    print(type(model).__module__ + "." + type(model).__name__)
    """
)


def load_without_hfvision(checkpoint: Path, inputs: dict[str, torch.Tensor], workdir: Path) -> torch.Tensor:
    """`logits_per_image` of `checkpoint` on `inputs`, computed by its remote code in a process without hfvision."""
    inputs_path, out = workdir / "inputs.safetensors", workdir / "remote_logits.safetensors"
    save_file({name: value.contiguous() for name, value in inputs.items()}, inputs_path)
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_CHECK, str(checkpoint), str(inputs_path), str(out)],
        cwd=workdir,
        # its remote-code modules go to the work folder, never to ~/.cache/huggingface
        env={**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "HF_HOME": str(workdir / "hf_home")},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"remote-code load failed:\n{result.stderr[-2000:]}")
    print(f"   loaded as {result.stdout.strip()}")
    return load_file(out)["logits_per_image"]


def run_demo(output_dir: str | None = None) -> list[dict]:
    """Run the demo; returns the pipeline's predictions for the demo image."""
    workdir = Path(output_dir or tempfile.mkdtemp(prefix="hfvision-demo-"))
    checkpoint = workdir / "pyramidclip-tiny"
    scenes = SyntheticScenes(num_samples=256, seed=0, max_objects=1)
    class_names = scenes.class_names()

    print("1. tokenizer + tiny PyramidCLIP")
    tokenizer = train_clip_tokenizer((scenes[i]["caption"] for i in range(len(scenes))), vocab_size=600)
    image_processor = PyramidClipImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = PyramidClipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    torch.manual_seed(0)
    model = PyramidClipModel(PyramidClipConfig.from_preset("pyramidclip-tiny")).eval()
    print(f"   {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {len(tokenizer)} tokens")

    print(f"2. save_pretrained -> {checkpoint}")
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    print("   " + " ".join(sorted(os.listdir(checkpoint))))

    print("3. AutoModel / AutoProcessor with hfvision")
    reloaded = AutoModel.from_pretrained(checkpoint)
    reloaded_processor = AutoProcessor.from_pretrained(checkpoint)
    sample = scenes[0]
    prompts = [f"a photo of a {name}." for name in class_names]
    inputs = dict(reloaded_processor(text=prompts, images=sample["image"]))
    with torch.no_grad():
        logits = reloaded(**inputs).logits_per_image
    print(f"   {type(reloaded).__module__}.{type(reloaded).__name__}")

    print("4. trust_remote_code=True in a process without hfvision")
    remote_logits = load_without_hfvision(checkpoint, inputs, workdir)
    print(f"   identical logits: {torch.equal(remote_logits, logits)}")

    print(f"5. zero-shot pipeline on one image (caption: {sample['caption']!r})")
    classifier = pipeline("zero-shot-image-classification", model=str(checkpoint))
    predictions = classifier(sample["image"], candidate_labels=class_names[:6], hypothesis_template="a photo of a {}.")
    for prediction in predictions:
        print(f"   {prediction['score']:.3f}  {prediction['label']}")
    return predictions


__all__ = ["HIDE_HFVISION", "load_without_hfvision", "run_demo"]
