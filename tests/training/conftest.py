"""Shared by the training-script tests: load a script under `training/` as a module, run it on one thread."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

TRAINING = Path(__file__).resolve().parents[2] / "training"


def load_script_file(path: Path) -> ModuleType:
    """A script (under `training/` or `benchmarks/`: run as files, not installed as a package) as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and HfArgumentParser resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def load_training_script(name: str) -> ModuleType:
    """`training/<name>.py` as a module."""
    return load_script_file(TRAINING / f"{name}.py")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread, as launched runs get (OMP_NUM_THREADS=1): with tiny ops, two OpenMP threads on two shared
    cores spin-wait so much that a run took up to ~70x longer (1.3 s vs 96 s measured) whenever anything else ran."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def single_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="module")
def finetune() -> ModuleType:
    """The generic fine-tuning script, `training/finetune_image_classification.py`."""
    return load_training_script("finetune_image_classification")


def run_finetune(finetune: ModuleType, checkpoint: Path, output_dir: Path, args: list[str]) -> dict[str, float]:
    """The fine-tuning script's `main` on one thread, from `checkpoint` into `output_dir`; returns its metrics."""
    with one_thread():
        return finetune.main(["--model_name_or_path", str(checkpoint), "--output_dir", str(output_dir), *args])
