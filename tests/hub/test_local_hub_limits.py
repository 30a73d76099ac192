"""The local Hub under damage and bad input: a torn commit log, interrupted uploads, malformed or oversized requests.

Each answer must be a 4xx that names the problem, never a 500, and leave the repos as they were. Requests that
huggingface_hub would never send are made with `http.client`; the store's files are touched only to simulate damage
(a torn last line) and to look for leftovers of interrupted uploads.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from huggingface_hub import HfApi

from hfvision.hub.local_hub import REGULAR_MAX_SIZE, LocalHub

TOKEN = "hf_limits"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    with LocalHub(tmp_path_factory.mktemp("limits-store"), tokens={TOKEN: ("alice", [])}) as hub:
        HfApi(endpoint=hub.endpoint, token=TOKEN).create_repo("alice/target")
        yield hub


@pytest.fixture
def api(hub: LocalHub) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=TOKEN)


def raw(hub: LocalHub, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    url = urlsplit(hub.endpoint)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
    try:
        connection.request(method, path, body=body, headers={**AUTH, **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def commit_body(*operations: dict) -> bytes:
    lines = [{"key": "header", "value": {"summary": "raw commit"}}, *operations]
    return b"\n".join(json.dumps(line).encode() for line in lines)


def file_operation(path: str, content: bytes = b"x") -> dict:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(content).decode(), "encoding": "base64"}}


def test_a_torn_last_line_of_the_commit_log_is_survived(hub: LocalHub, api: HfApi) -> None:
    api.create_repo("alice/torn")
    api.upload_file(path_or_fileobj=b"one", path_in_repo="one.txt", repo_id="alice/torn")
    api.upload_file(path_or_fileobj=b"two", path_in_repo="two.txt", repo_id="alice/torn")
    log = hub.store.dir / "models" / "alice" / "torn" / "commits.jsonl"
    log.write_bytes(log.read_bytes()[:-25])  # disk full / power loss in the middle of the last record

    assert api.list_repo_files("alice/torn") == [".gitattributes", "one.txt"]  # the torn commit is lost, no more
    api.upload_file(path_or_fileobj=b"three", path_in_repo="three.txt", repo_id="alice/torn")
    assert api.list_repo_files("alice/torn") == [".gitattributes", "one.txt", "three.txt"]
    assert len(api.list_repo_commits("alice/torn")) == 3
    assert log.read_text().endswith("\n") and all(json.loads(line) for line in log.read_text().splitlines())


@pytest.mark.parametrize(
    "path",
    ["a/../b", "../escape.py", "./a", "a/./b", "a//b", "a/", "/abs", "a\x00b.py", "new\nline", ".git/config",
     "x" * 256, "/".join(["d"] * 600)],
)  # fmt: skip
def test_invalid_paths_are_400(hub: LocalHub, api: HfApi, path: str) -> None:
    status, answer = raw(hub, "POST", "/api/models/alice/target/commit/main", commit_body(file_operation(path)))
    assert status == 400, answer
    preupload = json.dumps({"files": [{"path": path, "sample": "", "size": 1}]}).encode()
    assert raw(hub, "POST", "/api/models/alice/target/preupload/main", preupload)[0] == 400
    assert api.list_repo_files("alice/target") == [".gitattributes"]


def test_a_regular_file_over_10_mb_is_413(hub: LocalHub, api: HfApi) -> None:
    big = file_operation("big.txt", b"a" * (REGULAR_MAX_SIZE + 1))
    status, answer = raw(hub, "POST", "/api/models/alice/target/commit/main", commit_body(big))
    assert status == 413 and b"LFS" in answer
    assert api.list_repo_files("alice/target") == [".gitattributes"]


def test_a_body_over_the_limit_is_413_before_it_is_read(hub: LocalHub) -> None:
    headers = {"Content-Length": str(10**12), "Content-Type": "application/json"}
    assert raw(hub, "POST", "/api/models/alice/target/commit/main", None, headers)[0] == 413


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", "2, 3"])
def test_malformed_content_length_is_400(hub: LocalHub, length: str) -> None:
    assert raw(hub, "POST", "/api/repos/create", None, {"Content-Length": length})[0] == 400


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/repos/create", b"{not json"),
        ("POST", "/api/repos/create", b"[1, 2]"),
        ("POST", "/api/repos/create", b'{"organization": "alice"}'),
        ("POST", "/api/repos/create", b'{"name": 5}'),
        ("DELETE", "/api/repos/delete", b'{"organization": "alice"}'),
        ("POST", "/api/validate-yaml", b'{"content": 5}'),
        ("POST", "/api/models/alice/target/commit/main", b"{not json\n"),
        ("POST", "/api/models/alice/target/commit/main", b'[1]\n{"key": "file"}'),
        ("POST", "/api/models/alice/target/commit/main", commit_body({"key": "file", "value": {"path": "a.txt"}})),
        (
            "POST",
            "/api/models/alice/target/commit/main",
            commit_body(file_operation("a.txt") | {"value": {"path": "a.txt", "content": "!!"}}),
        ),
        (
            "POST",
            "/api/models/alice/target/commit/main",
            commit_body({"key": "lfsFile", "value": {"path": "a.bin", "oid": "../../x"}}),
        ),
        ("POST", "/api/models/alice/target/preupload/main", b'{"files": "x"}'),
        ("POST", "/api/models/alice/target/preupload/main", b'{"files": [{"path": "a", "size": "big"}]}'),
        ("POST", "/api/models/alice/target/paths-info/main", b'{"paths": 5}'),
        ("POST", "/api/models/alice/target/branch/dev", b'{"startingPoint": 5}'),
        ("POST", "/alice/target.git/info/lfs/objects/batch", b'{"operation": "upload", "objects": [{"oid": 5}]}'),
    ],
)
def test_malformed_requests_are_4xx_never_500(hub: LocalHub, api: HfApi, method: str, path: str, body: bytes) -> None:
    status, answer = raw(hub, method, path, body, {"Content-Type": "application/json"})
    assert 400 <= status < 500, answer
    assert "error" in json.loads(answer)
    assert api.list_repo_files("alice/target") == [".gitattributes"]


def test_an_interrupted_lfs_upload_leaves_no_temporary_blob(hub: LocalHub, api: HfApi) -> None:
    content = bytes(range(256)) * 4096  # 1 MiB
    oid = hashlib.sha256(content).hexdigest()
    batch = json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": len(content)}]}).encode()
    _, answer = raw(hub, "POST", "/alice/target.git/info/lfs/objects/batch", batch)
    href = urlsplit(json.loads(answer)["objects"][0]["actions"]["upload"]["href"])
    with socket.create_connection((href.hostname, href.port), timeout=10) as sock:
        request = (
            f"PUT {href.path}?{href.query} HTTP/1.1\r\nHost: {href.netloc}\r\nContent-Length: {len(content)}\r\n\r\n"
        )
        sock.sendall(request.encode() + content[: len(content) // 3])
        sock.shutdown(socket.SHUT_WR)  # the client dies a third of the way through
        answer = b""
        while chunk := sock.recv(65536):  # the server's answer comes once it has given up on the upload
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 400") and b"Truncated" in answer
    blobs = hub.store.dir / "models" / "alice" / "target" / "blobs"
    assert sorted(p.name for p in blobs.iterdir() if len(p.name) != 64) == []
    assert not (blobs / oid).exists()


def test_leftover_temporary_files_are_removed_when_a_store_is_opened(tmp_path: Path) -> None:
    with LocalHub(tmp_path, tokens={TOKEN: ("alice", [])}) as hub:
        HfApi(endpoint=hub.endpoint, token=TOKEN).create_repo("alice/crashed")
    blobs = tmp_path / "models" / "alice" / "crashed" / "blobs"
    (blobs / ".tmp-killed-upload").write_bytes(b"half an object")
    (blobs.parent / ".tmp-killed-commit").write_bytes(b"half a log")
    LocalHub(tmp_path, tokens={TOKEN: ("alice", [])})
    assert not (blobs / ".tmp-killed-upload").exists() and not (blobs.parent / ".tmp-killed-commit").exists()
