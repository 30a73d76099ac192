"""The `video-text-retrieval` pipeline (hfvision's, registered by `import hfvision`) on a saved tiny VATT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import pipeline

from hfvision.models.vatt import VattModel, VattProcessor, VideoTextRetrievalPipeline
from tests.models.vatt.conftest import CAPTIONS, random_clip


@pytest.fixture(scope="module")
def retriever(tiny_checkpoint):
    # the checkpoint declares the pipeline (`custom_pipelines`): hfvision's own class is named
    return pipeline("video-text-retrieval", model=str(tiny_checkpoint), pipeline_class=VideoTextRetrievalPipeline)


def test_ranks_captions_by_the_models_video_text_similarity(retriever, tiny_checkpoint):
    clip = np.stack(random_clip(0))  # (T, H, W, 3)
    ranked = retriever(clip, candidate_captions=CAPTIONS)
    model = VattModel.from_pretrained(tiny_checkpoint).eval()
    processor = VattProcessor.from_pretrained(tiny_checkpoint)
    with torch.no_grad():  # the same numbers through the model's own forward
        outputs = model(**processor(videos=[list(clip)] * len(CAPTIONS), text=CAPTIONS))
    expected = outputs.logits_video_text[0] * model.config.temperature  # cosine similarities of clip 0
    assert [item["caption"] for item in ranked] == [CAPTIONS[i] for i in torch.argsort(-expected).tolist()]
    similarities = torch.tensor([item["similarity"] for item in ranked])
    torch.testing.assert_close(similarities, expected.sort(descending=True).values, atol=1e-5, rtol=1e-5)
    assert sum(item["score"] for item in ranked) == pytest.approx(1.0)
    assert [item["score"] for item in ranked] == sorted((item["score"] for item in ranked), reverse=True)


def test_top_k_batches_and_bad_input(retriever):
    clips = [np.stack(random_clip(1)), {"frames": random_clip(2)}]
    results = retriever(clips, candidate_captions=CAPTIONS, top_k=2)
    assert len(results) == 2 and all(len(result) == 2 for result in results)
    with pytest.raises(ValueError, match="candidate_captions"):
        retriever(clips[0], candidate_captions=[])
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        retriever(np.zeros((4, 4, 3), dtype=np.uint8), candidate_captions=CAPTIONS)
