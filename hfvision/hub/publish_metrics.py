"""Publish hfvision's `evaluate` metric modules as Hub metric Spaces, so `evaluate.load("org/name")` finds them.

`evaluate.load("<namespace>/<name>")` downloads `<name>.py` from the Space `<namespace>/<name>` on the endpoint
`HF_ENDPOINT` names (the real Hub by default, the local Hub in the tests and demos). Each of
`hfvision/metrics/<name>/` becomes such a Space, laid out as evaluate's own metric Spaces are: the module script, a
README.md whose front matter makes the Hub list it as a metric (`tags: [evaluate, metric]`, a Gradio Space), and the
`app.py` + `requirements.txt` of the metric's widget, which the real Hub runs (the local Hub only serves files).
"""

from __future__ import annotations

import ast
import tempfile
from importlib import resources
from pathlib import Path

from huggingface_hub import HfApi

from hfvision.hub.publish import check_repo_id
from hfvision.metrics import available_metrics

__all__ = ["build_metric_space", "publish_metrics"]

_README = """---
title: {name}
tags:
- evaluate
- metric
description: "{summary}"
sdk: gradio
app_file: app.py
pinned: false
---

# {name}

{docstring}

## Usage

```python
import evaluate

metric = evaluate.load("{repo_id}")
```

Published from hfvision's `hfvision/metrics/{name}/{name}.py`.
"""

_APP = """import evaluate
from evaluate.utils import launch_gradio_widget

module = evaluate.load("{repo_id}")
launch_gradio_widget(module)
"""

_REQUIREMENTS = "evaluate>=0.4\ndatasets\nnumpy\n"


def _check_metric(name: str, repo_id: str) -> None:
    """Raise a ValueError for a metric hfvision does not ship or an invalid repo id."""
    if name not in available_metrics():
        raise ValueError(f"unknown metric {name!r}; hfvision ships {available_metrics()}")
    check_repo_id(repo_id)


def build_metric_space(name: str, repo_id: str, out_dir: str | Path) -> list[str]:
    """Write the Space folder of one shipped metric module.

    Args:
        name: a metric of `hfvision.metrics.available_metrics()`.
        repo_id: the Space it is meant for, `namespace/name`; its name must be `name` (evaluate downloads
            `<repo name>.py`).
        out_dir: destination folder, created if missing.

    Returns:
        Sorted file names written.

    Raises:
        ValueError: for an unknown metric, or a repo id that is not `namespace/<name>`.
    """
    _check_metric(name, repo_id)
    if repo_id.split("/")[1] != name:
        raise ValueError(f"repo_id must end in /{name}: evaluate.load downloads <repo name>.py, got {repo_id!r}")
    script = resources.files("hfvision.metrics").joinpath(name, f"{name}.py").read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(script)) or name
    summary = docstring.split("\n\n")[0].replace("\n", " ").replace('"', "'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.py").write_text(script, encoding="utf-8")
    readme = _README.format(name=name, summary=summary, docstring=docstring, repo_id=repo_id)
    (out / "README.md").write_text(readme, encoding="utf-8")
    (out / "app.py").write_text(_APP.format(repo_id=repo_id), encoding="utf-8")
    (out / "requirements.txt").write_text(_REQUIREMENTS, encoding="utf-8")
    return sorted(path.name for path in out.iterdir())


def publish_metrics(
    namespace: str, names: list[str] | None = None, *, private: bool = False, token: str | None = None
) -> list[str]:
    """Upload shipped metric modules as Spaces `<namespace>/<name>` (created when missing).

    Args:
        namespace: the user or organisation that owns the Spaces.
        names: metrics to publish; None publishes every one of `available_metrics()`.
        private: create missing Spaces as private.
        token: the Hub token; None uses huggingface_hub's (`HF_TOKEN` or `hf auth login`).

    Returns:
        The repo ids published, in order.

    Raises:
        ValueError: for an unknown metric or an invalid namespace, before anything is uploaded.
    """
    names = available_metrics() if names is None else list(names)
    repo_ids = [f"{namespace}/{name}" for name in names]
    for name, repo_id in zip(names, repo_ids, strict=True):
        _check_metric(name, repo_id)
    api = HfApi(token=token)
    for name, repo_id in zip(names, repo_ids, strict=True):
        with tempfile.TemporaryDirectory(prefix="hfvision-metric-") as staging:
            build_metric_space(name, repo_id, staging)
            api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
            api.upload_folder(
                repo_id=repo_id,
                repo_type="space",
                folder_path=staging,
                commit_message=f"Upload the {name} metric with hfvision",
            )
    return repo_ids
