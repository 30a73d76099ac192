"""Shared by the `make demo DEMO=<method>` scripts: the local Hub they publish to, and the run's steps.

`start_local_hub` must run before anything imports `huggingface_hub` (transformers, datasets, hfvision): the Hub
clients read their endpoint from the environment at import time. Each demo script therefore imports this module
first and calls it before its other imports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRAINING_CURVES = "training_curves.png"  # in a run's final folder: `hfvision plot` of its log


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_local_hub(output_dir: Path) -> Any:
    """Points every Hub client (this process and its children) at a fresh local Hub under `output_dir/hub`.

    The Hub cache, datasets cache and remote-code modules go to `output_dir/hf_home` (`HF_HOME`), so a demo never
    writes `~/.cache/huggingface`. Returns the started `hfvision.hub.local_hub.LocalHub`; call `.stop()` at the end.
    """
    port = _free_port()
    token = "hf_demo_" + secrets.token_hex(16)  # fresh for each run, never a real Hub token from the environment
    os.environ.update(
        HF_ENDPOINT=f"http://127.0.0.1:{port}",
        HF_HUB_DISABLE_XET="1",
        HF_TOKEN=token,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(output_dir / "hf_home"),
    )
    # A demo's models load and save in well under a second: transformers' per-tensor loading/saving bars and the Hub's
    # per-file transfer bars would only repeat noise (training, evaluation and data building keep their progress).
    from transformers.utils import logging as transformers_logging

    from hfvision.hub.local_hub import LocalHub

    transformers_logging.disable_progress_bar()
    # The demos publish to `org/...`; the token's user belongs to that organisation.
    hub = LocalHub(output_dir / "hub", port=port, tokens={token: ("local-user", ["org"])}).start()
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


def follow_training(runs: dict[str, tuple[subprocess.Popen, Path]], total_steps: int) -> dict[str, int]:
    """Waits for training processes that write to log files, with one progress bar per run.

    Each bar follows the step count of the run's own progress bar (the latest `<step>/<total_steps> [` that tqdm
    wrote to the log), so the console shows progress while the runs' full output stays in their logs.

    Args:
        runs: `{name: (process, log file)}`.
        total_steps: the runs' number of optimizer steps.

    Returns:
        `{name: exit code}` once every process has ended.
    """
    from tqdm.auto import tqdm

    progress = re.compile(rf"(\d+)/{total_steps} \[")
    bars = {
        name: tqdm(total=total_steps, desc=f"   {name}", unit="step", position=index, dynamic_ncols=True)
        for index, name in enumerate(runs)
    }
    exit_codes: dict[str, int] = {}
    while len(exit_codes) < len(runs):
        for name, (process, log_path) in runs.items():
            if name in exit_codes:
                continue
            returncode = process.poll()  # before reading the log, so a finished run's last step is read
            with open(log_path, "rb") as log:
                log.seek(max(log.seek(0, os.SEEK_END) - 8192, 0))
                steps = progress.findall(log.read().decode("utf-8", errors="replace"))
            if steps:
                bars[name].update(int(steps[-1]) - bars[name].n)
            if returncode is not None:
                exit_codes[name] = returncode
        time.sleep(1)
    for bar in bars.values():
        bar.close()
    return exit_codes


def parse_demo_args(
    argv: list[str] | None, description: str, name: str, repo_id: str, num_examples_help: str
) -> tuple[argparse.Namespace, list[str]]:
    """A stream demo's own flags (`--output_dir`, `--max_steps`, `--repo_id`, `--num_examples`) and the rest, which
    go to its training script."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default=f"runs/demo_{name}")
    parser.add_argument("--max_steps", type=int, default=None, help="override the config's max_steps")
    parser.add_argument("--repo_id", default=repo_id)
    parser.add_argument("--num_examples", type=int, default=6, help=num_examples_help)
    return parser.parse_known_args(argv)


def train_or_reuse(
    script: str, config: str, run_dir: Path, max_steps: int | None, training_flags: list[str]
) -> dict[str, Any]:
    """`accelerate launch training/<script> --config training/configs/<config>` into `run_dir` (resuming from its
    latest checkpoint), unless `run_dir/final` already holds results (with the training curves `save_final` drew);
    returns `final/eval_results.json`."""
    final_dir = run_dir / "final"
    if (final_dir / "eval_results.json").exists():
        print(f"   already trained: {final_dir}", flush=True)
    else:
        launch_args = [
            "--config", str(REPO / "training" / "configs" / config),
            "--output_dir", str(run_dir), "--resume_from_checkpoint", "latest",
        ]  # fmt: skip
        if max_steps is not None:
            launch_args += ["--max_steps", str(max_steps)]
        accelerate_launch(script, launch_args + training_flags)
    return json.loads((final_dir / "eval_results.json").read_text())


def plot_training(run_dir: Path, final_dir: Path) -> Path:
    """Draws the run's logged losses, learning rate and metrics into `final_dir/training_curves.png`, which is
    published with the model (`hfvision publish` uploads the folder's images) for its card to show."""
    from hfvision.plotting import plot_training_curves

    path = plot_training_curves(run_dir, final_dir / TRAINING_CURVES)
    print(f"   training curves: {path}", flush=True)
    return path
