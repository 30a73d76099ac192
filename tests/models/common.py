"""Checks every hfvision model must pass: what transformers' `ModelTesterMixin` / `ConfigTester` demand.

A test class mixes in `ModelCommonTests` and sets `all_model_classes` and `model_tester`, an object with:
`batch_size`; `get_config()`; `prepare_inputs(model_class) -> dict`; `slice_inputs(inputs, i)` (sample i alone);
`compared(outputs, model_class) -> Tensor` (per-sample outputs, batch first); `recorded(outputs)` -> list of
`(hidden_states, attentions, num_layers, num_heads)` per encoder; `loss_kwargs(model_class)` (what makes `.loss`).
transformers' own `tests/test_modeling_common.py` is not in its wheel, so the behaviours DESIGN.md lists are checked
here.
"""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file, save_file
from transformers.utils import ModelOutput


def flatten_tensors(value: object) -> list[torch.Tensor]:
    """All tensors of a (nested) output, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, ModelOutput):
        value = value.to_tuple()
    if isinstance(value, (tuple, list)):
        return [tensor for item in value for tensor in flatten_tensors(item)]
    return []


class ModelCommonTests:
    model_tester: object
    all_model_classes: tuple[type, ...] = ()

    def build(self, model_class: type, config: object | None = None, **kwargs: object) -> torch.nn.Module:
        torch.manual_seed(0)
        config = config if config is not None else self.model_tester.get_config()
        return model_class._from_config(config, **kwargs).eval()

    def inputs(self, model_class: type) -> dict:
        return self.model_tester.prepare_inputs(model_class)

    # --- config -----------------------------------------------------------------------------------------------
    def test_config_roundtrip_and_common_kwargs(self, tmp_path):
        config = self.model_tester.get_config()
        config_class = type(config)
        config_class()  # constructs with no arguments
        reloaded = config_class.from_dict(json.loads(config.to_json_string()))
        assert reloaded.to_dict() == config.to_dict()
        config.save_pretrained(tmp_path)
        assert config_class.from_pretrained(tmp_path).to_dict() == config.to_dict()
        common = config_class(output_hidden_states=True, return_dict=False, id2label={0: "a", 1: "b", 2: "c"})
        assert common.output_hidden_states and not common.return_dict and common.num_labels == 3

    # --- outputs ----------------------------------------------------------------------------------------------
    def test_return_dict_false_matches(self):
        for model_class in self.all_model_classes:
            model = self.build(model_class)
            with torch.no_grad():
                as_dict = model(**self.inputs(model_class))
                as_tuple = model(**self.inputs(model_class), return_dict=False)
            assert isinstance(as_dict, ModelOutput) and isinstance(as_tuple, tuple)
            dict_tensors, tuple_tensors = flatten_tensors(as_dict), flatten_tensors(as_tuple)
            assert len(dict_tensors) == len(tuple_tensors) > 0
            for left, right in zip(dict_tensors, tuple_tensors, strict=True):
                torch.testing.assert_close(left, right, rtol=0, atol=0)

    def test_eval_is_deterministic(self):
        for model_class in self.all_model_classes:
            model = self.build(model_class)
            with torch.no_grad():
                first = self.model_tester.compared(model(**self.inputs(model_class)), model_class)
                second = self.model_tester.compared(model(**self.inputs(model_class)), model_class)
            torch.testing.assert_close(first, second, rtol=0, atol=0)

    def test_batch_of_n_equals_n_batches_of_one(self):
        for model_class in self.all_model_classes:
            model = self.build(model_class)
            inputs = self.inputs(model_class)
            with torch.no_grad():
                batched = self.model_tester.compared(model(**inputs), model_class)
                singles = [
                    self.model_tester.compared(model(**self.model_tester.slice_inputs(inputs, i)), model_class)
                    for i in range(self.model_tester.batch_size)
                ]
            torch.testing.assert_close(batched, torch.cat(singles), rtol=1e-4, atol=1e-5)

    def test_hidden_states_and_attentions_with_gradients(self):
        for model_class in self.all_model_classes:
            model = self.build(model_class, attn_implementation="eager").train()
            for from_config in (False, True):
                if from_config:
                    model.config.output_hidden_states = model.config.output_attentions = True
                    for sub in ("text_config", "vision_config"):
                        if hasattr(model.config, sub):
                            getattr(model.config, sub).output_hidden_states = True
                            getattr(model.config, sub).output_attentions = True
                    outputs = model(**self.inputs(model_class))
                else:
                    outputs = model(**self.inputs(model_class), output_hidden_states=True, output_attentions=True)
                for hidden_states, attentions, num_layers, num_heads in self.model_tester.recorded(outputs):
                    assert len(hidden_states) == num_layers + 1
                    assert len(attentions) == num_layers
                    batch, tokens = hidden_states[0].shape[:2]
                    assert attentions[0].shape == (batch, num_heads, tokens, tokens)
                    hidden_states[0].retain_grad()
                    attentions[0].retain_grad()
                    (hidden_states[-1].pow(2).sum() + attentions[-1].pow(2).sum()).backward(retain_graph=True)
                    assert hidden_states[0].grad is not None and hidden_states[0].grad.abs().sum() > 0
                    assert attentions[0].grad is not None and attentions[0].grad.abs().sum() > 0
                model.zero_grad()
                model.config.output_hidden_states = model.config.output_attentions = False

    def test_eager_and_sdpa_agree(self):
        for model_class in self.all_model_classes:
            eager = self.build(model_class, attn_implementation="eager")
            sdpa = self.build(model_class, attn_implementation="sdpa")
            with torch.no_grad():
                left = self.model_tester.compared(eager(**self.inputs(model_class)), model_class)
                right = self.model_tester.compared(sdpa(**self.inputs(model_class)), model_class)
            torch.testing.assert_close(left, right, rtol=1e-4, atol=1e-5)

    # --- weights ----------------------------------------------------------------------------------------------
    def test_save_load_bit_identical_safetensors_only(self, tmp_path):
        for model_class in self.all_model_classes:
            model = self.build(model_class)
            model.save_pretrained(tmp_path / model_class.__name__)
            files = os.listdir(tmp_path / model_class.__name__)
            assert "model.safetensors" in files
            assert not [name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl"))]
            reloaded = model_class.from_pretrained(tmp_path / model_class.__name__).eval()
            for name, tensor in model.state_dict().items():
                torch.testing.assert_close(reloaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
            with torch.no_grad():
                left = self.model_tester.compared(model(**self.inputs(model_class)), model_class)
                right = self.model_tester.compared(reloaded(**self.inputs(model_class)), model_class)
            assert torch.equal(left, right)

    def test_missing_keys_are_initialised(self, tmp_path):
        for model_class in self.all_model_classes:
            model = self.build(model_class)
            model.save_pretrained(tmp_path)
            weights = load_file(tmp_path / "model.safetensors")
            dropped = sorted(name for name in weights if name.endswith("weight"))[::3]
            save_file({k: v for k, v in weights.items() if k not in dropped}, tmp_path / "model.safetensors")
            reloaded = model_class.from_pretrained(tmp_path)
            state = reloaded.state_dict()
            for name in dropped:
                assert torch.isfinite(state[name]).all(), name
                assert state[name].abs().max() < 50, f"{name} looks uninitialised"
                assert state[name].float().std() > 0 or state[name].abs().sum() > 0 or "norm" in name, name

    def test_gradient_checkpointing_matches(self):
        for model_class in self.all_model_classes:
            if not model_class.supports_gradient_checkpointing:
                continue
            grads = []
            for checkpointing in (False, True):
                model = self.build(model_class).train()
                if checkpointing:
                    model.activation_checkpointing_enable()
                inputs = {**self.inputs(model_class), **self.model_tester.loss_kwargs(model_class)}
                loss = model(**inputs).loss
                loss.backward()
                grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
            assert grads[0].keys() == grads[1].keys()
            for name in grads[0]:
                torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)

    def test_every_trainable_parameter_gets_a_gradient(self):
        for model_class in self.all_model_classes:
            model = self.build(model_class).train()
            model(**self.inputs(model_class), **self.model_tester.loss_kwargs(model_class)).loss.backward()
            missing = [
                name
                for name, param in model.named_parameters()
                if param.requires_grad and (param.grad is None or not param.grad.abs().sum() > 0)
            ]
            assert not missing, missing
