"""`hfvision publish-metrics`: each metric module becomes a Space that `evaluate.load("org/name")` loads by repo id."""

from __future__ import annotations

import evaluate
import pytest
from huggingface_hub import HfApi

from hfvision.cli import main
from hfvision.hub.publish_metrics import build_metric_space, publish_metrics
from hfvision.metrics import available_metrics, load_metric

PREDICTIONS = [[0, 0], [1, 2], [3, 3], [4, 4]]  # per image, the class predicted under each of two shifts
REFERENCES = [0, 1, 3, 2]


def test_a_published_metric_loads_by_repo_id_and_computes_what_the_shipped_module_does(local_hub):
    assert publish_metrics("org", ["shift_consistency"]) == ["org/shift_consistency"]
    files = HfApi().list_repo_files("org/shift_consistency", repo_type="space")
    assert {"shift_consistency.py", "README.md", "app.py", "requirements.txt"} <= set(files)

    from_hub = evaluate.load("org/shift_consistency", "standard", keep_in_memory=True)
    assert type(from_hub).__module__.startswith("evaluate_modules.metrics.org--shift_consistency")
    expected = load_metric("shift_consistency", config_name="standard")
    scores = from_hub.compute(predictions=PREDICTIONS, references=REFERENCES)
    assert scores == expected.compute(predictions=PREDICTIONS, references=REFERENCES)
    assert scores["standard_consistency"] == pytest.approx(0.75)  # 3 of 4 images keep their class


def test_the_command_publishes_every_metric(local_hub, capsys):
    main(["publish-metrics", "org", "--metric", "retrieval_recall", "--metric", "zero_shot_accuracy"])
    assert capsys.readouterr().out.splitlines()[-2:] == ["  org/retrieval_recall", "  org/zero_shot_accuracy"]
    assert HfApi().file_exists("org/retrieval_recall", "retrieval_recall.py", repo_type="space")


def test_space_card_lists_it_as_a_metric(tmp_path):
    assert build_metric_space("simulability", "org/simulability", tmp_path) == [
        "README.md",
        "app.py",
        "requirements.txt",
        "simulability.py",
    ]
    readme = (tmp_path / "README.md").read_text()
    assert "- evaluate\n- metric" in readme and 'evaluate.load("org/simulability")' in readme
    assert set(available_metrics()) >= {"simulability", "shift_consistency"}


@pytest.mark.parametrize(
    ("name", "repo_id", "match"),
    [("no_such_metric", "org/no_such_metric", "unknown metric"), ("simulability", "org/other", "must end in")],
)
def test_bad_arguments_are_refused_before_any_upload(name, repo_id, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        build_metric_space(name, repo_id, tmp_path)
    with pytest.raises(ValueError, match="unknown metric"):
        publish_metrics("org", ["no_such_metric"])
