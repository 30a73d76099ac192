"""`training/demo_common.py`: demos keep the Hub cache in their run folder and show the progress of background runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.training.conftest import TRAINING, load_training_script

# In a fresh interpreter (start_local_hub changes this process's environment): where the Hub clients write.
WHERE = textwrap.dedent(
    f"""
    import sys
    from pathlib import Path
    sys.path.insert(0, {str(TRAINING)!r})
    from demo_common import start_local_hub

    hub = start_local_hub(Path(sys.argv[1]))
    import datasets.config, huggingface_hub.constants
    from transformers.utils import logging

    print(huggingface_hub.constants.HF_HOME, huggingface_hub.constants.HF_HUB_CACHE, datasets.config.HF_DATASETS_CACHE)
    print(huggingface_hub.constants.ENDPOINT == hub.endpoint, logging.is_progress_bar_enabled())
    hub.stop()
    """
)


def test_demos_keep_every_hugging_face_cache_in_the_run_folder(tmp_path):
    result = subprocess.run([sys.executable, "-c", WHERE, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    caches, flags = result.stdout.strip().splitlines()[-2:]
    assert all(Path(cache).is_relative_to(tmp_path / "hf_home") for cache in caches.split())
    assert flags == "True False"  # the local Hub is the endpoint; per-tensor loading bars are off


def test_follow_training_waits_for_every_run_and_reads_their_progress(tmp_path, capsys):
    demo_common = load_training_script("demo_common")
    runs = {}
    for name, exit_code in (("ok", 0), ("broken", 3)):
        log = tmp_path / f"{name}.log"
        # writes tqdm-style updates ("\r 2/4 [...") as a training script's progress bar does, then exits
        code = (
            "import sys, time\n"
            "for s in range(5): sys.stderr.write(f'\\r{s}/4 [00:00]'); time.sleep(0.1)\n"
            f"sys.exit({exit_code})"
        )
        with open(log, "w") as handle:
            runs[name] = (subprocess.Popen([sys.executable, "-c", code], stderr=handle), log)
    assert demo_common.follow_training(runs, total_steps=4) == {"ok": 0, "broken": 3}
    assert "4/4" in capsys.readouterr().err  # both bars reached the runs' last step


def test_make_demo_and_test_never_install_system_packages():
    makefile = TRAINING.parent / "Makefile"
    for target in ("demo", "test"):
        dry_run = subprocess.run(
            ["make", "-n", "-f", str(makefile), "-C", str(makefile.parent), target, "VENV=/nonexistent"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert "apt-get update" not in dry_run  # nothing is installed ...
        assert 'echo "  sudo apt-get install -y $missing"' in dry_run  # ... what is missing is printed
    data = subprocess.run(["make", "-n", "-C", str(makefile.parent), "data"], capture_output=True, text=True).stdout
    assert "apt-get update" in data  # only `make data` installs
