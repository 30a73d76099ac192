"""Entry point of the `hfvision` console script, outside the hfvision package.

Importing anything under `hfvision` first runs `hfvision/__init__.py`, which registers every model with transformers
and so imports torch (seconds). `hfvision --help`, `--version` and argument errors need none of that, so this module
loads the command's own file, `hfvision/cli.py` (standard library only at its top), without importing the package;
each subcommand then imports what it needs when it runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    package = importlib.util.find_spec("hfvision")  # locates the package without running its __init__
    if package is None or package.origin is None:
        raise ModuleNotFoundError("hfvision is not installed")
    spec = importlib.util.spec_from_file_location("_hfvision_command", Path(package.origin).with_name("cli.py"))
    command = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(command)
    command.main(argv)


if __name__ == "__main__":
    main()
