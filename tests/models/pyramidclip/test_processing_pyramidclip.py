"""PyramidCLIP processor, image processor and offline tokenizers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from hfvision.models.pyramidclip import PyramidClipProcessor, clip_tokenizer_from_bpe_file, train_clip_tokenizer
from tests.models.pyramidclip.conftest import CAPTIONS, random_image


def test_clip_inputs_for_a_batch_of_mixed_sizes(tiny_processor):
    images = [random_image(0, 40, 48), random_image(1, 90, 30), random_image(2, 32, 32)]
    inputs = tiny_processor(text=CAPTIONS[:3], images=images)
    assert inputs["pixel_values"].shape == (3, 3, 32, 32)
    assert inputs["input_ids"].shape == inputs["attention_mask"].shape
    assert inputs["input_ids"].shape[0] == 3
    single = tiny_processor(text=CAPTIONS[0], images=images[0])
    assert single["pixel_values"].shape == (1, 3, 32, 32) and single["input_ids"].shape[0] == 1
    torch.testing.assert_close(single["pixel_values"][0], inputs["pixel_values"][0])


def test_pyramid_inputs_and_the_fallback_rule(tiny_processor):
    images = [random_image(0), random_image(1)]
    boxes = [[[0, 0, 20, 20], [10, 10, 40, 30]], None]
    pyramid = tiny_processor(
        text=CAPTIONS[:2], images=images, summary=["red circle", None], boxes=boxes, return_pyramid=True, seed=0
    )
    assert pyramid["pixel_values"].shape == pyramid["pixel_values_local"].shape == (2, 3, 32, 32)
    assert pyramid["roi_features"].shape == (2, 2, tiny_processor.image_processor.roi_feature_dim)
    assert pyramid["roi_mask"].tolist() == [[1, 1], [1, 0]]  # no boxes: one whole-image region
    # a missing summary and missing attributes fall back to the caption
    caption_ids = tiny_processor(text=CAPTIONS[1])["input_ids"][0]
    assert pyramid["summary_input_ids"][1, : len(caption_ids)].tolist() == caption_ids.tolist()
    assert pyramid["attribute_input_ids"][1, : len(caption_ids)].tolist() == caption_ids.tolist()
    assert pyramid["summary_input_ids"][0].tolist() != pyramid["input_ids"][0].tolist()


def test_pyramid_crops_are_seeded(tiny_processor):
    image = random_image(5, 64, 64)
    first = tiny_processor(text="a", images=image, return_pyramid=True, seed=1)
    again = tiny_processor(text="a", images=image, return_pyramid=True, seed=1)
    other = tiny_processor(text="a", images=image, return_pyramid=True, seed=2)
    assert torch.equal(first["pixel_values_local"], again["pixel_values_local"])
    assert not torch.equal(first["pixel_values_local"], other["pixel_values_local"])


def test_region_features_describe_the_box(tiny_processor):
    pixels = np.zeros((40, 40, 3), dtype=np.uint8)
    pixels[:20, :20] = (255, 0, 0)  # a red square top-left, blue elsewhere
    pixels[20:, 20:] = (0, 0, 255)
    image = Image.fromarray(pixels)
    features = tiny_processor.image_processor.preprocess_pyramid(
        image, boxes=[[[0, 0, 20, 20], [20, 20, 40, 40]]], return_tensors="np"
    )["roi_features"][0]
    size = tiny_processor.image_processor.roi_pool_size**2
    red_box, blue_box = features[0, :-4].reshape(size, 3), features[1, :-4].reshape(size, 3)
    assert red_box[:, 0].mean() > red_box[:, 2].mean() and blue_box[:, 2].mean() > blue_box[:, 0].mean()
    np.testing.assert_allclose(features[1, -4:], [0.5, 0.5, 1.0, 1.0])


def test_bad_inputs(tiny_processor):
    with pytest.raises(ValueError, match="neither"):
        tiny_processor()
    with pytest.raises(ValueError, match="empty string"):
        tiny_processor(text=["a red circle", "  "])
    with pytest.raises(TypeError, match="list of strings"):
        tiny_processor(text=["a red circle", 3])
    with pytest.raises(ValueError, match="one entry per image"):
        tiny_processor(text=["a", "b"], images=[random_image(0), random_image(1)], boxes=[None], return_pyramid=True)
    with pytest.raises(ValueError, match="x1 > x0"):
        tiny_processor(text="a", images=random_image(0), boxes=[[[10, 10, 5, 20]]], return_pyramid=True)
    with pytest.raises(ValueError, match="both `images` and `text`"):
        tiny_processor(text="a", return_pyramid=True)


def test_long_text_is_truncated_to_the_context_length(tiny_processor):
    inputs = tiny_processor(text="red " * 200)
    assert inputs["input_ids"].shape[1] == tiny_processor.tokenizer.model_max_length == 77
    assert inputs["input_ids"][0, -1] == tiny_processor.tokenizer.eos_token_id


def test_processor_round_trip(tmp_path, tiny_processor):
    tiny_processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, PyramidClipProcessor)
    left = tiny_processor(text=CAPTIONS, images=[random_image(i) for i in range(4)])
    right = reloaded(text=CAPTIONS, images=[random_image(i) for i in range(4)])
    for key in left:
        assert torch.equal(left[key], right[key]), key


def test_trained_tokenizer_is_a_clip_tokenizer():
    tokenizer = train_clip_tokenizer(CAPTIONS, vocab_size=300, model_max_length=8)
    ids = tokenizer("A RED circle!")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a red circle !"
    assert type(tokenizer).__name__ == "CLIPTokenizer"


def test_trained_tokenizer_ids_do_not_depend_on_the_process():
    """Hash-order tie breaks would change ids between processes (tokenizers' BPE trainer does)."""
    script = (
        "from hfvision.models.pyramidclip import train_clip_tokenizer\n"
        f"texts = {CAPTIONS!r} * 3 + ['naive cafe on the left', 'on top of the dog']\n"
        "print(sorted(train_clip_tokenizer(texts, vocab_size=560).get_vocab().items()))"
    )
    runs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}  # fmt: skip
    assert len(runs) == 1


OPEN_CLIP = importlib.util.find_spec("open_clip")


@pytest.mark.skipif(OPEN_CLIP is None, reason="open_clip_torch wheel (installed --no-deps by the Makefile) is absent")
def test_openai_clip_vocabulary_gives_openai_ids():
    merges = Path(OPEN_CLIP.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    tokenizer = clip_tokenizer_from_bpe_file(merges)
    assert len(tokenizer) == 49408
    # ids of OpenAI CLIP / open_clip's SimpleTokenizer for this sentence
    assert tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
