"""A local, offline stand-in for the Hugging Face Hub.

`LocalHub` is a small HTTP server on 127.0.0.1 (standard library, plus PyYAML to read model-card metadata) that
speaks enough of the Hub protocol for the *unmodified* `huggingface_hub`, `transformers` and `datasets` clients to
publish to it and load from it: `create_repo`, `upload_folder`, `push_to_hub`, `ModelCard.validate`,
`hf_hub_download`, `snapshot_download`, `from_pretrained("org/name")`, `load_dataset("org/ds", streaming=True)`.
Clients reach it through the variables of `client_env`, set before `huggingface_hub` is imported.

Endpoints implemented (`{type}` is `models` or `datasets`; `[datasets/]` is present for dataset repos only):

* `POST /api/repos/create` (409 on a duplicate; the client's `exist_ok` turns it into success),
  `DELETE /api/repos/delete`
* `GET /api/whoami-v2`: always the same local user, `local-user`
* `POST /api/validate-yaml`: the README front matter must parse to a YAML mapping, and a `model-index` must carry
  the keys `huggingface_hub.repocard_data.model_index_to_eval_results` requires (else 400 with the errors)
* `GET /api/{type}/{org}/{name}[/revision/{rev}]`: repo info with `sha`, `siblings` (sizes and LFS info with
  `blobs=1`), `cardData`, `lastModified`
* `GET /api/{type}/{org}/{name}/tree/{rev}[/{path}]?recursive=&expand=` (404 `EntryNotFound` for a missing folder)
* `POST /api/{type}/{org}/{name}/paths-info/{rev}`, `GET .../refs`, `GET .../commits/{rev}`
* `POST /api/{type}/{org}/{name}/preupload/{rev}`: "lfs" for binary samples, LFS extensions and files over 10 MB,
  else "regular"; returns the stored oid so clients skip unchanged files
* `POST /api/{type}/{org}/{name}/commit/{rev}`: NDJSON `header`, `file` (base64), `lfsFile`, `deletedFile`,
  `deletedFolder`; 412 when `parentCommit` is not the head
* `POST /[datasets/]{org}/{name}.git/info/lfs/objects/batch` (basic transfer) and `PUT` of each object to the
  `href` it returns (the sha256 is checked)
* `HEAD|GET /[datasets/]{org}/{name}/resolve/{rev}/{path}` with `X-Repo-Commit`, `ETag`, `Content-Length`, and
  `Range` (206, or 416 past the end)

Errors carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) so `huggingface_hub` raises
`RepositoryNotFoundError`, `RevisionNotFoundError` and `EntryNotFoundError`. Anything else answers a plain 404.

Not implemented: authentication (any token or none is accepted, `private` is ignored), Xet (uploads need
`HF_HUB_DISABLE_XET=1`), branches other than `main`, tags, pull requests (`create_pr`), Spaces, repo search and
listing, multipart LFS, pagination (every listing is one page), redirects, repo ids without a namespace. A revision
is `main` or a full 40-hex commit sha. File `oid`s follow git (blob SHA-1 of the content, or of the LFS pointer), but
commit and folder ids are SHA-1s of this store's own records, not git objects. A new repo starts, as on the Hub, with
an "initial commit" holding a `.gitattributes`.

Store layout (plain files, persistent across restarts):

    <store>/<models|datasets>/<org>/<name>/commits.jsonl    one commit per line, oldest first; each holds the full
                                                            manifest {path: {sha256, size, oid, lfs}} of its tree
    <store>/<models|datasets>/<org>/<name>/blobs/<sha256>   file contents, content-addressed
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

logger = logging.getLogger(__name__)

USER = "local-user"
MAIN = "main"
# Always stored in LFS whatever their content (a subset of the Hub's default .gitattributes).
LFS_EXTENSIONS = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".npy", ".npz", ".pkl", ".pickle",
    ".parquet", ".arrow", ".tar", ".zip", ".gz", ".tgz", ".zst", ".png", ".jpg", ".jpeg", ".webp", ".mp4", ".wav",
)  # fmt: skip
REGULAR_MAX_SIZE = 10 * 1024 * 1024  # the Hub refuses larger non-LFS files
GITATTRIBUTES = "".join(f"*{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in LFS_EXTENSIONS).encode()
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FRONT_MATTER = re.compile(r"^\s*---[\r\n]+([\s\S]*?)[\r\n]+---(?:\r?\n|$)")


class HubError(Exception):
    """An error answered to the client; `code` goes to `X-Error-Code`, which selects huggingface_hub's exception."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _checked_path(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or any(part in ("..", ".") for part in parts):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


def _wants_lfs(path: str, sample: bytes, size: int) -> bool:
    return size > REGULAR_MAX_SIZE or path.lower().endswith(LFS_EXTENSIONS) or b"\0" in sample


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true")


class Repo:
    """One repo on disk: an append-only commit log and a folder of content-addressed blobs."""

    def __init__(self, store_dir: Path, kind: str, repo_id: str):
        namespace, _, name = repo_id.partition("/")
        if not (_NAME.fullmatch(namespace) and _NAME.fullmatch(name)) or ".." in repo_id or name.endswith(".git"):
            raise HubError(400, f"Invalid repo id: {repo_id!r}")
        self.kind, self.repo_id, self.author = kind, repo_id, namespace
        self.dir = store_dir / kind / namespace / name
        self.log = self.dir / "commits.jsonl"
        self.url_prefix = "datasets/" if kind == "datasets" else ""

    @property
    def exists(self) -> bool:
        return self.log.is_file()

    def commits(self) -> list[dict[str, Any]]:
        """All commits, oldest first. Lock-free: a last line still being appended (no newline yet) is skipped."""
        try:
            lines = self.log.read_text().split("\n")[:-1]
        except FileNotFoundError:
            raise HubError(404, f"Repository not found: {self.repo_id}", "RepoNotFound") from None
        return [json.loads(line) for line in lines]

    def history(self, revision: str) -> list[dict[str, Any]]:
        """Commits reachable from `revision` (`main` or a full commit sha), newest first."""
        commits = self.commits()
        if revision == MAIN:
            return commits[::-1]
        if _COMMIT_SHA.fullmatch(revision):
            ids = [commit["id"] for commit in commits]
            if revision in ids:
                return commits[ids.index(revision) :: -1]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def blob(self, sha256: str) -> Path:
        return self.dir / "blobs" / sha256

    def put_blob(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        if not self.blob(sha256).is_file():
            self.blob(sha256).parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.blob(sha256).parent, delete=False) as tmp:
                tmp.write(content)
            os.replace(tmp.name, self.blob(sha256))
        return sha256

    def append_commit(
        self, parent: str | None, files: dict[str, dict[str, Any]], title: str, message: str
    ) -> dict[str, Any]:
        record = {"parent": parent, "title": title, "message": message, "date": _now(), "files": files}
        commit = {"id": hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest(), **record}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as log:
            log.write(json.dumps(commit) + "\n")
        return commit


class HubStore:
    """All repos under one folder. Writes (create, delete, commit) are serialised by one lock."""

    def __init__(self, store_dir: str | Path):
        self.dir = Path(store_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    def repo(self, kind: str, repo_id: str, must_exist: bool = True) -> Repo:
        repo = Repo(self.dir, kind, repo_id)
        if must_exist and not repo.exists:
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def create(self, repo: Repo) -> bool:
        """Create `repo` with the Hub's initial commit; False if it already exists."""
        with self.lock:
            if repo.exists:
                return False
            files = {".gitattributes": _regular_entry(GITATTRIBUTES, repo.put_blob(GITATTRIBUTES))}
            repo.append_commit(None, files, "initial commit", "")
            return True

    def delete(self, repo: Repo) -> None:
        with self.lock:
            shutil.rmtree(repo.dir)

    def commit(self, repo: Repo, revision: str, header: dict[str, Any], operations: list[dict[str, Any]]) -> dict:
        """Apply NDJSON commit `operations` on top of `revision`'s head and record the new commit."""
        if revision != MAIN:
            raise HubError(404, f"Only the {MAIN!r} branch can be committed to, not {revision!r}", "RevisionNotFound")
        with self.lock:
            head = repo.history(MAIN)[0]
            parent = header.get("parentCommit")
            if parent is not None and parent != head["id"]:
                raise HubError(412, f"A commit has happened since {parent}: the head of {MAIN} is {head['id']}")
            files = dict(head["files"])
            for operation in operations:
                key, value = operation["key"], operation["value"]
                path = _checked_path(value["path"].rstrip("/") if key == "deletedFolder" else value["path"])
                if key == "file":
                    encoding = value.get("encoding", "base64")
                    content = base64.b64decode(value["content"]) if encoding == "base64" else value["content"].encode()
                    files[path] = _regular_entry(content, repo.put_blob(content))
                elif key == "lfsFile":
                    blob = repo.blob(value["oid"])
                    if not _SHA256.fullmatch(value["oid"]) or not blob.is_file():
                        raise HubError(422, f"LFS object {value['oid']} of {path} was never uploaded")
                    files[path] = _lfs_entry(value["oid"], blob.stat().st_size)
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
                    raise HubError(400, f"Unsupported commit operation: {key!r}")
            title = header.get("summary") or "Upload files"
            return repo.append_commit(head["id"], files, title, header.get("description", ""))


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
_API = rf"/api/(?P<kind>models|datasets)/{_REPO}"
_GIT = rf"/(?:(?P<kind>datasets)/)?{_REPO}"
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
    (("POST",), rf"{_API}/preupload/(?P<rev>[^/]+)", "_preupload"),
    (("POST",), rf"{_API}/commit/(?P<rev>[^/]+)", "_commit"),
    (("POST",), rf"{_GIT}\.git/info/lfs/objects/batch", "_lfs_batch"),
    (("PUT",), rf"{_GIT}\.git/info/lfs/objects/(?P<oid>[0-9a-f]{{64}})", "_lfs_upload"),
    (("GET", "HEAD"), rf"{_GIT}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "_resolve"),
]
_COMPILED_ROUTES = [(methods, re.compile(pattern), handler) for methods, pattern, handler in _ROUTES]


class _HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: HubStore):
        super().__init__(address, _HubHandler)
        self.store = store


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
        self.body_chunks = self._iter_body()
        try:
            for methods, pattern, handler in _COMPILED_ROUTES:
                match = pattern.fullmatch(url.path)
                if match and self.command in methods:
                    getattr(self, handler)(**match.groupdict())
                    break
            else:
                raise HubError(404, f"Not found: {self.command} {url.path}")
        except HubError as err:
            header_message = " ".join(err.message.split()).encode("latin-1", "replace").decode("latin-1")
            headers = {"X-Error-Message": header_message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send_json({"error": err.message}, err.status, headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away mid-download (e.g. a streaming reader that has read enough)
        except Exception as err:
            logger.exception("local hub: %s %s failed", self.command, self.path)
            self._send_json({"error": f"{type(err).__name__}: {err}"}, 500)
        with contextlib.suppress(HubError, OSError):
            for _ in self.body_chunks:  # drain what the handler left unread, so closing does not reset the socket
                pass

    def _iter_body(self) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                yield self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                raise HubError(400, "Truncated request body")
            remaining -= len(chunk)
            yield chunk

    def _json_body(self) -> Any:
        return json.loads(b"".join(self.body_chunks) or b"{}")

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
        host, port = self.server.server_address[:2]
        return f"http://{self.headers.get('Host') or f'{host}:{port}'}"

    def _repo(self, kind: str | None, org: str, name: str, must_exist: bool = True) -> Repo:
        return self.server.store.repo(kind or "models", f"{unquote(org)}/{unquote(name)}", must_exist)

    # -- repos ----------------------------------------------------------------------------------------------------

    def _create_repo(self) -> None:
        payload = self._json_body()
        kind = {None: "models", "model": "models", "dataset": "datasets"}.get(payload.get("type"))
        if kind is None:
            raise HubError(400, f"Repo type {payload.get('type')!r} is not supported by the local hub")
        repo = self._repo(kind, payload.get("organization") or USER, payload["name"], must_exist=False)
        url = f"{self._endpoint}/{repo.url_prefix}{repo.repo_id}"
        if not self.server.store.create(repo):
            message = f"You already created this {kind[:-1]} repo"
            self._send_json({"error": message, "url": url}, 409, {"X-Error-Message": message})
            return
        self._send_json({"url": url, "name": repo.repo_id, "id": repo.repo_id})

    def _delete_repo(self) -> None:
        payload = self._json_body()
        kind = "datasets" if payload.get("type") == "dataset" else "models"
        self.server.store.delete(self._repo(kind, payload.get("organization") or USER, payload["name"]))
        self._send_json({})

    def _whoami(self) -> None:
        token = {"displayName": "local", "role": "write"}
        user = {"type": "user", "id": USER, "name": USER, "fullname": "Local User", "orgs": []}
        self._send_json({**user, "auth": {"type": "access_token", "accessToken": token}})

    def _validate_yaml(self) -> None:
        errors, warnings = _metadata_errors(self._json_body().get("content", ""))
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
            "private": False,
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
            raise HubError(404, f"Folder not found: {folder}", "EntryNotFound", {"X-Repo-Commit": history[0]["id"]})
        prefix = f"{folder}/" if folder else ""
        recursive, expand = _truthy(self.query.get("recursive")), _truthy(self.query.get("expand"))
        paths = [p for p in [*sorted(_folders(files)), *sorted(files)] if p.startswith(prefix)]
        if not recursive:
            paths = [p for p in paths if "/" not in p[len(prefix) :]]
        self._send_json([_path_info(history, p, expand) for p in paths])

    def _paths_info(self, kind: str, org: str, name: str, rev: str) -> None:
        history = self._repo(kind, org, name).history(unquote(rev))
        body = b"".join(self.body_chunks)
        if "json" in self.headers.get("Content-Type", ""):
            payload = json.loads(body)
            paths, expand = payload.get("paths", []), payload.get("expand")
        else:
            form = parse_qs(body.decode())
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[-1]
        existing = set(history[0]["files"]) | _folders(history[0]["files"])
        found = [p.strip("/") for p in paths if p.strip("/") in existing]
        self._send_json([_path_info(history, p, _truthy(expand)) for p in found])

    def _refs(self, kind: str, org: str, name: str) -> None:
        head = self._repo(kind, org, name).history(MAIN)[0]
        branch = {"name": MAIN, "ref": f"refs/heads/{MAIN}", "targetCommit": head["id"]}
        self._send_json({"branches": [branch], "converts": [], "tags": [], "pullRequests": []})

    def _commits(self, kind: str, org: str, name: str, rev: str) -> None:
        history = self._repo(kind, org, name).history(unquote(rev))
        keys = ("id", "title", "message", "date")
        self._send_json([{**{k: c[k] for k in keys}, "authors": [{"user": USER}]} for c in history])

    # -- uploads ------------------------------------------------------------------------------------------------------

    def _preupload(self, kind: str, org: str, name: str, rev: str) -> None:
        files = self._repo(kind, org, name).history(unquote(rev))[0]["files"]
        answers = []
        for item in self._json_body().get("files", []):
            lfs = _wants_lfs(item["path"], base64.b64decode(item.get("sample", "")), int(item.get("size", 0)))
            stored = files.get(item["path"])
            oid = None  # the client skips a file whose local oid (sha256 for lfs, git sha1 otherwise) equals this
            if stored is not None and stored["lfs"] == lfs:
                oid = stored["sha256"] if lfs else stored["oid"]
            mode = "lfs" if lfs else "regular"
            answers.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send_json({"files": answers})

    def _commit(self, kind: str, org: str, name: str, rev: str) -> None:
        repo = self._repo(kind, org, name)
        if _truthy(self.query.get("create_pr")):
            raise HubError(400, "Pull requests are not supported by the local hub")
        lines = [json.loads(line) for line in b"".join(self.body_chunks).splitlines() if line.strip()]
        headers = [line["value"] for line in lines if line["key"] == "header"]
        operations = [line for line in lines if line["key"] != "header"]
        commit = self.server.store.commit(repo, unquote(rev), headers[0] if headers else {}, operations)
        commit_url = f"{self._endpoint}/{repo.url_prefix}{repo.repo_id}/commit/{commit['id']}"
        self._send_json({"success": True, "commitOid": commit["id"], "commitUrl": commit_url, "pullRequestUrl": None})

    def _lfs_batch(self, kind: str | None, org: str, name: str) -> None:
        repo = self._repo(kind, org, name)
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, "Only LFS uploads are supported; download files through /resolve")
        objects = []
        for item in payload.get("objects", []):
            answer: dict[str, Any] = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if not _SHA256.fullmatch(item["oid"]):
                answer["error"] = {"code": 422, "message": f"Invalid sha256 oid: {item['oid']}"}
            elif not repo.blob(item["oid"]).is_file():  # no "actions" tells the client the object is already there
                href = f"{self._endpoint}/{repo.url_prefix}{repo.repo_id}.git/info/lfs/objects/{item['oid']}"
                answer["actions"] = {"upload": {"href": href}}
            objects.append(answer)
        body = json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode()
        self._send(200, body, "application/vnd.git-lfs+json")

    def _lfs_upload(self, kind: str | None, org: str, name: str, oid: str) -> None:
        repo = self._repo(kind, org, name)
        repo.blob(oid).parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with tempfile.NamedTemporaryFile(dir=repo.blob(oid).parent, delete=False) as tmp:
            for chunk in self.body_chunks:
                digest.update(chunk)
                tmp.write(chunk)
        if digest.hexdigest() != oid:
            os.unlink(tmp.name)
            raise HubError(400, f"Uploaded content has sha256 {digest.hexdigest()}, expected {oid}")
        os.replace(tmp.name, repo.blob(oid))
        self._send_json({})

    # -- downloads ----------------------------------------------------------------------------------------------------

    def _resolve(self, kind: str | None, org: str, name: str, rev: str, path: str) -> None:
        repo = self._repo(kind, org, name)
        commit = repo.history(unquote(rev))[0]
        entry = commit["files"].get(unquote(path))
        headers = {"X-Repo-Commit": commit["id"], "Accept-Ranges": "bytes"}
        if entry is None:
            raise HubError(404, f"Entry not found: {unquote(path)}", "EntryNotFound", headers)
        size = entry["size"]
        headers["ETag"] = f'"{entry["sha256"] if entry["lfs"] else entry["oid"]}"'
        start, end, status = 0, size - 1, 200
        requested = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
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
        >>> with LocalHub("/tmp/hub-store", port=8765):
        ...     model.push_to_hub("org/tiny")

    Args:
        store_dir: Folder holding the repos; created if missing, reused as is when it exists.
        host: Interface to bind; keep the loopback default unless the hub must be reachable from elsewhere.
        port: Port to bind; 0 picks a free one (read it back from `endpoint` after `start()`).
    """

    def __init__(self, store_dir: str | Path, host: str = "127.0.0.1", port: int = 0):
        self.store = HubStore(store_dir)
        self.host, self.port = host, port
        self._server: _HubServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """`http://HOST:PORT`, the value for `HF_ENDPOINT`."""
        port = self._server.server_address[1] if self._server is not None else self.port
        if not port:
            raise RuntimeError("LocalHub was created with port=0: start() it to learn its port")
        return f"http://{self.host}:{port}"

    def start(self) -> LocalHub:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError(f"LocalHub already running at {self.endpoint}")
        self._server = _HubServer((self.host, self.port), self.store)
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


def client_env(endpoint: str, hf_home: str | None = None) -> dict[str, str]:
    """Environment variables that point huggingface_hub / transformers / datasets at `endpoint`.

    They must be in `os.environ` before `huggingface_hub` is first imported (it reads them at import time).
    `HF_HUB_DISABLE_XET=1` makes uploads use the classic LFS protocol the local hub speaks, and a write needs some
    token (`HF_TOKEN`), which the local hub ignores.
    """
    env = {
        "HF_ENDPOINT": endpoint.rstrip("/"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_TOKEN": "hf_local",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    if hf_home is not None:
        env["HF_HOME"] = str(hf_home)
    return env


def serve(store_dir: str | Path, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the local hub in the foreground until interrupted (`hfvision hub serve`)."""
    with LocalHub(store_dir, host, port) as hub:
        print(f"Local Hub serving {Path(store_dir).resolve()} at {hub.endpoint}. Point clients at it with:")
        for key, value in client_env(hub.endpoint).items():
            print(f"  export {key}={value}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
