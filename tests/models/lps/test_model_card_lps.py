"""The LPS model-card template renders with Hub metadata and the measured results."""

from __future__ import annotations

from huggingface_hub import ModelCard

from hfvision.hub.card import render_model_card


def test_lps_card_renders_with_metadata_and_results(tmp_path):
    results = [
        {
            "task_type": "image-classification",
            "dataset_type": "fashion_mnist",
            "dataset_name": "Fashion-MNIST (32x32)",
            "dataset_split": "test",
            "metric_type": "accuracy",
            "metric_value": 0.8125,
        },
        {
            "task_type": "image-classification",
            "dataset_type": "fashion_mnist",
            "dataset_name": "Fashion-MNIST (32x32)",
            "dataset_split": "test",
            "metric_type": "circular_shift_consistency",
            "metric_name": "Circular-shift consistency",
            "metric_value": 1.0,
        },
    ]
    card = render_model_card(
        "lps",
        model_id="org/lps-resnet18-tiny",
        eval_results=results,
        training_config={"learning_rate": 0.05, "gumbel_tau": [1.0, 0.05]},
        datasets=["org/fashion-mnist"],
        downsample="lps",
    )
    card.save(tmp_path / "README.md")
    reloaded = ModelCard.load(tmp_path / "README.md")
    assert reloaded.data.pipeline_tag == "image-classification" and "lps" in reloaded.data.tags
    assert [r.metric_value for r in reloaded.data.eval_results] == [0.8125, 1.0]
    text = str(card)
    assert "| Circular-shift consistency | 1.0000 |" in text
    assert "`downsample: lps`" in text and "org/lps-resnet18-tiny" in text and "{{" not in text
