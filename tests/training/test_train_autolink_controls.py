"""The controls and paper settings of training/train_autolink.py: the frozen graph, the shuffled graph, the constant
learning rate and the learned feature loss that stands in for VGG16."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers

from hfvision.data import STICK_FIGURE_BONES, StickFigures
from hfvision.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR
from hfvision.models.autolink import AutoLinkForSelfSupervisedKeypoints
from tests.training.conftest import load_training_script, one_thread
from tests.training.test_train_autolink import TINY_ARGS

script = load_training_script("train_autolink")


def tiny_model(freeze_graph: bool) -> AutoLinkForSelfSupervisedKeypoints:
    model_args = script.ModelArguments(model_preset="autolink-tiny", num_keypoints=7, freeze_graph=freeze_graph)
    model, _ = script.build_model(model_args)
    return model


def figures(count: int = 8, seed: int = 0) -> torch.Tensor:
    processor = script.AutoLinkImageProcessor(size={"height": 32, "width": 32})
    images = [figure["image"] for figure in StickFigures(count, image_size=32, seed=seed)]
    return processor(images, return_tensors="pt").pixel_values


def train_steps(model: AutoLinkForSelfSupervisedKeypoints, num_steps: int, tmp_path) -> None:
    """The script's optimiser (AdamW, weight decay on every trainable parameter), a few steps on stick figures."""
    training_args = script.TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-2, warmup_steps=0)
    optimizer, lr_scheduler = script.build_optimizer(model, training_args)
    pixel_values = figures()
    for step in range(num_steps):
        loss = model(pixel_values=pixel_values, generator=torch.Generator().manual_seed(step)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lr_scheduler.step()


@pytest.mark.parametrize("freeze_graph", [True, False])
def test_frozen_graph_stays_bit_identical_while_the_detector_trains(freeze_graph, tmp_path):
    torch.manual_seed(0)
    model = tiny_model(freeze_graph)
    graph_before = model.autolink.graph.edge_scores.detach().clone()
    head_before = model.autolink.detector.heatmap_head.weight.detach().clone()
    with one_thread():
        train_steps(model, 2, tmp_path)
    assert not torch.equal(model.autolink.detector.heatmap_head.weight, head_before)  # the detector trains
    # the control, and its negative: the same steps move a learnable graph (gradient and weight decay)
    assert torch.equal(model.autolink.graph.edge_scores, graph_before) is freeze_graph
    assert model.autolink.graph.edge_scores.requires_grad is not freeze_graph


def test_frozen_graph_run_saves_its_initial_graph(tmp_path):
    """Through the real `main`: accelerate's prepare and the checkpoint keep the frozen graph as initialised."""
    with one_thread():
        metrics = script.main(
            [*TINY_ARGS, "--output_dir", str(tmp_path), "--max_steps", "3", "--eval_steps", "3", "--freeze_graph"]
        )
    transformers.set_seed(0)  # the run's seed: the model the run started from
    initial = tiny_model(freeze_graph=True)
    final = AutoLinkForSelfSupervisedKeypoints.from_pretrained(tmp_path / "final")
    assert torch.equal(final.autolink.graph.edge_scores, initial.autolink.graph.edge_scores)
    assert not torch.equal(final.autolink.detector.heatmap_head.weight, initial.autolink.detector.heatmap_head.weight)
    assert json.loads((tmp_path / "final" / "eval_results.json").read_text())["config"]["freeze_graph"] is True
    assert metrics["eval/edge_precision_chance"] == pytest.approx(6 / 21)


def test_shuffled_graph_is_a_seeded_permutation_of_the_learned_weights():
    torch.manual_seed(0)
    model = tiny_model(freeze_graph=False)
    first, second = torch.triu_indices(7, 7, offset=1)
    learned = model.autolink.graph().detach().clone()
    scores = model.autolink.graph.edge_scores.detach().clone()
    with script.shuffled_graph(model, seed=3) as permutation:
        shuffled = model.autolink.graph().detach()
        assert torch.equal(shuffled[first, second], learned[first, second][permutation])
        assert torch.equal(shuffled, shuffled.T) and not shuffled.diagonal().any()  # still a graph
        assert not torch.equal(shuffled, learned)  # the pairs lost their weights
    assert torch.equal(model.autolink.graph.edge_scores, scores)  # restored bit-identical
    with script.shuffled_graph(model, seed=3) as again, script.shuffled_graph(model, seed=4) as other:
        assert torch.equal(again, permutation) and not torch.equal(other, permutation)
    assert torch.equal(model.autolink.graph.edge_scores, scores)


def test_evaluation_reports_chance_levels_and_the_shuffled_graph(tmp_path):
    """The learned graph's scores come with their exact chance levels, and the shuffled control with its own: the
    same keypoints (so the same chance) and the learned weights on other pairs (so a different reconstruction)."""
    torch.manual_seed(0)
    model = tiny_model(freeze_graph=False)
    with torch.no_grad():  # a graph with clearly different weights, so that shuffling changes the edge map
        model.autolink.graph.edge_scores.copy_(torch.linspace(-4, 4, 49).view(7, 7) / model.config.graph_lr_scale)
    stick_figures = StickFigures(40, image_size=32, seed=1)
    data = script.EvalData(
        pixel_values=figures(40, seed=1),
        keypoints=np.stack([figure["keypoints"] for figure in stick_figures]),
        images=[],
        bones=[list(bone) for bone in STICK_FIGURE_BONES],
    )
    metrics = script.evaluate_keypoints(model, data, batch_size=8, device=torch.device("cpu"), shuffled_graph_seed=0)
    assert metrics["edge_precision_chance"] == pytest.approx(6 / 21)  # 6 bones among 21 pairs, one keypoint each
    assert metrics["shuffled_graph_edge_precision_chance"] == metrics["edge_precision_chance"]
    chance = metrics["nearest_joint_bone_recall_chance"]
    assert 0 <= chance <= 1 and metrics["shuffled_graph_nearest_joint_bone_recall_chance"] == chance
    assert metrics["shuffled_graph_reconstruction_loss"] != metrics["reconstruction_loss"]
    assert metrics["shuffled_graph_bone_to_nonbone_weight_ratio"] != metrics["bone_to_nonbone_weight_ratio"]


def test_constant_learning_rate_and_bad_schedule(tmp_path):
    model = tiny_model(freeze_graph=False)
    training_args = script.TrainingArguments(
        output_dir=str(tmp_path), learning_rate=1e-4, warmup_steps=0, max_steps=10, lr_schedule="constant"
    )
    optimizer, lr_scheduler = script.build_optimizer(model, training_args)
    rates = []
    for _ in range(10):
        optimizer.step()
        lr_scheduler.step()
        rates.append(lr_scheduler.get_last_lr()[0])
    assert rates == [1e-4] * 10  # the paper's: no warmup, no decay
    with pytest.raises(ValueError, match="--lr_schedule"):
        script.parse_args(["--stick_figures", "--lr_schedule", "step", "--output_dir", "unused"])


@pytest.mark.skipif(not DEFAULT_FASHION_MNIST_DIR.is_dir(), reason=f"{DEFAULT_FASHION_MNIST_DIR} missing")
def test_learned_feature_loss_trains_the_network_once_and_feeds_the_vgg_loss(tmp_path):
    accelerator = script.Accelerator(cpu=True)
    with one_thread():
        network, accuracy = script.perceptual_backbone(tmp_path, 32, steps=3, seed=0, accelerator=accelerator)
        saved = (tmp_path / script.FEATURE_NETWORK_FILE).read_bytes()
        again, _ = script.perceptual_backbone(tmp_path, 32, steps=3, seed=1, accelerator=accelerator)
    assert (tmp_path / script.FEATURE_NETWORK_FILE).read_bytes() == saved  # found, not trained again
    assert 0 <= accuracy <= 1
    images = torch.randn(2, 3, 32, 32)
    features = network(images)
    assert [feature.shape for feature in features] == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]
    assert all(torch.equal(a, b) for a, b in zip(features, again(images), strict=True))

    model_args = script.ModelArguments(model_preset="autolink-tiny", num_keypoints=7, perceptual_backbone=str(tmp_path))
    model, _ = script.build_model(model_args)
    assert model.config.perceptual_loss == "vgg"
    model.set_perceptual_backbone(network)
    outputs = model(pixel_values=figures(2), generator=torch.Generator().manual_seed(0))
    assert outputs.loss == outputs.perceptual_loss and outputs.loss > 0 and outputs.l1_loss is None
    outputs.loss.backward()
    assert model.autolink.detector.heatmap_head.weight.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in network.parameters())  # the feature network stays fixed


def test_evaluations_with_the_shuffled_control_leave_training_unchanged(tmp_path):
    """The shuffled control permutes the live model's graph during evaluation: training must not see it. A run that
    evaluates at every step ends with the same weights as one that evaluates only at the end."""
    runs = {}
    with one_thread():
        for eval_steps in ("1", "3"):
            output_dir = tmp_path / f"eval-every-{eval_steps}"
            script.main([*TINY_ARGS, "--output_dir", str(output_dir), "--max_steps", "3", "--eval_steps", eval_steps])
            runs[eval_steps] = AutoLinkForSelfSupervisedKeypoints.from_pretrained(output_dir / "final").state_dict()
    assert runs["1"].keys() == runs["3"].keys()
    assert all(torch.equal(runs["1"][name], runs["3"][name]) for name in runs["1"])
