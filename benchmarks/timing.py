"""The side-by-side timer the speed benchmarks share (`speed.py`, `lps_speed.py`, `score_sde_speed.py`,
`vatt_speed.py`, `mcmae_vs_vitmae.py`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def timed(runs: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, float]:
    """Median milliseconds of each `run()` over `repeats` rounds, after one warm-up call each.

    The runs take turns within every round, so a busy machine slows them all alike and the ratios stay fair; on a CUDA
    device each call is bracketed by synchronisations.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1000 for name, values in times.items()}
