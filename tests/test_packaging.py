"""The wheel lists every package of the source tree (pyproject's `packages` is explicit for the card templates)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_ships():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "hfvision").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found | {"hfvision.model_cards"} == listed
