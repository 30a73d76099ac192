"""The AutoLink model-card template renders with Hub metadata, the measured results and the loss that was used."""

from __future__ import annotations

from huggingface_hub import ModelCard

from hfvision.hub.card import render_model_card

RESULTS = [
    {
        "task_type": "keypoint-detection",
        "dataset_type": "stick-figures",
        "dataset_name": "Stick figures (64x64)",
        "dataset_split": "validation",
        "metric_type": "nme",
        "metric_name": "Regressed keypoint NME",
        "metric_value": 0.0712,
    },
    {
        "task_type": "keypoint-detection",
        "dataset_type": "stick-figures",
        "dataset_name": "Stick figures (64x64)",
        "dataset_split": "validation",
        "metric_type": "precision",
        "metric_name": "Skeleton edge precision",
        "metric_value": 0.8,
    },
]


def render(tmp_path, **template_vars) -> tuple[ModelCard, str]:
    card = render_model_card(
        "autolink",
        model_id="org/autolink-small",
        eval_results=RESULTS,
        training_config={"learning_rate": 1e-3, "max_steps": 1500},
        datasets=["org/stick-figures"],
        num_keypoints=6,
        edge_thickness=4e-3,
        **template_vars,
    )
    card.save(tmp_path / "README.md")
    return ModelCard.load(tmp_path / "README.md"), str(card)


def test_autolink_card_renders_with_metadata_results_and_the_fallback_loss(tmp_path):
    reloaded, text = render(tmp_path, perceptual_loss="l1_ssim")
    assert reloaded.data.pipeline_tag == "keypoint-detection" and "autolink" in reloaded.data.tags
    assert [r.metric_value for r in reloaded.data.eval_results] == [0.0712, 0.8]
    assert "| Skeleton edge precision | 0.8000 |" in text and "| Regressed keypoint NME | 0.0712 |" in text
    assert "weight-free fallback (`perceptual_loss: l1_ssim`)" in text and "user-supplied backbone" not in text
    assert "org/autolink-small" in text and "{{" not in text and "6 keypoints per image" in text


def test_autolink_card_names_a_user_supplied_perceptual_backbone(tmp_path):
    _, text = render(tmp_path, perceptual_loss="vgg", perceptual_backbone_description="torchvision VGG16 (ImageNet)")
    assert "user-supplied backbone torchvision VGG16 (ImageNet)" in text and "weight-free fallback" not in text
