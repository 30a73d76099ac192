"""`hfvision demo` runs end to end: save, reload through the Auto classes and remote code, zero-shot pipeline."""

from __future__ import annotations

from hfvision.cli import main


def test_demo_prints_predictions(tmp_path, capsys):
    main(["demo", "--output-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "identical logits: True" in printed
    assert "transformers_modules." in printed  # step 4 ran the checkpoint's own code
    assert (tmp_path / "pyramidclip-tiny" / "model.safetensors").exists()
    scores = [float(line.split()[0]) for line in printed.splitlines()[-6:]]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-3
