"""The Gumbel-temperature schedule travels with every LPS checkpoint: a user fine-tuning a published checkpoint with
plain `Trainer`, in a process without hfvision, gets `GumbelTemperatureCallback` from the checkpoint in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from hfvision.demo import HIDE_HFVISION
from hfvision.hub.publish import publish
from hfvision.models.lps import LpsResNetForImageClassification
from tests.models.lps.conftest import save_tiny

# Fine-tunes the published checkpoint for 4 steps with the schedule halving tau every step (floor 0.2).
FINETUNE = HIDE_HFVISION + textwrap.dedent(
    """
    import json
    import torch
    from transformers import AutoModelForImageClassification, Trainer, TrainingArguments
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    repo_id, output_dir = sys.argv[1:3]
    model = AutoModelForImageClassification.from_pretrained(repo_id, trust_remote_code=True)
    GumbelTemperatureCallback = get_class_from_dynamic_module("trainer_callback_lps.GumbelTemperatureCallback", repo_id)

    class Seen(GumbelTemperatureCallback.__mro__[1]):  # a TrainerCallback recording tau when each step starts
        taus = []
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            self.taus.append(sorted({float(b) for n, b in model.named_buffers() if n.endswith("gumbel_tau")}))

    generator = torch.Generator().manual_seed(0)
    data = [{"pixel_values": torch.randn(3, 16, 16, generator=generator), "labels": i % 3} for i in range(8)]
    args = TrainingArguments(output_dir, max_steps=4, per_device_train_batch_size=2, use_cpu=True, report_to="none",
                             save_strategy="no", logging_steps=100)
    callback = GumbelTemperatureCallback(decay=0.5, decay_steps=1, min_tau=0.2)
    Trainer(model, args=args, train_dataset=data, callbacks=[callback, Seen()]).train()
    hidden = not any(name.startswith("hfvision") for name in sys.modules)
    print(json.dumps({"taus": Seen.taus, "module": GumbelTemperatureCallback.__module__, "hidden": hidden}))
    """
)


def test_plain_trainer_anneals_a_published_checkpoint_without_hfvision(local_hub, tmp_path):
    checkpoint = save_tiny(LpsResNetForImageClassification, tmp_path / "checkpoint")  # plain save_pretrained
    assert (checkpoint / "trainer_callback_lps.py").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no model card: this test is about the code, not the card
        files = publish(checkpoint, "org/lps-callback", allow_no_card=True)
    assert "trainer_callback_lps.py" in files

    result = subprocess.run(
        [sys.executable, "-c", FINETUNE, "org/lps-callback", str(tmp_path / "finetune")],
        cwd=tmp_path,
        env={**os.environ, "HF_HOME": str(tmp_path / "home"), "PYTHONPATH": "", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["hidden"] and report["module"].startswith("transformers_modules.")
    # tiny config: 2 LPS layers, one temperature; 1 (config.gumbel_tau), then halved every step, floored at 0.2
    assert report["taus"] == [[1.0], [0.5], [0.25], [pytest.approx(0.2)]]  # float32 buffers
