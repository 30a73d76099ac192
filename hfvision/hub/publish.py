"""Publish a trained checkpoint to the Hub (or to whatever endpoint `HF_ENDPOINT` names).

`build_hub_folder` turns a `save_pretrained` output folder into a Hub-ready folder holding only what a user needs:
config.json, safetensors weights, processor/tokenizer files, the remote-code `.py` files that `auto_map` /
`custom_pipelines` name (plus the sibling files they import, which transformers also fetches) and a README.md model
card. Pickle weights are refused and Trainer's pickled state (`training_args.bin`, `optimizer.pt`, `rng_state*.pth`,
...) is left behind: the Hub copy holds no pickle. The folder is checked before anything is sent: the weights
must be readable safetensors (no 0-byte or cut-short file), a shard index must name exactly the shards present, and
config, processor and remote code must be there. `publish` builds that folder in a temporary directory and uploads
it with `HfApi.create_repo` + `HfApi.upload_folder` in one commit that also deletes the repo's weight and index
files the folder does not have, so the repo's weights are exactly the folder's (a sharded checkpoint published over
a single-file one does not leave the old `model.safetensors` to be loaded instead).
"""

import fnmatch
import json
import logging
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard

__all__ = ["build_hub_folder", "check_repo_id", "publish"]

# Processor, tokenizer and generation files that save_pretrained may write next to the weights.
PROCESSOR_FILES = (
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "feature_extractor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
    "generation_config.json",
)
WEIGHT_INDEX_FILE = "model.safetensors.index.json"
# Pictures the model card shows (reconstruction grids, keypoint overlays, consistency plots), at the folder's top level.
CARD_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")
# Processor and tokenizer configs: a published model needs at least one of them to be usable by repo id.
PROCESSOR_CONFIGS = (
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "feature_extractor_config.json",
    "tokenizer_config.json",
)
# Pickle-based weight files: refused, because loading them runs arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Pickles that Trainer writes beside the model but that hold no weights; never uploaded, so not refused either.
IGNORED_PICKLES = ("training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")
# Remote files deleted by the upload's commit unless the folder has them: weights in any format, their indexes and
# pickles, so that the repo's weights are exactly the published folder's.
STALE_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "*.bin",
    "*.bin.index.json",
    "*.h5",
    "*.msgpack",
    "*.msgpack.index.json",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.pkl",
    "*.pickle",
)
_SHARD_NAME = re.compile(r".*-\d{5}-of-\d{5}\.safetensors")
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024

logger = logging.getLogger(__name__)

# The import forms transformers follows when it copies remote code (`get_relative_imports`).
_RELATIVE_IMPORT_PATTERNS = (
    re.compile(r"^\s*from\s+\.(\S+)\s+import", re.MULTILINE),
    re.compile(r"^\s*import\s+\.(\S+)\s*$", re.MULTILINE),
)


def _class_references(config: Any) -> Iterator[str]:
    """Yield every `"module.Class"` string under the `auto_map` / `custom_pipelines` keys of a JSON config."""
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "auto_map":
                # Values are "module.Class" or, for tokenizers, ["module.Slow", "module.Fast" | None].
                for reference in value.values():
                    yield from (r for r in (reference if isinstance(reference, list) else [reference]) if r)
            elif key == "custom_pipelines":
                yield from (spec["impl"] for spec in value.values() if spec.get("impl"))
            else:
                yield from _class_references(value)  # processor_config.json nests the image processor's own map
    elif isinstance(config, list):
        for item in config:
            yield from _class_references(item)


def _remote_code_files(checkpoint: Path, json_files: list[str]) -> list[str]:
    """Names of the `.py` files the checkpoint's configs point at, closed over their `from .x import y` imports.

    Args:
        checkpoint: the checkpoint folder.
        json_files: names of the JSON configs in it to scan.

    Returns:
        Sorted `.py` file names.

    Raises:
        ValueError: if a referenced module is missing or is imported from a subpackage (transformers copies only
            flat sibling files).
    """
    pending = []
    for name in json_files:
        for reference in _class_references(json.loads((checkpoint / name).read_text(encoding="utf-8"))):
            if "--" in reference:  # "org/repo--module.Class": the code lives in another Hub repo
                continue
            pending.append((reference.rsplit(".", 1)[0], name))
    found: set[str] = set()
    while pending:
        module, referrer = pending.pop()
        if "." in module:
            raise ValueError(
                f"{referrer} refers to module {module!r} in a subpackage; remote code must be flat sibling files"
            )
        file_name = f"{module}.py"
        if file_name in found:
            continue
        if not (checkpoint / file_name).is_file():
            raise ValueError(f"{referrer} needs {file_name}, which is not in {checkpoint}")
        found.add(file_name)
        source = (checkpoint / file_name).read_text(encoding="utf-8")
        for pattern in _RELATIVE_IMPORT_PATTERNS:
            pending.extend((imported, file_name) for imported in pattern.findall(source))
    return sorted(found)


def _check_safetensors(path: Path) -> None:
    """Raise ValueError unless `path` is a complete safetensors file: header length, JSON header, tensor data."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            header_size = int.from_bytes(file.read(8), "little") if size >= 8 else 0
            if size < 8 or header_size > min(size - 8, _MAX_SAFETENSORS_HEADER):
                raise ValueError(f"it is {size} bytes, too short for a safetensors header")
            header = json.loads(file.read(header_size))
        if not isinstance(header, dict):
            raise ValueError("its header is not a JSON object")
        data_end = max(
            (int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"), default=0
        )
        if 8 + header_size + data_end > size:
            raise ValueError(f"it is {size} bytes but its tensors need {8 + header_size + data_end}: it was cut short")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err


def _check_weights(checkpoint: Path, weights: list[str], top_level: list[str]) -> None:
    """Every weight file readable; with a shard index, exactly the shards it names; no shards without an index."""
    if WEIGHT_INDEX_FILE in top_level:
        try:
            index = json.loads((checkpoint / WEIGHT_INDEX_FILE).read_text(encoding="utf-8"))
            shards = set(index["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{checkpoint / WEIGHT_INDEX_FILE} is not a readable shard index: {err}") from err
        missing = sorted(shards - set(weights))
        if missing:
            raise ValueError(f"{WEIGHT_INDEX_FILE} names shards that are not in {checkpoint}: {missing}")
        unnamed = sorted(set(weights) - shards)
        if unnamed:
            raise ValueError(
                f"{checkpoint} holds weights its {WEIGHT_INDEX_FILE} does not name: {unnamed}; they would be "
                "uploaded but never loaded (stale files of another save?). Remove them."
            )
    else:
        shards = sorted(name for name in weights if _SHARD_NAME.fullmatch(name))
        if shards:
            raise ValueError(f"{checkpoint} holds shards {shards} but no {WEIGHT_INDEX_FILE} to load them with")
    for name in weights:
        _check_safetensors(checkpoint / name)


def _is_ignored_pickle(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in IGNORED_PICKLES)


def check_repo_id(repo_id: str) -> None:
    """Raise ValueError unless `repo_id` is `namespace/name` (the namespace is never guessed from the token)."""
    namespace, _, name = repo_id.partition("/")
    pattern = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
    if not (pattern.fullmatch(namespace) and pattern.fullmatch(name)) or ".." in repo_id:
        raise ValueError(f"repo_id must be 'namespace/name' (e.g. 'org/my-model'), not {repo_id!r}")


def build_hub_folder(checkpoint_dir: str | Path, out_dir: str | Path, card: ModelCard | None = None) -> list[str]:
    """Copy what a Hub model repo needs from a `save_pretrained` folder into `out_dir`.

    Copied: config.json; `*.safetensors` (and the shard index); processor and tokenizer files
    (`PROCESSOR_FILES` that exist); the `.py` files named by `auto_map` / `custom_pipelines` in config.json and the
    processor/tokenizer configs, with the sibling files they import; README.md, written from `card` when given, else
    copied from the checkpoint if it has one; images for the card (`CARD_IMAGE_SUFFIXES`). Only top-level files are
    considered; anything else (optimizer states,
    `training_args.bin`, logs) stays behind.

    Args:
        checkpoint_dir: a folder written by `model.save_pretrained` (+ `processor.save_pretrained`).
        out_dir: destination; created if missing, and must be empty if it exists.
        card: the model card to write as README.md.

    Returns:
        Sorted file names written to `out_dir`.

    Raises:
        ValueError: if the checkpoint holds pickle weights (`*.bin`, `*.pt`, `*.pth`, `*.pkl`, `*.pickle`,
            `*.ckpt`, except Trainer's state in `IGNORED_PICKLES`), has no safetensors weights, an empty, cut-short
            or unreadable one, a shard index naming missing shards (or shards the index does not name), no
            config.json, no processor or tokenizer config, incomplete remote code, or `out_dir` is not empty.
    """
    checkpoint = Path(checkpoint_dir)
    out = Path(out_dir)
    if not checkpoint.is_dir():
        raise ValueError(f"checkpoint_dir {checkpoint} is not a directory")
    top_level = sorted(entry.name for entry in checkpoint.iterdir() if entry.is_file())
    pickles = [name for name in top_level if name.endswith(PICKLE_SUFFIXES) and not _is_ignored_pickle(name)]
    if pickles:
        raise ValueError(
            f"{checkpoint} holds pickle weights {pickles}; only safetensors are published. Re-save the model with "
            "`model.save_pretrained(dir)` (safetensors by default) and remove the pickle files."
        )
    weights = [name for name in top_level if name.endswith(".safetensors")]
    if not weights:
        raise ValueError(f"{checkpoint} has no *.safetensors weights; save the model with `save_pretrained` first")
    if "config.json" not in top_level:
        raise ValueError(f"{checkpoint} has no config.json; it is not a `save_pretrained` folder")
    _check_weights(checkpoint, weights, top_level)
    processor_files = [name for name in PROCESSOR_FILES if name in top_level]
    if not any(name in PROCESSOR_CONFIGS for name in processor_files):
        raise ValueError(
            f"{checkpoint} has no processor or tokenizer config ({', '.join(PROCESSOR_CONFIGS)}); save the "
            "processor next to the model (`processor.save_pretrained(dir)`) so the repo can be used by its id"
        )
    for name in ["config.json", *(name for name in processor_files if name.endswith(".json"))]:
        try:
            json.loads((checkpoint / name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{checkpoint / name} is not readable JSON: {err}") from err
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"out_dir {out} is not empty")

    json_configs = ["config.json"] + [name for name in processor_files if name.endswith("config.json")]
    to_copy = ["config.json", *weights, *processor_files, *_remote_code_files(checkpoint, json_configs)]
    if WEIGHT_INDEX_FILE in top_level:
        to_copy.append(WEIGHT_INDEX_FILE)
    if card is None and "README.md" in top_level:
        to_copy.append("README.md")
    to_copy += [name for name in top_level if name.lower().endswith(CARD_IMAGE_SUFFIXES)]

    out.mkdir(parents=True, exist_ok=True)
    for name in dict.fromkeys(to_copy):
        shutil.copy2(checkpoint / name, out / name)
    if card is not None:
        card.save(out / "README.md")
    return sorted(entry.name for entry in out.iterdir())


def publish(
    checkpoint_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    card: ModelCard | None = None,
    allow_no_card: bool = False,
    token: str | None = None,
) -> list[str]:
    """Upload a checkpoint's Hub folder (see `build_hub_folder`) to a model repo.

    Talks to whichever endpoint huggingface_hub is configured for (`HF_ENDPOINT`, the real Hub by default) with the
    token it finds (`HF_TOKEN` or `hf auth login`).

    Args:
        checkpoint_dir: a `save_pretrained` folder.
        repo_id: the target repo, `"org/name"`; created if missing.
        private: create the repo as private (an existing repo keeps its visibility).
        revision: a branch to upload to; created from the default branch if missing. None uploads to `main`.
        commit_message: the commit message; defaults to one naming the checkpoint folder.
        dry_run: only build the folder and return what would be uploaded; nothing is sent.
        card: a model card to publish as README.md instead of the checkpoint's own README.md.
        allow_no_card: publish (with a warning) when there is neither `card` nor a README.md in the checkpoint.
        token: the Hub token; None uses huggingface_hub's (`HF_TOKEN` or `hf auth login`).

    Returns:
        Sorted paths (relative to the repo root) uploaded, or that would be uploaded with `dry_run`.

    Raises:
        ValueError: as `build_hub_folder`; if `repo_id` is not `namespace/name`; if there is no model card and
            not `allow_no_card`. Every check runs before the repo is created, so a failed one creates nothing.
    """
    check_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="hfvision-publish-") as staging:
        files = build_hub_folder(checkpoint_dir, staging, card)
        if "README.md" not in files:
            message = f"{checkpoint_dir} has no README.md model card and none was given"
            if not allow_no_card:
                raise ValueError(
                    f"{message}; render one with `hfvision card {checkpoint_dir}` (hfvision.hub.card.write_model_card) "
                    "or pass allow_no_card / --allow-no-card"
                )
            warnings.warn(f"{message}: the repo will have no model card", stacklevel=2)
        pickles = [name for name in files if name.endswith(PICKLE_SUFFIXES)]
        if pickles:  # build_hub_folder copies none; this guards the upload against any later change to it
            raise AssertionError(f"refusing to upload pickles {pickles}")
        if dry_run:
            return files
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        logger.info(
            "uploading %d files to %s; deleting its other weight files (%s)", len(files), repo_id, STALE_PATTERNS
        )
        api.upload_folder(
            repo_id=repo_id,
            folder_path=staging,
            revision=revision,
            commit_message=commit_message or f"Upload {Path(checkpoint_dir).name} with hfvision",
            delete_patterns=list(STALE_PATTERNS),  # files the folder also has are replaced, not deleted
        )
    return files
