"""A WebDataset pushed to the (local) Hub streams back through `load_image_text_stream("org/name")`."""

from __future__ import annotations

from huggingface_hub import HfApi

from hfvision.data import build_synthetic_scenes, load_image_text_stream


def test_webdataset_repo_streams_by_repo_id(local_hub, tmp_path):
    build_synthetic_scenes(tmp_path / "scenes", num_train=24, num_eval=8, seed=3, num_shards=2, num_eval_shards=1)
    api = HfApi()
    api.create_repo("org/scenes-stream-test", repo_type="dataset", exist_ok=True)
    api.upload_folder(folder_path=tmp_path / "scenes", repo_id="org/scenes-stream-test", repo_type="dataset")
    local = list(load_image_text_stream(str(tmp_path / "scenes"), split="train"))
    remote = list(load_image_text_stream("org/scenes-stream-test", split="train"))
    assert len(remote) == len(local) == 24
    assert [s["caption"] for s in remote] == [s["caption"] for s in local]
    assert remote[0]["image"].tobytes() == local[0]["image"].tobytes()
    # `datasets` infers Hub splits from folder names and calls the builders' `eval/` folder the "test" split
    assert len(list(load_image_text_stream("org/scenes-stream-test", split="test"))) == 8
