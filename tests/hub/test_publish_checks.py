"""`hfvision publish` against the session's local Hub: the repo's weights become exactly the folder's, every check runs
before anything is created, branches are created, and no pickle is ever uploaded (the fine-tuning script's
`--push_to_hub` included)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from transformers import AutoModel, ViTConfig, ViTImageProcessor, ViTModel

from hfvision.cli import main
from hfvision.hub.publish import PICKLE_SUFFIXES, publish
from hfvision.models.pyramidclip import (
    PyramidClipConfig,
    PyramidClipForImageClassification,
    PyramidClipImageProcessor,
    PyramidClipProcessor,
    clip_tokenizer_from_bpe_file,
)
from tests.training.conftest import load_training_script, run_finetune

pytestmark = pytest.mark.usefixtures("local_hub")
CARD = "---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# tiny ViT\n"


def save_vit(path: Path, seed: int, max_shard_size: str | None = None, card: bool = True) -> ViTModel:
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=16, patch_size=8
    )
    torch.manual_seed(seed)
    model = ViTModel(config).eval()
    model.save_pretrained(path, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(path)
    if card:
        (path / "README.md").write_text(CARD)
    return model


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[name], sb[name]) for name in sa)


def test_republishing_makes_the_repo_weights_exactly_the_folders(tmp_path: Path) -> None:
    api = HfApi()
    single = save_vit(tmp_path / "single", seed=0)
    publish(tmp_path / "single", "org/resharded")
    sharded = save_vit(tmp_path / "sharded", seed=1, max_shard_size="40KB")
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("*.safetensors"))
    assert len(shards) > 1

    publish(tmp_path / "sharded", "org/resharded")
    files = api.list_repo_files("org/resharded")
    assert "model.safetensors" not in files
    assert [name for name in files if name.endswith(".safetensors")] == shards
    assert same_weights(AutoModel.from_pretrained("org/resharded"), sharded)

    publish(tmp_path / "single", "org/resharded")  # and back: the shards and their index go
    files = api.list_repo_files("org/resharded")
    assert [name for name in files if "safetensors" in name] == ["model.safetensors"]
    assert same_weights(AutoModel.from_pretrained("org/resharded"), single)


def _missing_shard(folder: Path) -> None:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    (folder / sorted(set(index["weight_map"].values()))[-1]).unlink()


def _stale_single_file_beside_shards(folder: Path) -> None:
    save_vit(folder.parent / "other", seed=3)
    (folder / "model.safetensors").write_bytes((folder.parent / "other" / "model.safetensors").read_bytes())


def _truncated(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


BREAKAGES = {
    "missing shard": (True, _missing_shard, "names shards that are not in"),
    "shards without index": (True, lambda f: (f / "model.safetensors.index.json").unlink(), "no model.safetensors"),
    "stale weights beside an index": (True, _stale_single_file_beside_shards, "does not name"),
    "0-byte safetensors": (False, lambda f: (f / "model.safetensors").write_bytes(b""), "not a readable safetensors"),
    "cut-short safetensors": (False, _truncated, "cut short"),
    "garbage safetensors": (
        False,
        lambda f: (f / "model.safetensors").write_bytes(b"\x08" + b"\0" * 7 + b"garbage!"),
        "not a readable",
    ),
    "no processor": (False, lambda f: (f / "preprocessor_config.json").unlink(), "processor"),
    "broken config": (False, lambda f: (f / "config.json").write_text("{"), "config.json"),
    "no card": (False, lambda f: (f / "README.md").unlink(), "allow-no-card"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_failed_check_creates_no_repo(tmp_path: Path, breakage: str) -> None:
    sharded, damage, message = BREAKAGES[breakage]
    folder = tmp_path / "ckpt"
    save_vit(folder, seed=0, max_shard_size="40KB" if sharded else None)
    damage(folder)
    repo_id = "org/broken-" + breakage.replace(" ", "-")
    with pytest.raises(ValueError, match=message):
        publish(folder, repo_id)
    assert not HfApi().repo_exists(repo_id)


def test_a_repo_id_without_namespace_creates_no_repo(tmp_path: Path) -> None:
    save_vit(tmp_path / "ckpt", seed=0)
    with pytest.raises(ValueError, match="namespace/name"):
        publish(tmp_path / "ckpt", "no-namespace")
    assert not HfApi().repo_exists(f"{HfApi().whoami()['name']}/no-namespace")


def test_publishing_without_a_card_needs_allow_no_card(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    save_vit(tmp_path / "ckpt", seed=0, card=False)
    with pytest.raises(SystemExit):  # the command's errors are one line on stderr, not a traceback
        main(["publish", str(tmp_path / "ckpt"), "org/uncarded"])
    assert "allow-no-card" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="no README.md model card"):
        main(["publish", str(tmp_path / "ckpt"), "org/uncarded", "--allow-no-card"])
    assert "README.md" not in HfApi().list_repo_files("org/uncarded")
    assert "model.safetensors" in HfApi().list_repo_files("org/uncarded")


def test_publish_to_a_revision_creates_the_branch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = save_vit(tmp_path / "ckpt", seed=0)
    main(["publish", str(tmp_path / "ckpt"), "org/branch-published", "--revision", "dev"])
    api = HfApi()
    assert {branch.name for branch in api.list_repo_refs("org/branch-published").branches} == {"main", "dev"}
    assert "model.safetensors" in api.list_repo_files("org/branch-published", revision="dev")
    assert "model.safetensors" not in api.list_repo_files("org/branch-published")
    assert same_weights(AutoModel.from_pretrained("org/branch-published", revision="dev"), model)
    main(["publish", str(tmp_path / "ckpt"), "org/branch-published", "--revision", "dev"])  # the branch exists now


def test_finetune_push_to_hub_uploads_no_pickles(tmp_path: Path) -> None:
    merges = tmp_path / "no_merges.txt.gz"
    with gzip.open(merges, "wt", encoding="utf-8") as handle:
        handle.write("#version: 0.2")
    tokenizer = clip_tokenizer_from_bpe_file(merges, model_max_length=77)
    config = PyramidClipConfig.from_preset(
        "pyramidclip-tiny", text_config={"vocab_size": len(tokenizer), "max_position_embeddings": 77}
    )
    torch.manual_seed(0)
    PyramidClipForImageClassification(config).save_pretrained(tmp_path / "ckpt")
    image_processor = PyramidClipImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    PyramidClipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp_path / "ckpt")

    args = ["--dataset", "synthetic", "--max_steps", "2", "--per_device_train_batch_size", "8",
            "--per_device_eval_batch_size", "64", "--save_strategy", "steps", "--save_steps", "1",
            "--use_cpu", "--report_to", "none", "--push_to_hub", "--hub_model_id", "org/finetuned-pushed",
            "--hub_strategy", "checkpoint"]  # fmt: skip
    run_finetune(load_training_script("finetune_image_classification"), tmp_path / "ckpt", tmp_path / "out", args)
    assert list((tmp_path / "out").glob("checkpoint-*/optimizer.pt"))  # pickles were there to be (not) uploaded
    files = HfApi().list_repo_files("org/finetuned-pushed")
    assert not [name for name in files if name.endswith(PICKLE_SUFFIXES)], files
    assert {"config.json", "model.safetensors", "README.md", "processor_config.json"} <= set(files)
