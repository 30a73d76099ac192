"""`evaluate` metric modules shipped with hfvision, loadable offline.

Each metric lives in `hfvision/metrics/<name>/<name>.py` (the layout `evaluate.load` expects of a local module) and
ships as package data. `evaluate`'s Hub metrics are not reachable offline, so load these by name::

    from hfvision.metrics import load_metric

    accuracy = load_metric("zero_shot_accuracy")
    accuracy.compute(predictions=logits, references=labels)  # {"top1_accuracy": ..., "top5_accuracy": ...}
"""

from importlib import resources

import evaluate

__all__ = ["available_metrics", "load_metric"]


def available_metrics() -> list[str]:
    """Names of the metric modules shipped with hfvision.

    Returns:
        Sorted folder names under `hfvision/metrics/` that hold a `<name>/<name>.py` module script.
    """
    root = resources.files(__name__)
    return sorted(
        entry.name for entry in root.iterdir() if entry.is_dir() and entry.joinpath(f"{entry.name}.py").is_file()
    )


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """Load a shipped metric module with `evaluate.load`, from its local path (no network).

    Args:
        name: a metric folder name, e.g. `"zero_shot_accuracy"` or `"retrieval_recall"`; see `available_metrics()`.
        **kwargs: forwarded to `evaluate.load` (e.g. `experiment_id`, `num_process`, `process_id` for distributed
            evaluation). `keep_in_memory` defaults to True for single-process use: no Arrow cache file or file lock,
            so a `compute` that raised does not stall the next one; multi-process evaluation needs the files.

    Returns:
        The loaded `evaluate.EvaluationModule`.

    Raises:
        ValueError: if no metric of that name is shipped.
    """
    kwargs.setdefault("keep_in_memory", kwargs.get("num_process", 1) == 1)
    available = available_metrics()
    if name not in available:
        raise ValueError(f"unknown metric {name!r}; hfvision ships {available}")
    # as_file gives a real directory even when the package is imported from a zip; evaluate copies the script into
    # its modules cache ($HF_HOME/modules/evaluate_modules) before importing it, so the path need not outlive this call.
    with resources.as_file(resources.files(__name__).joinpath(name)) as metric_dir:
        return evaluate.load(str(metric_dir), **kwargs)
