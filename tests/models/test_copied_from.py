"""Code marked `# Copied from hfvision.models.<method>.<module>.<name>` must equal its original.

Model folders are self-contained (a checkpoint carries its folder's code as remote code), so a block two methods need
is written once and copied with that marker (DESIGN.md, "Model folders are self-contained"); this test finds every
marker in `hfvision/models/` and keeps each copy identical to its original, as transformers' `check_copies` does.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import hfvision.models

MODELS_DIR = Path(hfvision.models.__file__).parent
MARKER = re.compile(r"^\s*# Copied from (hfvision\.models\.[\w.]+)\s*$")


def _definitions(body: list[ast.stmt], prefix: str = ""):
    """(first line including decorators, qualified name) of every function and class, nested ones included."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            first_line = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
            yield first_line, prefix + node.name
            if isinstance(node, ast.ClassDef):
                yield from _definitions(node.body, f"{prefix}{node.name}.")


def _copies() -> list[tuple[str, str, str]]:
    """(copy's module, copy's qualified name, original's dotted path) for every marker."""
    found = []
    for path in sorted(MODELS_DIR.glob("*/*.py")):
        source = path.read_text(encoding="utf-8")
        definitions = dict(_definitions(ast.parse(source).body))
        module = f"hfvision.models.{path.parent.name}.{path.stem}"
        for number, line in enumerate(source.splitlines(), start=1):
            match = MARKER.match(line)
            if match:
                assert number + 1 in definitions, f"{path}:{number}: the marker must precede a def or class"
                found.append((module, definitions[number + 1], match.group(1)))
    return found


def _resolve(module_name: str, qualified_name: str) -> object:
    target = importlib.import_module(module_name)
    for attribute in qualified_name.split("."):
        target = getattr(target, attribute)
    return target


def _resolve_dotted(dotted: str) -> object:
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
        try:
            return _resolve(".".join(parts[:split]), ".".join(parts[split:]))
        except ModuleNotFoundError:
            continue
    raise ImportError(dotted)


COPIES = _copies()


def test_the_known_copies_are_found():
    originals = {original for _, _, original in COPIES}
    assert "hfvision.models.pyramidclip.modeling_pyramidclip._check_pixel_values" in originals
    assert "hfvision.models.pyramidclip.image_processing_pyramidclip.to_8bit_images" in originals
    assert "hfvision.models.lps.image_processing_lps.LpsImageProcessor.save_pretrained" in originals


@pytest.mark.parametrize(("module", "name", "original"), COPIES, ids=[f"{m}.{n}" for m, n, _ in COPIES])
def test_copy_equals_its_original(module, name, original):
    copy_source = inspect.getsource(_resolve(module, name))
    original_source = inspect.getsource(_resolve_dotted(original))
    assert copy_source == original_source, f"{module}.{name} differs from {original}; copy the original again"
