"""The README's quickstarts run as written."""

from __future__ import annotations

import math
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quickstarts_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python quickstart"
    monkeypatch.chdir(tmp_path)
    losses = []
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, str(README), "exec"), namespace)  # each quickstart stands alone
        outputs = namespace.get("outputs")
        if getattr(outputs, "loss", None) is not None:
            losses.append(outputs.loss.item())
    assert losses, "no quickstart computed a training loss"
    assert all(math.isfinite(loss) and loss > 0 for loss in losses), losses
