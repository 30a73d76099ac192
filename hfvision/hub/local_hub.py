"""A local, offline stand-in for the Hugging Face Hub.

`LocalHub` is a small HTTP server on 127.0.0.1 (standard library, plus PyYAML to read model-card metadata) that
speaks enough of the Hub protocol for the *unmodified* `huggingface_hub`, `transformers` and `datasets` clients to
publish to it and load from it: `create_repo`, `upload_folder`, `push_to_hub`, `create_branch`, `ModelCard.validate`,
`hf_hub_download`, `snapshot_download`, `from_pretrained("org/name")`, `load_dataset("org/ds", streaming=True)`.
Clients reach it through the variables of `client_env`, set before `huggingface_hub` is imported.

Access control (as on the Hub, with tokens fixed when the server starts):

* Tokens map to a user and the organisations it belongs to: `LocalHub(store, tokens={"hf_xyz": ("alice", ["org"])})`,
  or `hfvision hub serve --token alice:hf_xyz:org` (repeatable). Without tokens one is generated for `local-user`,
  member of `org`, and printed by `hfvision hub serve`.
* Every write (create, delete, commit, pre-upload, LFS batch, branch) needs `Authorization: Bearer <token>`: 401
  without one, 401 for an unknown token, 403 when the repo's namespace is neither the user nor one of its orgs.
  LFS objects are `PUT` to the `href` the (authenticated) batch call returned, which carries an HMAC signature.
* `private=True` repos are readable only by tokens that may write to their namespace; to anyone else they answer
  404 `RepoNotFound`, as the Hub does. Public repos are readable without a token.
* Requests whose `Host` is not one of the server's own addresses are refused (400), against DNS rebinding; URLs in
  answers are built from the (checked) `Host` only.
* Limits: JSON / NDJSON bodies up to `max_body_size`, LFS objects up to `max_lfs_size` (413 above); files committed
  inline ("regular", non-LFS) up to 10 MB as on the Hub (413); paths in a repo without empty, `.` or `..`
  segments, control characters, a `.git` segment, segments over 255 bytes or paths over 1000 bytes (400). Malformed
  JSON, NDJSON or `Content-Length` answer 400, never 500.

Endpoints implemented (`{type}` is `models`, `datasets` or `spaces`; `[datasets/]` is `datasets/` or `spaces/` for
those repos and absent for models):

* `POST /api/repos/create` (409 on a duplicate; the client's `exist_ok` turns it into success; `private` /
  `visibility` honoured), `DELETE /api/repos/delete`
* `GET /api/whoami-v2`: the token's user and its organisations
* `POST /api/validate-yaml`: the README front matter must parse to a YAML mapping, and a `model-index` must carry
  the keys `huggingface_hub.repocard_data.model_index_to_eval_results` requires (else 400 with the errors)
* `GET /api/{type}/{org}/{name}[/revision/{rev}]`: repo info with `sha`, `siblings` (sizes and LFS info with
  `blobs=1`), `cardData`, `lastModified`, `private`
* `GET /api/{type}/{org}/{name}/tree/{rev}[/{path}]?recursive=&expand=` (404 `EntryNotFound` for a missing folder)
* `POST /api/{type}/{org}/{name}/paths-info/{rev}`, `GET .../refs`, `GET .../commits/{rev}`
* `POST|DELETE /api/{type}/{org}/{name}/branch/{branch}` (`create_branch` from `startingPoint`, default `main`;
  409 when it exists; `delete_branch`, never `main`)
* `POST /api/{type}/{org}/{name}/preupload/{rev}`: "lfs" for binary samples, LFS extensions and files over 10 MB,
  else "regular"; returns the stored oid so clients skip unchanged files
* `POST /api/{type}/{org}/{name}/commit/{rev}`: NDJSON `header`, `file` (base64), `lfsFile`, `deletedFile`,
  `deletedFolder` on the head of branch `rev`; 412 when `parentCommit` is not that head
* `POST /[datasets/]{org}/{name}.git/info/lfs/objects/batch` (basic transfer) and `PUT` of each object to the
  signed `href` it returns (the sha256 is checked)
* `HEAD|GET /[datasets/]{org}/{name}/resolve/{rev}/{path}` with `X-Repo-Commit`, `ETag`, `Content-Length`, and
  `Range` (206, or 416 past the end)

Errors carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) so `huggingface_hub` raises
`RepositoryNotFoundError`, `RevisionNotFoundError` and `EntryNotFoundError`. Anything else answers a plain 404.

Not implemented: gated repos, token scopes (every token may read and write its namespaces), rate limits, TLS (keep
the default loopback bind), changing a repo's visibility after creation, Xet (uploads need `HF_HUB_DISABLE_XET=1`),
tags, pull requests (`create_pr`), running Spaces (a space repo is stored and served as files only, which is what
`evaluate.load("org/metric")` reads), repo search and listing, multipart LFS, pagination (every listing is one
page), redirects, repo ids without a namespace. A revision is a branch name or a full 40-hex commit sha. File `oid`s
follow git (blob SHA-1 of the content, or of the LFS pointer), but commit and folder ids are SHA-1s of this store's
own records, not git objects. A new repo starts, as on the Hub, with an "initial commit" holding a `.gitattributes`.

Store layout (plain files, persistent across restarts):

    <store>/<models|datasets|spaces>/<org>/<name>/commits.jsonl    the repo's log, oldest first: its settings, commits
                                                            (each with the full manifest {path: {sha256, size,
                                                            oid, lfs}} of its tree and the branch it moved) and
                                                            branch creations / deletions. Rewritten whole through a
                                                            temporary file and `os.replace` on every change, so a
                                                            crash never leaves half a record; a torn last line
                                                            (damage from outside) is ignored and dropped on the
                                                            next write.
    <store>/<models|datasets>/<org>/<name>/blobs/<sha256>   file contents, content-addressed

Temporary files (`.tmp-*`) of uploads cut short are deleted when the upload fails and when a store is opened.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

logger = logging.getLogger(__name__)

USER = "local-user"  # the user of a generated token
DEFAULT_ORGS = ("org",)  # ... and its organisations: the namespace the demos, docs and tests publish to
MAIN = "main"
# Always stored in LFS whatever their content (a subset of the Hub's default .gitattributes).
LFS_EXTENSIONS = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".npy", ".npz", ".pkl", ".pickle",
    ".parquet", ".arrow", ".tar", ".zip", ".gz", ".tgz", ".zst", ".png", ".jpg", ".jpeg", ".webp", ".mp4", ".wav",
)  # fmt: skip
REGULAR_MAX_SIZE = 10 * 1024 * 1024  # the Hub refuses larger non-LFS files
MAX_BODY_SIZE = 256 * 1024 * 1024  # JSON / NDJSON request bodies (a commit carries its regular files inline)
MAX_LFS_SIZE = 50 * 1000**3  # one LFS object, the Hub's per-file limit
MAX_PATH_BYTES = 1000
MAX_SEGMENT_BYTES = 255
GITATTRIBUTES = "".join(f"*{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in LFS_EXTENSIONS).encode()
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_BRANCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FRONT_MATTER = re.compile(r"^\s*---[\r\n]+([\s\S]*?)[\r\n]+---(?:\r?\n|$)")
_TMP_PREFIX = ".tmp-"


class HubError(Exception):
    """An error answered to the client; `code` goes to `X-Error-Code`, which selects huggingface_hub's exception."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _repo_not_found(repo_id: str) -> HubError:
    return HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _checked_path(path: Any) -> str:
    """`path` if it is a valid file or folder path inside a repo, else a 400."""
    if not isinstance(path, str) or not path:
        raise HubError(400, f"Invalid path in repo: {path!r}")
    segments = path.split("/")
    problem = None
    if _CONTROL.search(path):
        problem = "control characters (NUL, newline, ...) are not allowed"
    elif len(path.encode()) > MAX_PATH_BYTES:
        problem = f"longer than {MAX_PATH_BYTES} bytes"
    elif any(segment in ("", ".", "..") for segment in segments):
        problem = "empty, '.' and '..' segments are not allowed"
    elif ".git" in segments:
        problem = "'.git' is reserved"
    elif any(len(segment.encode()) > MAX_SEGMENT_BYTES for segment in segments):
        problem = f"a name is longer than {MAX_SEGMENT_BYTES} bytes"
    if problem:
        raise HubError(400, f"Invalid path in repo {path[:100]!r}: {problem}")
    return path


def _checked_branch(branch: str) -> str:
    if (
        not _BRANCH.fullmatch(branch)
        or ".." in branch
        or "//" in branch
        or branch.endswith(("/", ".lock"))
        or branch.startswith("refs/")
        or _COMMIT_SHA.fullmatch(branch)
    ):
        raise HubError(400, f"Invalid branch name: {branch[:100]!r}")
    return branch


def _wants_lfs(path: str, sample: bytes, size: int) -> bool:
    return size > REGULAR_MAX_SIZE or path.lower().endswith(LFS_EXTENSIONS) or b"\0" in sample


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true")


def _atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` by `data` all at once: readers and a crash see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- tokens ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubUser:
    """The user a token stands for, and the organisations it belongs to (it may write to those namespaces)."""

    name: str
    orgs: tuple[str, ...] = ()

    def may_write(self, namespace: str) -> bool:
        return namespace == self.name or namespace in self.orgs


def generate_token() -> str:
    """A fresh random token, in the Hub's `hf_` format."""
    return "hf_" + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")


def parse_token_spec(spec: str) -> tuple[str, tuple[str, list[str]]]:
    """Parse a `--token` value of `hfvision hub serve`: `NAME:TOKEN` or `NAME:TOKEN:ORG1,ORG2`.

    Returns:
        `(token, (name, orgs))`, an item of `LocalHub`'s `tokens` mapping.

    Raises:
        ValueError: if `spec` does not have that form or a name is not a valid Hub namespace.
    """
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError(f"--token must be NAME:TOKEN or NAME:TOKEN:ORG1,ORG2, not {spec!r}")
    orgs = [org for org in parts[2].split(",") if org] if len(parts) == 3 else []
    return parts[1], (parts[0], orgs)


def _users(tokens: Mapping[str, tuple[str, Sequence[str]]]) -> dict[str, HubUser]:
    users = {}
    for token, (name, orgs) in tokens.items():
        for namespace in (name, *orgs):
            if not _NAME.fullmatch(namespace):
                raise ValueError(f"Invalid user or organisation name for a local Hub token: {namespace!r}")
        if not token or _CONTROL.search(token) or " " in token:
            raise ValueError("A local Hub token must be non-empty, without spaces or control characters")
        users[token] = HubUser(name, tuple(orgs))
    return users


# -- the store ---------------------------------------------------------------------------------------------------------


@dataclass
class RepoState:
    """What a repo's log says: its commits by id, its branch heads and its visibility."""

    commits: dict[str, dict[str, Any]]
    refs: dict[str, str]
    private: bool


class Repo:
    """One repo on disk: a log of settings, commits and branch changes, and a folder of content-addressed blobs."""

    def __init__(self, store_dir: Path, kind: str, repo_id: str):
        namespace, _, name = repo_id.partition("/")
        if not (_NAME.fullmatch(namespace) and _NAME.fullmatch(name)) or ".." in repo_id or name.endswith(".git"):
            raise HubError(400, f"Invalid repo id: {repo_id[:200]!r}")
        self.kind, self.repo_id, self.author = kind, repo_id, namespace
        self.dir = store_dir / kind / namespace / name
        self.log = self.dir / "commits.jsonl"
        self.url_prefix = "" if kind == "models" else f"{kind}/"

    @property
    def exists(self) -> bool:
        return self.log.is_file()

    def _log_text(self) -> str:
        """The log up to its last complete line; a torn last line (a write cut short from outside) is dropped."""
        try:
            text = self.log.read_text()
        except FileNotFoundError:
            raise _repo_not_found(self.repo_id) from None
        complete = text[: text.rfind("\n") + 1]
        if len(complete) < len(text):
            logger.warning("%s: ignoring the torn last line of %s", self.repo_id, self.log)
        return complete

    def state(self) -> RepoState:
        commits: dict[str, dict[str, Any]] = {}
        refs: dict[str, str] = {}
        private = False
        for number, line in enumerate(self._log_text().splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError:
                raise HubError(500, f"{self.repo_id}: line {number} of its commit log is corrupt") from None
            if "settings" in record:
                private = bool(record["settings"].get("private", private))
            elif "ref" in record:  # a branch created or deleted
                if record["target"] is None:
                    refs.pop(record["ref"], None)
                else:
                    refs[record["ref"]] = record["target"]
            else:  # a commit moves the head of its branch (stores written before branches existed: main)
                commits[record["id"]] = record
                refs[record.get("branch", MAIN)] = record["id"]
        return RepoState(commits, refs, private)

    @property
    def private(self) -> bool:
        return self.exists and self.state().private

    def history(self, revision: str) -> list[dict[str, Any]]:
        """Commits reachable from `revision` (a branch or a full commit sha), newest first."""
        state = self.state()
        head = state.refs.get(revision)
        if head is None and _COMMIT_SHA.fullmatch(revision) and revision in state.commits:
            head = revision
        if head is None:
            raise HubError(404, f"Invalid rev id: {revision[:200]}", "RevisionNotFound")
        history = []
        while head is not None:
            history.append(state.commits[head])
            head = state.commits[head]["parent"]
        return history

    def blob(self, sha256: str) -> Path:
        return self.dir / "blobs" / sha256

    def put_blob(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        if not self.blob(sha256).is_file():
            _atomic_write(self.blob(sha256), content)
        return sha256

    def append(self, *records: dict[str, Any]) -> None:
        """Add `records` to the log, atomically (the caller holds the store's lock)."""
        text = self._log_text() if self.exists else ""
        _atomic_write(self.log, (text + "".join(json.dumps(record) + "\n" for record in records)).encode())

    @staticmethod
    def new_commit(
        parent: str | None, branch: str, files: dict[str, dict[str, Any]], title: str, message: str
    ) -> dict[str, Any]:
        record = {"parent": parent, "branch": branch, "title": title, "message": message, "date": _now()}
        record["files"] = files
        return {"id": hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest(), **record}


class HubStore:
    """All repos under one folder. Writes (create, delete, commit, branches) are serialised by one lock."""

    def __init__(self, store_dir: str | Path):
        self.dir = Path(store_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        # Left by uploads and writes that were cut short (a killed server): never part of a repo.
        for pattern in (f"*/*/*/{_TMP_PREFIX}*", f"*/*/*/blobs/{_TMP_PREFIX}*"):
            for leftover in self.dir.glob(pattern):
                with contextlib.suppress(OSError):
                    leftover.unlink()
                    logger.info("local hub: removed the temporary file %s of an interrupted write", leftover)

    def repo(self, kind: str, repo_id: str, must_exist: bool = True) -> Repo:
        repo = Repo(self.dir, kind, repo_id)
        if must_exist and not repo.exists:
            raise _repo_not_found(repo_id)
        return repo

    def create(self, repo: Repo, private: bool = False) -> bool:
        """Create `repo` with the Hub's initial commit; False if it already exists."""
        with self.lock:
            if repo.exists:
                return False
            files = {".gitattributes": _regular_entry(GITATTRIBUTES, repo.put_blob(GITATTRIBUTES))}
            settings = {"settings": {"private": private}, "date": _now()}
            repo.append(settings, Repo.new_commit(None, MAIN, files, "initial commit", ""))
            return True

    def delete(self, repo: Repo) -> None:
        with self.lock:
            if not repo.exists:
                raise _repo_not_found(repo.repo_id)
            shutil.rmtree(repo.dir)

    def create_branch(self, repo: Repo, branch: str, starting_point: str) -> None:
        with self.lock:
            if branch in repo.state().refs:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            target = repo.history(starting_point)[0]["id"]
            repo.append({"ref": branch, "target": target, "date": _now()})

    def delete_branch(self, repo: Repo, branch: str) -> None:
        with self.lock:
            if branch == MAIN:
                raise HubError(403, f"The default branch {MAIN!r} cannot be deleted")
            if branch not in repo.state().refs:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            repo.append({"ref": branch, "target": None, "date": _now()})

    def commit(
        self, repo: Repo, revision: str, header: dict[str, Any], operations: list[dict[str, Any]], author: str = USER
    ) -> dict:
        """Apply NDJSON commit `operations` on top of branch `revision`'s head and record the new commit."""
        with self.lock:
            state = repo.state()
            if revision not in state.refs:
                raise HubError(
                    404, f"Invalid rev id: {revision[:200]} (commits go to an existing branch)", "RevisionNotFound"
                )
            head = state.commits[state.refs[revision]]
            parent = header.get("parentCommit")
            if parent is not None and parent != head["id"]:
                raise HubError(412, f"A commit has happened since {parent}: the head of {revision} is {head['id']}")
            files = dict(head["files"])
            for operation in operations:
                key, value = operation["key"], operation["value"]
                path = _checked_path(value["path"].rstrip("/") if key == "deletedFolder" else value["path"])
                if key == "file":
                    encoding = value.get("encoding", "base64")
                    content = (
                        base64.b64decode(value["content"], validate=True)
                        if encoding == "base64"
                        else value["content"].encode()
                    )
                    if len(content) > REGULAR_MAX_SIZE:
                        raise HubError(
                            413, f"{path} is {len(content)} bytes: files over {REGULAR_MAX_SIZE} bytes must use LFS"
                        )
                    files[path] = _regular_entry(content, repo.put_blob(content))
                elif key == "lfsFile":
                    oid = value["oid"]
                    if not isinstance(oid, str) or not _SHA256.fullmatch(oid) or not repo.blob(oid).is_file():
                        raise HubError(422, f"LFS object {str(oid)[:64]} of {path} was never uploaded")
                    files[path] = _lfs_entry(oid, repo.blob(oid).stat().st_size)
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    inside = [name for name in files if name.startswith(path + "/")]
                    if not inside:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for name in inside:
                        del files[name]
                else:
                    raise HubError(400, f"Unsupported commit operation: {str(key)[:50]!r}")
            title = header.get("summary") or "Upload files"
            commit = Repo.new_commit(head["id"], revision, files, str(title), str(header.get("description", "")))
            commit["author"] = author
            repo.append(commit)
            return commit


def _regular_entry(content: bytes, sha256: str) -> dict[str, Any]:
    """Manifest entry of a file stored in git; `oid` is its git blob id, as on the Hub."""
    return {"sha256": sha256, "size": len(content), "oid": _git_oid(content), "lfs": False}


def _lfs_entry(sha256: str, size: int) -> dict[str, Any]:
    """Manifest entry of an LFS file; its git blob (and `oid`) is the LFS pointer."""
    return {"sha256": sha256, "size": size, "oid": _git_oid(_lfs_pointer(sha256, size)), "lfs": True}


def _pointer_size(entry: dict[str, Any]) -> int:
    return len(_lfs_pointer(entry["sha256"], entry["size"]))


def _folders(files: dict[str, Any]) -> set[str]:
    return {str(parent) for path in files for parent in PurePosixPath(path).parents if str(parent) != "."}


def _last_commit(history: list[dict[str, Any]], path: str) -> dict[str, str]:
    """The newest commit in `history` (newest first) that changed the file or folder at `path`."""

    def view(commit: dict[str, Any]) -> dict[str, str]:
        return {name: e["oid"] for name, e in commit["files"].items() if name == path or name.startswith(path + "/")}

    for commit, parent in zip(history, [*history[1:], None], strict=True):
        if parent is None or view(commit) != view(parent):
            return {"id": commit["id"], "title": commit["title"], "date": commit["date"]}
    raise AssertionError("unreachable: the root commit always changes what it holds")


def _path_info(history: list[dict[str, Any]], path: str, expand: bool) -> dict[str, Any]:
    """A tree / paths-info entry for the file or folder `path` at `history[0]`."""
    files = history[0]["files"]
    entry = files.get(path)
    if entry is not None:
        info: dict[str, Any] = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
        if entry["lfs"]:
            info["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": _pointer_size(entry)}
    else:
        listing = "".join(f"{name} {e['oid']}\n" for name, e in sorted(files.items()) if name.startswith(path + "/"))
        info = {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": path}
    if expand:
        info["lastCommit"] = _last_commit(history, path)
    return info


def _card_data(repo: Repo, files: dict[str, Any]) -> dict[str, Any]:
    """The README front matter, as the Hub returns it in `cardData` ({} when absent or not a mapping)."""
    if "README.md" not in files:
        return {}
    match = _FRONT_MATTER.match(repo.blob(files["README.md"]["sha256"]).read_text(errors="replace"))
    try:
        metadata = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError:
        return {}
    return metadata if isinstance(metadata, dict) else {}


def _metadata_errors(content: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a README's YAML front matter, as the Hub's validate-yaml endpoint reports them."""
    match = _FRONT_MATTER.match(content)
    try:
        metadata = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError as err:
        return [f"Invalid YAML in the metadata block: {err}"], []
    if metadata is None:
        return [], ["Empty or missing yaml metadata in repo card"]
    if not isinstance(metadata, dict):
        return ["The metadata block must be a YAML mapping"], []
    if "model-index" not in metadata:
        return [], []
    errors: list[str] = []
    model_index = metadata["model-index"]
    if not isinstance(model_index, list) or not model_index:
        return ['"model-index" must be a non-empty list'], []

    def require(block: Any, keys: tuple[str, ...], where: str) -> None:
        for key in keys:
            if not isinstance(block, dict) or block.get(key) in (None, ""):
                errors.append(f'"{where}.{key}" is required')

    for i, model in enumerate(model_index):
        require(model, ("name", "results"), f"model-index[{i}]")
        results = model.get("results") if isinstance(model, dict) else None
        for j, result in enumerate(results if isinstance(results, list) else []):
            where = f"model-index[{i}].results[{j}]"
            require(result, ("task", "dataset", "metrics"), where)
            result = result if isinstance(result, dict) else {}
            require(result.get("task"), ("type",), f"{where}.task")
            require(result.get("dataset"), ("type", "name"), f"{where}.dataset")
            metrics = result.get("metrics")
            for k, metric in enumerate(metrics if isinstance(metrics, list) else []):
                require(metric, ("type", "value"), f"{where}.metrics[{k}]")
    return errors, []


_REPO = r"(?P<org>[^/]+)/(?P<name>[^/]+)"
# The `type` of create/delete requests -> the store's folder; spaces only as file repos (e.g. `evaluate` metric
# modules, which `evaluate.load("org/name")` reads from /spaces/org/name/resolve/...), nothing is run.
_REPO_KINDS = {None: "models", "model": "models", "dataset": "datasets", "space": "spaces"}
_API = rf"/api/(?P<kind>models|datasets|spaces)/{_REPO}"
_GIT = rf"/(?:(?P<kind>datasets|spaces)/)?{_REPO}"
# (methods, pattern on the still-quoted URL path, handler method name); the first match wins.
_ROUTES = [
    (("POST",), r"/api/repos/create", "_create_repo"),
    (("DELETE",), r"/api/repos/delete", "_delete_repo"),
    (("GET",), r"/api/whoami-v2", "_whoami"),
    (("POST",), r"/api/validate-yaml", "_validate_yaml"),
    (("GET",), rf"{_API}(?:/revision/(?P<rev>[^/]+))?", "_repo_info"),
    (("GET",), rf"{_API}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "_tree"),
    (("POST",), rf"{_API}/paths-info/(?P<rev>[^/]+)", "_paths_info"),
    (("GET",), rf"{_API}/refs", "_refs"),
    (("GET",), rf"{_API}/commits/(?P<rev>[^/]+)", "_commits"),
    (("POST", "DELETE"), rf"{_API}/branch/(?P<branch>[^/]+)", "_branch"),
    (("POST",), rf"{_API}/preupload/(?P<rev>[^/]+)", "_preupload"),
    (("POST",), rf"{_API}/commit/(?P<rev>[^/]+)", "_commit"),
    (("POST",), rf"{_GIT}\.git/info/lfs/objects/batch", "_lfs_batch"),
    (("PUT",), rf"{_GIT}\.git/info/lfs/objects/(?P<oid>[0-9a-f]{{64}})", "_lfs_upload"),
    (("GET", "HEAD"), rf"{_GIT}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "_resolve"),
]
_COMPILED_ROUTES = [(methods, re.compile(pattern), handler) for methods, pattern, handler in _ROUTES]
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class _HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        store: HubStore,
        users: dict[str, HubUser],
        allowed_hosts: Sequence[str],
        max_body_size: int,
        max_lfs_size: int,
    ):
        super().__init__(address, _HubHandler)
        self.store, self.users = store, users
        self.max_body_size, self.max_lfs_size = max_body_size, max_lfs_size
        self.lfs_secret = secrets.token_bytes(32)  # signs the LFS upload URLs handed out by the batch endpoint
        # The Host values clients may send: the bound address, the loopback names for a loopback or wildcard bind,
        # and `allowed_hosts`.
        names = {address[0], *allowed_hosts} - {"", "0.0.0.0", "::"}
        if address[0] in (*_LOOPBACK, "", "0.0.0.0", "::"):
            names.update(_LOOPBACK)
        port = self.server_address[1]
        self.allowed_hosts = {(f"[{name}]" if ":" in name else name).lower() + f":{port}" for name in names}


class _HubHandler(BaseHTTPRequestHandler):
    """One request. HTTP/1.0: every response closes its connection, so no client holds a stale pooled socket."""

    server: _HubServer
    server_version = "hfvision-local-hub"

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    # -- plumbing --------------------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        self.body_chunks: Iterator[bytes] = iter(())
        self.user: HubUser | None = None
        try:
            limit = self.server.max_lfs_size if self.command == "PUT" else self.server.max_body_size
            self.body_chunks = self._iter_body(self._content_length(limit), limit)
            host = (self.headers.get("Host") or "").strip().lower()
            if host not in self.server.allowed_hosts:  # a foreign name pointing here (DNS rebinding)
                raise HubError(400, "Invalid Host header: this server answers only to its own address")
            self.user = self._authenticate()
            for methods, pattern, handler in _COMPILED_ROUTES:
                match = pattern.fullmatch(url.path)
                if match and self.command in methods:
                    getattr(self, handler)(**match.groupdict())
                    break
            else:
                raise HubError(404, f"Not found: {self.command} {url.path[:200]}")
        except HubError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away mid-download (e.g. a streaming reader that has read enough)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            # A field missing or of the wrong type, bad base64 or JSON in a request the handler did not check field
            # by field: the client's fault, not the server's.
            logger.debug("local hub: malformed %s %s", self.command, self.path, exc_info=True)
            self._send_error(HubError(400, f"Malformed request: {type(err).__name__}: {str(err)[:200]}"))
        except Exception as err:
            logger.exception("local hub: %s %s failed", self.command, self.path)
            self._send_json({"error": f"{type(err).__name__}: {err}"}, 500)
        with contextlib.suppress(HubError, OSError, ValueError):
            for _ in self.body_chunks:  # drain what the handler left unread, so closing does not reset the socket
                pass

    def _send_error(self, err: HubError) -> None:
        header_message = " ".join(err.message.split()).encode("latin-1", "replace").decode("latin-1")
        headers = {"X-Error-Message": header_message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._send_json({"error": err.message}, err.status, headers)

    def _content_length(self, limit: int) -> int | None:
        """The declared body size (None when chunked), checked against `limit` before any of the body is read."""
        values = {value.strip() for value in self.headers.get_all("Content-Length") or []}
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            if values:
                raise HubError(400, "Both Content-Length and Transfer-Encoding: chunked were given")
            return None
        if len(values) > 1 or any(not re.fullmatch(r"\d{1,19}", value) for value in values):
            raise HubError(400, "Malformed Content-Length header")
        length = int(values.pop()) if values else 0
        if length > limit:
            self.close_connection = True
            raise HubError(413, f"Request body of {length} bytes is over this server's limit of {limit} bytes")
        return length

    def _iter_body(self, length: int | None, limit: int) -> Iterator[bytes]:
        if length is None:  # chunked
            total = 0
            while True:
                size_field = self.rfile.readline(64).split(b";")[0].strip()
                if not re.fullmatch(rb"[0-9a-fA-F]{1,16}", size_field):
                    raise HubError(400, "Malformed chunked request body")
                size = int(size_field, 16)
                if size == 0:
                    break
                total += size
                if total > limit:
                    self.close_connection = True
                    raise HubError(413, f"Request body is over this server's limit of {limit} bytes")
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise HubError(400, "Truncated request body")
                yield chunk
                self.rfile.readline(8)
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                raise HubError(400, "Truncated request body")
            remaining -= len(chunk)
            yield chunk

    def _authenticate(self) -> HubUser | None:
        header = self.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.strip().partition(" ")
        user = self.server.users.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:  # huggingface_hub shows this exact message as a bad token, not as a missing repo
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _json_object(self) -> dict[str, Any]:
        try:
            payload = json.loads(b"".join(self.body_chunks) or b"{}")
        except ValueError:
            raise HubError(400, "Malformed JSON body") from None
        if not isinstance(payload, dict):
            raise HubError(400, "The JSON body must be an object")
        return payload

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload, default=str).encode(), "application/json", headers)

    @property
    def _endpoint(self) -> str:
        return f"http://{self.headers['Host'].strip().lower()}"  # checked in _dispatch: one of the server's names

    def _repo(self, kind: str | None, org: str, name: str, *, write: bool = False, must_exist: bool = True) -> Repo:
        """The repo named in the URL, if this request's token may see it (and write to it, with `write`).

        Writes: 401 without a token, 403 outside the user's namespaces. Reads of a private repo by anyone who may
        not write to its namespace: 404, as if it did not exist (the Hub's answer).
        """
        repo = self.server.store.repo(kind or "models", f"{unquote(org)}/{unquote(name)}", must_exist=False)
        member = self.user is not None and self.user.may_write(repo.author)
        if write:
            if self.user is None:
                raise HubError(401, "A token is required to write to this hub: send Authorization: Bearer <token>")
            if not member:
                raise HubError(403, f"{self.user.name} may not write to the namespace {repo.author!r}")
        elif not member and repo.private:
            raise _repo_not_found(repo.repo_id)
        if must_exist and not repo.exists:
            raise _repo_not_found(repo.repo_id)
        return repo

    # -- repos ----------------------------------------------------------------------------------------------------

    def _create_repo(self) -> None:
        payload = self._json_object()
        kind = _REPO_KINDS.get(payload.get("type"))
        if kind is None:
            raise HubError(400, f"Repo type {str(payload.get('type'))[:50]!r} is not supported by the local hub")
        if self.user is None:
            raise HubError(401, "A token is required to create a repo: send Authorization: Bearer <token>")
        name = payload.get("name")
        if not isinstance(name, str):
            raise HubError(400, "The repo name is missing")
        repo = self._repo(kind, payload.get("organization") or self.user.name, name, write=True, must_exist=False)
        url = f"{self._endpoint}/{repo.url_prefix}{repo.repo_id}"
        private = payload.get("private") is True or payload.get("visibility") == "private"
        if not self.server.store.create(repo, private=private):
            message = f"You already created this {kind[:-1]} repo"
            self._send_json({"error": message, "url": url}, 409, {"X-Error-Message": message})
            return
        self._send_json({"url": url, "name": repo.repo_id, "id": repo.repo_id})

    def _delete_repo(self) -> None:
        payload = self._json_object()
        kind = _REPO_KINDS.get(payload.get("type"), "models")
        if self.user is None:
            raise HubError(401, "A token is required to delete a repo: send Authorization: Bearer <token>")
        namespace = payload.get("organization") or self.user.name
        self.server.store.delete(self._repo(kind, namespace, payload["name"], write=True))
        self._send_json({})

    def _whoami(self) -> None:
        if self.user is None:
            raise HubError(401, "Invalid user token: send Authorization: Bearer <token>")
        token = {"displayName": "local", "role": "write"}
        orgs = [{"type": "org", "name": org, "fullname": org, "roleInOrg": "write"} for org in self.user.orgs]
        user = {"type": "user", "id": self.user.name, "name": self.user.name, "fullname": self.user.name}
        self._send_json({**user, "orgs": orgs, "auth": {"type": "access_token", "accessToken": token}})

    def _validate_yaml(self) -> None:
        content = self._json_object().get("content", "")
        if not isinstance(content, str):
            raise HubError(400, "content must be a string")
        errors, warnings = _metadata_errors(content)
        payload = {"errors": [{"message": e} for e in errors], "warnings": [{"message": w} for w in warnings]}
        if errors:
            payload["error"] = "Invalid metadata in README.md: " + "; ".join(errors)
        self._send_json(payload, 400 if errors else 200)

    def _repo_info(self, kind: str, org: str, name: str, rev: str | None) -> None:
        repo = self._repo(kind, org, name)
        history = repo.history(unquote(rev or MAIN))
        files = history[0]["files"]
        siblings = []
        for path in sorted(files):
            sibling: dict[str, Any] = {"rfilename": path}
            entry = files[path]
            if _truthy(self.query.get("blobs")):
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    sibling["lfs"] = {
                        "sha256": entry["sha256"],
                        "size": entry["size"],
                        "pointerSize": _pointer_size(entry),
                    }
            siblings.append(sibling)
        card = _card_data(repo, files)
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.author,
            "sha": history[0]["id"],
            "lastModified": history[0]["date"],
            "createdAt": history[-1]["date"],
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": card.get("tags") if isinstance(card.get("tags"), list) else [],
            "cardData": card,
            "siblings": siblings,
        }
        if kind == "models":
            info.update(library_name=card.get("library_name"), pipeline_tag=card.get("pipeline_tag"))
        self._send_json(info)

    # -- browsing ---------------------------------------------------------------------------------------------------

    def _tree(self, kind: str, org: str, name: str, rev: str, path: str | None) -> None:
        history = self._repo(kind, org, name).history(unquote(rev))
        files = history[0]["files"]
        folder = unquote(path or "").strip("/")
        if folder and folder not in _folders(files):
            raise HubError(
                404, f"Folder not found: {folder[:200]}", "EntryNotFound", {"X-Repo-Commit": history[0]["id"]}
            )
        prefix = f"{folder}/" if folder else ""
        recursive, expand = _truthy(self.query.get("recursive")), _truthy(self.query.get("expand"))
        paths = [p for p in [*sorted(_folders(files)), *sorted(files)] if p.startswith(prefix)]
        if not recursive:
            paths = [p for p in paths if "/" not in p[len(prefix) :]]
        self._send_json([_path_info(history, p, expand) for p in paths])

    def _paths_info(self, kind: str, org: str, name: str, rev: str) -> None:
        history = self._repo(kind, org, name).history(unquote(rev))
        if "json" in self.headers.get("Content-Type", ""):
            payload = self._json_object()
            paths, expand = payload.get("paths", []), payload.get("expand")
        else:
            form = parse_qs(b"".join(self.body_chunks).decode())
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[-1]
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise HubError(400, "paths must be a list of strings")
        existing = set(history[0]["files"]) | _folders(history[0]["files"])
        found = [p.strip("/") for p in paths if p.strip("/") in existing]
        self._send_json([_path_info(history, p, _truthy(expand)) for p in found])

    def _refs(self, kind: str, org: str, name: str) -> None:
        refs = self._repo(kind, org, name).state().refs
        branches = [
            {"name": branch, "ref": f"refs/heads/{branch}", "targetCommit": target}
            for branch, target in sorted(refs.items(), key=lambda item: (item[0] != MAIN, item[0]))
        ]
        self._send_json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def _commits(self, kind: str, org: str, name: str, rev: str) -> None:
        history = self._repo(kind, org, name).history(unquote(rev))
        keys = ("id", "title", "message", "date")
        self._send_json([{**{k: c[k] for k in keys}, "authors": [{"user": c.get("author", USER)}]} for c in history])

    def _branch(self, kind: str, org: str, name: str, branch: str) -> None:
        repo = self._repo(kind, org, name, write=True)
        branch = _checked_branch(unquote(branch))
        if self.command == "DELETE":
            self.server.store.delete_branch(repo, branch)
        else:
            starting_point = self._json_object().get("startingPoint") or MAIN
            if not isinstance(starting_point, str):
                raise HubError(400, "startingPoint must be a revision")
            self.server.store.create_branch(repo, branch, starting_point)
        self._send_json({})

    # -- uploads ------------------------------------------------------------------------------------------------------

    def _preupload(self, kind: str, org: str, name: str, rev: str) -> None:
        files = self._repo(kind, org, name, write=True).history(unquote(rev))[0]["files"]
        items = self._json_object().get("files", [])
        if not isinstance(items, list):
            raise HubError(400, "files must be a list")
        answers = []
        for item in items:
            path = _checked_path(item["path"])
            lfs = _wants_lfs(path, base64.b64decode(item.get("sample", "")), int(item.get("size", 0)))
            stored = files.get(path)
            oid = None  # the client skips a file whose local oid (sha256 for lfs, git sha1 otherwise) equals this
            if stored is not None and stored["lfs"] == lfs:
                oid = stored["sha256"] if lfs else stored["oid"]
            mode = "lfs" if lfs else "regular"
            answers.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send_json({"files": answers})

    def _commit(self, kind: str, org: str, name: str, rev: str) -> None:
        repo = self._repo(kind, org, name, write=True)
        if _truthy(self.query.get("create_pr")):
            raise HubError(400, "Pull requests are not supported by the local hub")
        try:
            lines = [json.loads(line) for line in b"".join(self.body_chunks).splitlines() if line.strip()]
        except ValueError:
            raise HubError(400, "Malformed NDJSON commit body") from None
        if not all(isinstance(line, dict) and isinstance(line.get("value"), dict) for line in lines):
            raise HubError(400, 'Every line of a commit must be {"key": ..., "value": {...}}')
        headers = [line["value"] for line in lines if line.get("key") == "header"]
        operations = [line for line in lines if line.get("key") != "header"]
        author = self.user.name if self.user is not None else USER
        commit = self.server.store.commit(repo, unquote(rev), headers[0] if headers else {}, operations, author)
        commit_url = f"{self._endpoint}/{repo.url_prefix}{repo.repo_id}/commit/{commit['id']}"
        self._send_json({"success": True, "commitOid": commit["id"], "commitUrl": commit_url, "pullRequestUrl": None})

    def _lfs_signature(self, repo: Repo, oid: str) -> str:
        message = f"{repo.kind}/{repo.repo_id}/{oid}".encode()
        return hmac.new(self.server.lfs_secret, message, hashlib.sha256).hexdigest()

    def _lfs_batch(self, kind: str | None, org: str, name: str) -> None:
        repo = self._repo(kind, org, name, write=True)
        payload = self._json_object()
        if payload.get("operation") != "upload":
            raise HubError(400, "Only LFS uploads are supported; download files through /resolve")
        objects = []
        for item in payload.get("objects", []):
            oid, size = item["oid"], item["size"]
            answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not isinstance(oid, str) or not _SHA256.fullmatch(oid):
                answer["error"] = {"code": 422, "message": f"Invalid sha256 oid: {str(oid)[:64]}"}
            elif not isinstance(size, int) or not 0 <= size <= self.server.max_lfs_size:
                answer["error"] = {"code": 422, "message": f"Size must be 0 to {self.server.max_lfs_size} bytes"}
            elif not repo.blob(oid).is_file():  # no "actions" tells the client the object is already there
                signature = quote(self._lfs_signature(repo, oid))
                href = f"{self._endpoint}/{repo.url_prefix}{repo.repo_id}.git/info/lfs/objects/{oid}?sig={signature}"
                answer["actions"] = {"upload": {"href": href}}
            objects.append(answer)
        body = json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode()
        self._send(200, body, "application/vnd.git-lfs+json")

    def _lfs_upload(self, kind: str | None, org: str, name: str, oid: str) -> None:
        # No token here (huggingface_hub PUTs to the href as to a presigned URL): the batch call's signature is it.
        repo = self.server.store.repo(kind or "models", f"{unquote(org)}/{unquote(name)}")
        if not hmac.compare_digest(str(self.query.get("sig", "")), self._lfs_signature(repo, oid)):
            raise HubError(403, "Invalid or missing upload signature: ask the LFS batch endpoint for an upload URL")
        repo.blob(oid).parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=repo.blob(oid).parent, prefix=_TMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as file:
                for chunk in self.body_chunks:
                    digest.update(chunk)
                    file.write(chunk)
            if digest.hexdigest() != oid:
                raise HubError(400, f"Uploaded content has sha256 {digest.hexdigest()}, expected {oid}")
            os.replace(tmp, repo.blob(oid))
        except BaseException:  # a refused or interrupted upload leaves nothing behind
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._send_json({})

    # -- downloads ----------------------------------------------------------------------------------------------------

    def _resolve(self, kind: str | None, org: str, name: str, rev: str, path: str) -> None:
        repo = self._repo(kind, org, name)
        commit = repo.history(unquote(rev))[0]
        entry = commit["files"].get(unquote(path))
        headers = {"X-Repo-Commit": commit["id"], "Accept-Ranges": "bytes"}
        if entry is None:
            raise HubError(404, f"Entry not found: {unquote(path)[:200]}", "EntryNotFound", headers)
        size = entry["size"]
        headers["ETag"] = f'"{entry["sha256"] if entry["lfs"] else entry["oid"]}"'
        start, end, status = 0, size - 1, 200
        requested = re.fullmatch(r"bytes=(\d{0,19})-(\d{0,19})", self.headers.get("Range", "").strip())
        first, last = requested.groups() if requested else ("", "")
        if first and last and int(last) < int(first):
            first = last = ""  # an invalid range is ignored (RFC 9110), as are multi-range requests
        if first or last:
            status = 206
            start = int(first) if first else max(size - int(last), 0)  # no first byte: the last N bytes
            end = min(int(last), size - 1) if first and last else size - 1
            if start >= size:
                raise HubError(
                    416, f"Range not satisfiable: {size} bytes", headers={"Content-Range": f"bytes */{size}"}
                )
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self.send_response(status)
        for key, value in {**headers, "Content-Type": "application/octet-stream"}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if self.command == "GET":
            with repo.blob(entry["sha256"]).open("rb") as blob:
                blob.seek(start)
                remaining = end - start + 1
                while remaining > 0 and (chunk := blob.read(min(remaining, 1 << 20))):
                    self.wfile.write(chunk)
                    remaining -= len(chunk)


class LocalHub:
    """The local Hub server, run in a daemon thread.

    Clients read the variables of `client_env` when huggingface_hub is first imported, and importing `hfvision`
    already imports transformers (hence huggingface_hub), so in one process choose the port and set them first:

    Example:
        >>> os.environ.update(HF_ENDPOINT="http://127.0.0.1:8765", HF_HUB_DISABLE_XET="1", HF_TOKEN="hf_local")
        >>> from hfvision.hub.local_hub import LocalHub
        >>> with LocalHub("/tmp/hub-store", port=8765, tokens={"hf_local": ("me", ["org"])}):
        ...     model.push_to_hub("org/tiny")

    Args:
        store_dir: Folder holding the repos; created if missing, reused as is when it exists.
        host: Interface to bind; keep the loopback default unless the hub must be reachable from elsewhere.
        port: Port to bind; 0 picks a free one (read it back from `endpoint` after `start()`).
        tokens: `{token: (user, [org, ...])}`: who may write where (a user writes to its own namespace and to its
            organisations) and read which private repos. None generates one token for `USER`, member of
            `DEFAULT_ORGS`; read it from `tokens`.
        allowed_hosts: Host names clients may use besides the bound address (and, for a loopback or wildcard bind,
            `127.0.0.1`, `localhost`, `[::1]`); requests naming any other `Host` are refused.
        max_body_size: Largest JSON / NDJSON request body, in bytes.
        max_lfs_size: Largest LFS object, in bytes.
    """

    def __init__(
        self,
        store_dir: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens: Mapping[str, tuple[str, Sequence[str]]] | None = None,
        allowed_hosts: Sequence[str] = (),
        max_body_size: int = MAX_BODY_SIZE,
        max_lfs_size: int = MAX_LFS_SIZE,
    ):
        self.store = HubStore(store_dir)
        self.host, self.port = host, port
        self.tokens = dict(tokens) if tokens is not None else {generate_token(): (USER, list(DEFAULT_ORGS))}
        self._users = _users(self.tokens)
        self.allowed_hosts, self.max_body_size, self.max_lfs_size = tuple(allowed_hosts), max_body_size, max_lfs_size
        self._server: _HubServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """`http://HOST:PORT`, the value for `HF_ENDPOINT`."""
        port = self._server.server_address[1] if self._server is not None else self.port
        if not port:
            raise RuntimeError("LocalHub was created with port=0: start() it to learn its port")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> LocalHub:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError(f"LocalHub already running at {self.endpoint}")
        self._server = _HubServer(
            (self.host, self.port), self.store, self._users, self.allowed_hosts, self.max_body_size, self.max_lfs_size
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="hfvision-local-hub", daemon=True
        )
        self._thread.start()
        logger.info("local hub serving %s at %s", self.store.dir, self.endpoint)
        return self

    def stop(self) -> None:
        """Stop serving and release the port; the store stays on disk."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def client_env(endpoint: str, hf_home: str | None = None, token: str | None = None) -> dict[str, str]:
    """Environment variables that point huggingface_hub / transformers / datasets at `endpoint`.

    They must be in `os.environ` before `huggingface_hub` is first imported (it reads them at import time).
    `HF_HUB_DISABLE_XET=1` makes uploads use the classic LFS protocol the local hub speaks; `token` (one of the
    hub's `tokens`) becomes `HF_TOKEN`, which every write and every read of a private repo needs.
    """
    env = {"HF_ENDPOINT": endpoint.rstrip("/"), "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    if token is not None:
        env["HF_TOKEN"] = token
    if hf_home is not None:
        env["HF_HOME"] = str(hf_home)
    return env


def serve(
    store_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    tokens: Mapping[str, tuple[str, Sequence[str]]] | None = None,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """Serve the local hub in the foreground until interrupted (`hfvision hub serve`).

    Prints the client variables; without `tokens` it generates one (for `USER`, member of `DEFAULT_ORGS`) and
    prints it too.
    """
    with LocalHub(store_dir, host, port, tokens=tokens, allowed_hosts=allowed_hosts) as hub:
        print(f"Local Hub serving {Path(store_dir).resolve()} at {hub.endpoint}.")
        for token, (user, orgs) in hub.tokens.items():
            shown = token if tokens is None else token[:6] + "..."
            print(f"  token {shown} -> user {user!r}, writes to {[user, *orgs]}")
        print("Point clients at it with:")
        for key, value in client_env(hub.endpoint, token=next(iter(hub.tokens))).items():
            if key != "HF_TOKEN" or tokens is None:  # a token given on the command line is not echoed back
                print(f"  export {key}={value}")
        if tokens is not None:
            print("  export HF_TOKEN=<one of the tokens given with --token>")
        print("Serving until interrupted (Ctrl-C).", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
