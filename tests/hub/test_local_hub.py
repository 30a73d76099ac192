"""The local Hub, exercised only through the public APIs of huggingface_hub, transformers and datasets."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
import torch
from datasets import Dataset, load_dataset
from huggingface_hub import (
    EvalResult,
    HfApi,
    HfFileSystem,
    ModelCard,
    ModelCardData,
    RepoCard,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification

from hfvision.hub.local_hub import LocalHub, client_env

pytestmark = pytest.mark.usefixtures("local_hub")


@pytest.fixture
def api() -> HfApi:
    return HfApi()


def test_client_env_is_what_the_tests_run_with(local_hub: LocalHub) -> None:
    env = client_env(local_hub.endpoint, os.environ["HF_HOME"], token=next(iter(local_hub.tokens)))
    assert env.items() <= os.environ.items()


def test_create_repo_exist_ok_conflict_and_delete(api: HfApi) -> None:
    url = api.create_repo("org/created")
    assert url.repo_id == "org/created"
    api.create_repo("org/created", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo("org/created")
    assert conflict.value.response.status_code == 409

    api.create_repo("org/created", repo_type="dataset")  # same id, other repo type: a different repo
    api.delete_repo("org/created")
    assert not api.repo_exists("org/created")
    assert api.repo_exists("org/created", repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo("org/created")


def test_upload_folder_then_download(api: HfApi, tmp_path: Path) -> None:
    folder = tmp_path / "upload"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"answer": 42}')
    weights = bytes(range(256)) * 40  # binary: stored in LFS
    (folder / "weights.bin").write_bytes(weights)
    (folder / "sub" / "notes.txt").write_text("hello")
    api.create_repo("org/files")
    first = api.upload_folder(folder_path=folder, repo_id="org/files", commit_message="add files")

    assert api.list_repo_files("org/files") == [".gitattributes", "config.json", "sub/notes.txt", "weights.bin"]
    assert api.file_exists("org/files", "sub/notes.txt")
    assert not api.file_exists("org/files", "missing.txt")
    info = api.model_info("org/files", files_metadata=True)
    assert info.sha == first.oid == api.list_repo_commits("org/files")[0].commit_id
    sizes = {sibling.rfilename: (sibling.size, sibling.lfs is not None) for sibling in info.siblings}
    assert sizes["weights.bin"] == (len(weights), True) and sizes["config.json"] == (14, False)

    top = {entry.path: type(entry).__name__ for entry in api.list_repo_tree("org/files")}
    assert top == {
        "sub": "RepoFolder",
        ".gitattributes": "RepoFile",
        "config.json": "RepoFile",
        "weights.bin": "RepoFile",
    }
    [notes] = api.list_repo_tree("org/files", path_in_repo="sub", expand=True)
    assert notes.path == "sub/notes.txt" and notes.last_commit.title == "add files"
    assert [p.path for p in api.get_paths_info("org/files", ["sub", "config.json", "nope"])] == ["sub", "config.json"]

    assert Path(hf_hub_download("org/files", "weights.bin")).read_bytes() == weights
    snapshot = Path(snapshot_download("org/files"))
    assert (snapshot / "sub" / "notes.txt").read_text() == "hello"
    assert HfFileSystem().cat_file("org/files/weights.bin", start=300, end=310) == weights[300:310]  # Range: 206

    second = api.delete_file("weights.bin", repo_id="org/files")
    assert not api.file_exists("org/files", "weights.bin")
    assert api.file_exists("org/files", "weights.bin", revision=first.oid)  # old commits stay readable
    assert [c.commit_id for c in api.list_repo_commits("org/files")][:2] == [second.oid, first.oid]
    assert api.list_repo_refs("org/files").branches[0].target_commit == second.oid


def test_missing_repo_file_revision_and_folder_raise_hub_errors(api: HfApi, tmp_path: Path) -> None:
    api.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id=api.create_repo("org/errors").repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/does-not-exist", "config.json", cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/errors", "missing.txt", cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/errors", "a.txt", revision="0" * 40, cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree("org/errors", path_in_repo="no-such-folder"))


def test_transformers_push_to_hub_then_from_pretrained() -> None:
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    config.num_labels = 3
    torch.manual_seed(0)
    model = ViTForImageClassification(config)
    model.push_to_hub("org/tiny-vit")

    loaded = ViTForImageClassification.from_pretrained("org/tiny-vit")
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def test_dataset_push_to_hub_then_stream() -> None:
    rows = {"idx": [0, 1, 2, 3, 4], "text": ["a", "b", "c", "d", "e"]}
    Dataset.from_dict(rows).push_to_hub("org/tiny-ds")

    streamed = list(load_dataset("org/tiny-ds", split="train", streaming=True))
    assert streamed == [{"idx": i, "text": t} for i, t in zip(rows["idx"], rows["text"], strict=True)]


def _write_webdataset_tar(path: Path, keys: list[str]) -> None:
    with tarfile.open(path, "w") as tar:
        for key in keys:
            png = io.BytesIO()
            Image.new("RGB", (4, 4), (int(key[-1]) * 40, 0, 0)).save(png, format="PNG")
            for name, payload in ((f"{key}.png", png.getvalue()), (f"{key}.txt", f"caption {key}".encode())):
                member = tarfile.TarInfo(name)
                member.size = len(payload)
                tar.addfile(member, io.BytesIO(payload))


def test_webdataset_tars_upload_folder_then_stream(api: HfApi, tmp_path: Path) -> None:
    _write_webdataset_tar(tmp_path / "train-00000.tar", ["s0", "s1", "s2"])
    _write_webdataset_tar(tmp_path / "train-00001.tar", ["s3", "s4", "s5"])
    api.create_repo("org/wds", repo_type="dataset")
    api.upload_folder(folder_path=tmp_path, repo_id="org/wds", repo_type="dataset")

    samples = list(load_dataset("org/wds", split="train", streaming=True))
    assert sorted(sample["__key__"] for sample in samples) == [f"s{i}" for i in range(6)]
    for sample in samples:
        assert sample["txt"] == f"caption {sample['__key__']}"
        assert sample["png"].size == (4, 4) and sample["png"].getpixel((0, 0))[0] == int(sample["__key__"][-1]) * 40


def test_model_card_push_load_and_validate(api: HfApi) -> None:
    task = {"task_type": "image-classification", "dataset_type": "toy-colors", "dataset_name": "Toy Colors"}
    result = EvalResult(**task, metric_type="accuracy", metric_value=0.93)
    data = ModelCardData(license="mit", library_name="transformers", model_name="carded", eval_results=[result])
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# carded\n\nA tiny card.\n")
    api.create_repo("org/carded")
    card.push_to_hub("org/carded")

    loaded = ModelCard.load("org/carded")
    assert loaded.data.eval_results == [result]
    assert api.model_info("org/carded").card_data.license == "mit"
    loaded.validate()

    # RepoCard keeps model-index as raw YAML, so the server (not the client) has to find the missing metric value.
    with pytest.raises(ValueError, match="metrics"):
        RepoCard(str(card).replace("value: 0.93", "verified: false")).validate(repo_type="model")
    with pytest.raises(ValueError, match="YAML"):  # create_commit validates a README before uploading anything
        api.upload_file(path_or_fileobj=b"---\nlicense: [mit\n---\n", path_in_repo="README.md", repo_id="org/carded")


def test_restart_on_the_same_store_keeps_repos(tmp_path: Path) -> None:
    store, cache = tmp_path / "store", tmp_path / "cache"
    tokens = {"hf_kept": ("keeper", ["org"])}
    with LocalHub(store, tokens=tokens) as hub:
        port, api = int(hub.endpoint.rsplit(":", 1)[1]), HfApi(endpoint=hub.endpoint, token="hf_kept")
        api.create_repo("org/kept", repo_type="dataset")
        commit = api.upload_file(path_or_fileobj=b"kept", path_in_repo="k.txt", repo_id="org/kept", repo_type="dataset")

    with LocalHub(store, port=port, tokens=tokens) as hub:
        api = HfApi(endpoint=hub.endpoint, token="hf_kept")
        assert api.dataset_info("org/kept").sha == commit.oid
        path = api.hf_hub_download("org/kept", "k.txt", repo_type="dataset", cache_dir=cache)
        assert Path(path).read_bytes() == b"kept"
