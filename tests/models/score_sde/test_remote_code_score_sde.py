"""Saved Score-SDE models (the network and the empirical score with its stored set) load by `AutoModel`, with hfvision
and as remote code in a process without it, and give the same scores."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from hfvision.demo import HIDE_HFVISION
from hfvision.models.score_sde import Circle, EmpiricalScoreModel, ScoreSdeConfig, ScoreSdeModel

# Runs in a fresh interpreter: hfvision is made unimportable before transformers is imported.
REMOTE_SCRIPT = HIDE_HFVISION + textwrap.dedent(
    """
    import sys
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel

    network_path, empirical_path, inputs_path, out = sys.argv[1:5]
    inputs = load_file(inputs_path)
    network = AutoModel.from_pretrained(network_path, trust_remote_code=True)
    empirical = AutoModel.from_pretrained(empirical_path, trust_remote_code=True)
    assert type(network).__module__.startswith("transformers_modules"), type(network).__module__
    with torch.no_grad():
        network_score = network(inputs["sample"], sigma=inputs["sigma"]).score
        empirical_score = empirical(inputs["sample"], sigma=inputs["sigma"]).score
        loss = network(inputs["sample"], sigma=inputs["sigma"], noise=inputs["noise"], return_loss=True).loss
    save_file({"network": network_score, "empirical": empirical_score, "loss": loss.reshape(1)}, out)
    hidden = not any(name.startswith("hfvision") for name in sys.modules)
    print("hfvision hidden:", hidden, type(network).__name__, type(empirical).__name__)
    """
)


def save_tiny(path) -> tuple[ScoreSdeModel, EmpiricalScoreModel]:
    torch.manual_seed(0)
    network = ScoreSdeModel(ScoreSdeConfig.from_preset("score-sde-tiny", data_dim=10, sde="vp")).eval()
    network.save_pretrained(path / "network")
    empirical = EmpiricalScoreModel.from_training_points(Circle(10).sample(16, torch.Generator().manual_seed(0)))
    empirical.save_pretrained(path / "empirical")
    return network, empirical


def test_save_and_load_by_auto_model(tmp_path):
    network, empirical = save_tiny(tmp_path)
    assert {"configuration_score_sde.py", "modeling_score_sde.py", "model.safetensors"} <= set(
        os.listdir(tmp_path / "empirical")
    )
    assert torch.equal(
        load_file(tmp_path / "empirical" / "model.safetensors")["training_points"], empirical.training_points
    )
    reloaded_network = AutoModel.from_pretrained(tmp_path / "network")
    reloaded_empirical = AutoModel.from_pretrained(tmp_path / "empirical")
    assert type(reloaded_network) is ScoreSdeModel and type(reloaded_empirical) is EmpiricalScoreModel
    assert reloaded_network.config.sde == "vp" and reloaded_empirical.config.num_training_points == 16
    sample = torch.randn(4, 10, generator=torch.Generator().manual_seed(1))
    for original, reloaded in ((network, reloaded_network), (empirical, reloaded_empirical)):
        with torch.no_grad():
            assert torch.equal(original(sample, sigma=0.1).score, reloaded(sample, sigma=0.1).score)


def test_remote_code_in_a_process_without_hfvision(tmp_path):
    network, empirical = save_tiny(tmp_path)
    generator = torch.Generator().manual_seed(1)
    inputs = {
        "sample": torch.randn(4, 10, generator=generator),
        "sigma": torch.tensor([0.01, 0.1, 0.5, 2.0]),
        "noise": torch.randn(4, 10, generator=generator),
    }
    save_file(inputs, tmp_path / "inputs.safetensors")
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    out = tmp_path / "remote.safetensors"
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        str(script),
        *(str(tmp_path / name) for name in ("network", "empirical")),
        str(tmp_path / "inputs.safetensors"),
        str(out),
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hfvision hidden: True ScoreSdeModel EmpiricalScoreModel" in result.stdout
    remote = load_file(out)
    with torch.no_grad():
        assert torch.equal(remote["network"], network(inputs["sample"], sigma=inputs["sigma"]).score)
        assert torch.equal(remote["empirical"], empirical(inputs["sample"], sigma=inputs["sigma"]).score)
        loss = network(inputs["sample"], sigma=inputs["sigma"], noise=inputs["noise"], return_loss=True).loss
    assert torch.equal(remote["loss"], loss.reshape(1))
