"""Who may do what on the local Hub: tokens, namespaces, private repos, the Host header, signed LFS uploads, branches.

Each test talks to its own `LocalHub` (not the session's) with two users: `alice`, member of the organisation `team`,
and `bob`. Only huggingface_hub's public API is used, plus raw `http.client` requests where a client library would
never send the request (a foreign `Host`, an unsigned LFS upload).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from hfvision.hub.local_hub import LocalHub, parse_token_spec

TOKENS = {"hf_alice": ("alice", ["team"]), "hf_bob": ("bob", [])}
# What an attacker would push: remote code that `trust_remote_code=True` runs on the next load.
INJECTION = {"path_or_fileobj": b"import os  # anything at all", "path_in_repo": "modeling_x.py"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    with LocalHub(tmp_path_factory.mktemp("auth-store"), tokens=TOKENS) as hub:
        yield hub


def client(hub: LocalHub, token: str | bool) -> HfApi:
    """`token=False`: send no token at all (None would fall back to the session's HF_TOKEN)."""
    return HfApi(endpoint=hub.endpoint, token=token)


def raw(hub: LocalHub, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    url = urlsplit(hub.endpoint)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def status_of(call) -> int:
    with pytest.raises(HfHubHTTPError) as error:
        call()
    return error.value.response.status_code


def test_writes_need_a_known_token(hub: LocalHub) -> None:
    alice = client(hub, "hf_alice")
    alice.create_repo("alice/public")
    anonymous, stranger = client(hub, False), client(hub, "hf_unknown")
    for api in (anonymous, stranger):
        assert status_of(lambda api=api: api.create_repo("alice/created-anonymously")) == 401
        assert status_of(lambda api=api: api.upload_file(**INJECTION, repo_id="alice/public")) == 401
        assert status_of(lambda api=api: api.delete_repo("alice/public")) == 401
        assert status_of(lambda api=api: api.create_branch("alice/public", branch="dev")) == 401
    assert status_of(stranger.whoami) == 401 and raw(hub, "GET", "/api/whoami-v2")[0] == 401
    assert not alice.repo_exists("alice/created-anonymously")
    assert alice.list_repo_files("alice/public") == [".gitattributes"]  # nothing was injected
    assert anonymous.list_repo_files("alice/public") == [".gitattributes"]  # public repos read without a token


def test_users_write_only_to_their_namespace_and_orgs(hub: LocalHub) -> None:
    alice, bob = client(hub, "hf_alice"), client(hub, "hf_bob")
    assert alice.create_repo("team/shared").repo_id == "team/shared"
    assert alice.create_repo("no-namespace").repo_id == "alice/no-namespace"  # the token's user, as on the Hub
    bob.create_repo("bob/own")
    assert status_of(lambda: bob.create_repo("alice/by-bob")) == 403
    assert status_of(lambda: bob.create_repo("team/by-bob")) == 403
    assert status_of(lambda: bob.upload_file(**INJECTION, repo_id="team/shared")) == 403
    assert status_of(lambda: bob.delete_repo("team/shared")) == 403
    assert status_of(lambda: bob.create_branch("team/shared", branch="evil")) == 403
    assert status_of(lambda: alice.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="bob/own")) == 403
    assert alice.list_repo_files("team/shared") == [".gitattributes"]
    assert [b.name for b in alice.list_repo_refs("team/shared").branches] == ["main"]


def test_private_repos_answer_404_to_everyone_else(hub: LocalHub, tmp_path: Path) -> None:
    alice, bob, anonymous = client(hub, "hf_alice"), client(hub, "hf_bob"), client(hub, False)
    alice.create_repo("team/secret", private=True)
    alice.upload_file(path_or_fileobj=b"secret weights", path_in_repo="w.txt", repo_id="team/secret")
    assert alice.model_info("team/secret").private is True
    assert alice.model_info("alice/public").private is False
    downloaded = hf_hub_download("team/secret", "w.txt", endpoint=hub.endpoint, token="hf_alice", cache_dir=tmp_path)
    assert Path(downloaded).read_bytes() == b"secret weights"

    for api, token in ((bob, "hf_bob"), (anonymous, False)):
        with pytest.raises(RepositoryNotFoundError) as hidden:
            api.model_info("team/secret")
        assert hidden.value.response.status_code == 404
        assert not api.repo_exists("team/secret")
        with pytest.raises(RepositoryNotFoundError):
            api.list_repo_files("team/secret")
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download("team/secret", "w.txt", endpoint=hub.endpoint, token=token, cache_dir=tmp_path / "other")
    status, body = raw(hub, "GET", "/team/secret/resolve/main/w.txt")
    assert status == 404 and b"secret weights" not in body


def test_whoami_answers_for_the_tokens_user(hub: LocalHub) -> None:
    alice = client(hub, "hf_alice").whoami()
    assert alice["name"] == "alice" and [org["name"] for org in alice["orgs"]] == ["team"]
    assert client(hub, "hf_bob").whoami()["name"] == "bob"


def test_token_specs_of_the_command_line() -> None:
    assert parse_token_spec("alice:hf_a") == ("hf_a", ("alice", []))
    assert parse_token_spec("alice:hf_a:team,lab") == ("hf_a", ("alice", ["team", "lab"]))
    for bad in ("alice", ":hf_a", "alice:", "a:b:c:d"):
        with pytest.raises(ValueError, match="NAME:TOKEN"):
            parse_token_spec(bad)
    with pytest.raises(ValueError, match="name"):
        LocalHub("unused", tokens={"hf_x": ("bad/name", [])})


def test_a_foreign_host_header_is_refused_and_never_echoed(hub: LocalHub) -> None:
    port = urlsplit(hub.endpoint).port
    create = json.dumps({"name": "rebound", "organization": "alice"}).encode()
    for method, path, body in (("GET", "/api/models/alice/public", None), ("POST", "/api/repos/create", create)):
        headers = {"Host": f"attacker.example:{port}", "Authorization": "Bearer hf_alice"}
        status, answer = raw(hub, method, path, body, headers)
        assert status == 400 and b"attacker" not in answer
    assert not client(hub, "hf_alice").repo_exists("alice/rebound")
    assert raw(hub, "GET", "/api/models/alice/public", headers={"Host": f"localhost:{port}"})[0] == 200
    url = client(hub, "hf_alice").create_repo("alice/echo")
    assert url.startswith(hub.endpoint)


def test_lfs_objects_are_only_accepted_at_the_signed_url(hub: LocalHub) -> None:
    content = b"\x00weights that nobody asked for"
    oid = hashlib.sha256(content).hexdigest()
    status, _ = raw(hub, "PUT", f"/alice/public.git/info/lfs/objects/{oid}", content)
    assert status in (401, 403)
    status, _ = raw(hub, "PUT", f"/alice/public.git/info/lfs/objects/{oid}?sig={'0' * 64}", content)
    assert status in (401, 403)
    batch = json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": len(content)}]}).encode()
    assert raw(hub, "POST", "/alice/public.git/info/lfs/objects/batch", batch)[0] == 401  # no token
    status, answer = raw(
        hub, "POST", "/alice/public.git/info/lfs/objects/batch", batch, {"Authorization": "Bearer hf_alice"}
    )
    href = urlsplit(json.loads(answer)["objects"][0]["actions"]["upload"]["href"])
    assert raw(hub, "PUT", f"{href.path}?{href.query}", content)[0] == 200


def test_create_branch_then_commit_and_download_on_it(hub: LocalHub, tmp_path: Path) -> None:
    alice = client(hub, "hf_alice")
    alice.create_repo("alice/branched")
    alice.upload_file(path_or_fileobj=b"v1", path_in_repo="v.txt", repo_id="alice/branched")
    alice.create_branch("alice/branched", branch="dev")
    alice.create_branch("alice/branched", branch="dev", exist_ok=True)
    assert status_of(lambda: alice.create_branch("alice/branched", branch="dev")) == 409
    alice.upload_file(path_or_fileobj=b"v2", path_in_repo="v.txt", repo_id="alice/branched", revision="dev")

    refs = {branch.name: branch.target_commit for branch in alice.list_repo_refs("alice/branched").branches}
    assert set(refs) == {"main", "dev"} and refs["main"] != refs["dev"]
    assert alice.model_info("alice/branched", revision="dev").sha == refs["dev"]
    download = dict(repo_id="alice/branched", filename="v.txt", endpoint=hub.endpoint, token="hf_alice")
    assert Path(hf_hub_download(**download, cache_dir=tmp_path)).read_bytes() == b"v1"
    assert Path(hf_hub_download(**download, revision="dev", cache_dir=tmp_path)).read_bytes() == b"v2"
    assert [c.title for c in alice.list_repo_commits("alice/branched", revision="dev")][1:] == [
        c.title for c in alice.list_repo_commits("alice/branched")
    ]

    alice.create_branch("alice/branched", branch="from-dev", revision="dev")
    assert alice.model_info("alice/branched", revision="from-dev").sha == refs["dev"]
    alice.delete_branch("alice/branched", branch="from-dev")
    assert {b.name for b in alice.list_repo_refs("alice/branched").branches} == {"main", "dev"}
    assert status_of(lambda: alice.create_branch("alice/branched", branch="bad..name")) == 400


def _serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, str, dict[str, str]]:
    """`hfvision hub serve` in a subprocess; returns it, its endpoint and the variables it printed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "hfvision.cli", "hub", "serve", "--store", str(tmp_path), "--port", str(port)]
    server = subprocess.Popen([*command, *args], stdout=subprocess.PIPE, text=True)
    printed = {}
    for line in server.stdout:
        if line.strip().startswith("export "):
            key, _, value = line.strip().removeprefix("export ").partition("=")
            printed[key] = value
        if line.startswith("Serving until interrupted"):
            break
    return server, f"http://127.0.0.1:{port}", printed


def test_hub_serve_takes_tokens_or_generates_one(tmp_path: Path) -> None:
    server, endpoint, printed = _serve(tmp_path / "given", "--token", "alice:hf_given:team", "--token", "bob:hf_b")
    try:
        assert "hf_given" not in printed["HF_TOKEN"]  # a token given on the command line is not echoed
        assert status_of(lambda: HfApi(endpoint=endpoint, token=False).create_repo("team/x")) == 401
        assert status_of(lambda: HfApi(endpoint=endpoint, token="hf_b").create_repo("team/x")) == 403
        assert HfApi(endpoint=endpoint, token="hf_given").create_repo("team/x").repo_id == "team/x"
    finally:
        server.terminate()
        server.wait(timeout=30)

    server, endpoint, printed = _serve(tmp_path / "generated")
    try:
        token = printed["HF_TOKEN"]
        assert token.startswith("hf_") and len(token) > 20
        assert HfApi(endpoint=endpoint, token=token).whoami()["name"] == "local-user"
        assert HfApi(endpoint=endpoint, token=token).create_repo("org/x").repo_id == "org/x"
    finally:
        server.terminate()
        server.wait(timeout=30)
