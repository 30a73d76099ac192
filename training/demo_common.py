"""Shared by the `make demo DEMO=<method>` scripts: the local Hub they publish to, and the run's steps.

`start_local_hub` must run before anything imports `huggingface_hub` (transformers, datasets, hfvision): the Hub
clients read their endpoint from the environment at import time. Each demo script therefore imports this module
first and calls it before its other imports.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_local_hub(output_dir: Path) -> Any:
    """Points every Hub client (this process and its children) at a fresh local Hub under `output_dir/hub`.

    Returns the started `hfvision.hub.local_hub.LocalHub`; call `.stop()` at the end.
    """
    port = _free_port()
    os.environ.update(
        HF_ENDPOINT=f"http://127.0.0.1:{port}",
        HF_HUB_DISABLE_XET="1",
        HF_TOKEN=os.environ.get("HF_TOKEN", "hf_local"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(output_dir / "hf_home"),
    )
    from hfvision.hub.local_hub import LocalHub

    hub = LocalHub(output_dir / "hub", port=port).start()
    print(f"1. local Hub at {hub.endpoint} (store: {output_dir / 'hub'})", flush=True)
    return hub


def step(number: int, message: str) -> None:
    """Prints one numbered step of the demo."""
    print(f"{number}. {message}", flush=True)


def accelerate_command(script: str, args: list[str]) -> list[str]:
    """The `accelerate launch` command line of `training/<script>` on one process, no mixed precision (CPU-safe)."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "training" / script), *args,
    ]  # fmt: skip


def accelerate_launch(script: str, args: list[str]) -> None:
    """`accelerate launch` of `training/<script>` on one process, failing loudly."""
    subprocess.run(accelerate_command(script, args), check=True)
