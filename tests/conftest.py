"""Shared test setup: tests reach a local Hub, never huggingface.co.

huggingface_hub reads HF_ENDPOINT and the variables below when it is first imported, so they are set here, at import
time, before any test module imports huggingface_hub, transformers, datasets -- or hfvision, whose `__init__` may
import transformers (which is also why `LocalHub` is imported inside the fixture). The values mirror
`hfvision.hub.local_hub.client_env`. The server starts only for tests that request the `local_hub` fixture.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from hfvision.hub.local_hub import LocalHub

if "huggingface_hub" in sys.modules:
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py could point it at the local Hub")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SESSION_DIR = Path(tempfile.mkdtemp(prefix="hfvision-tests-"))
atexit.register(shutil.rmtree, SESSION_DIR, ignore_errors=True)
HUB_PORT = _free_port()

# Offline switches would stop every client from reaching the local Hub; explicit caches would bypass HF_HOME.
OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
CACHE_VARIABLES = (
    "HF_HUB_CACHE",
    "HF_XET_CACHE",
    "HF_ASSETS_CACHE",
    "HF_DATASETS_CACHE",
    "HF_MODULES_CACHE",
    "TRANSFORMERS_CACHE",
)
for _name in (*OFFLINE_SWITCHES, *CACHE_VARIABLES):
    os.environ.pop(_name, None)
os.environ.update(
    HF_ENDPOINT=f"http://127.0.0.1:{HUB_PORT}",
    HF_HUB_DISABLE_XET="1",
    HF_TOKEN="hf_local",
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HOME=str(SESSION_DIR / "home"),  # hub cache, datasets cache and remote-code modules land in the temp dir
)


@pytest.fixture(scope="session")
def local_hub() -> Iterator[LocalHub]:
    """A `LocalHub` serving `HF_ENDPOINT` from a store in the session temp dir, for the whole session.

    `HF_TOKEN` belongs to `local-user`, member of `org`: the only namespace the tests and demos publish to.
    """
    from hfvision.hub.local_hub import LocalHub

    tokens = {os.environ["HF_TOKEN"]: ("local-user", ["org"])}
    with LocalHub(SESSION_DIR / "store", port=HUB_PORT, tokens=tokens) as hub:
        yield hub
