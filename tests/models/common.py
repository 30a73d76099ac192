"""Checks every hfvision model must pass: what transformers' `ModelTesterMixin` / `ConfigTester` demand.

A test class mixes in `ModelCommonTests` and sets `all_model_classes` (every model class of the method, towers
included) and `model_tester`, an object with:
`batch_size`; `get_config(**overrides)` (the method's config; a tower of a composite model is built from the matching
sub-config); `prepare_inputs(model_class) -> dict`; `slice_inputs(inputs, i)` (sample i alone);
`compared(outputs, model_class) -> Tensor` (per-sample outputs, batch first); `recorded(outputs, model_class)` -> list
of `(hidden_states, attentions, num_layers, num_heads)` per encoder; `loss_kwargs(model_class)` (what makes `.loss`;
a class without a loss trains on the squared `compared` outputs);
optionally `base_model_class` and `head_classes` (default: the first class, and the others built from the same config
class) for the base-model-prefix loading checks.
transformers' own `tests/test_modeling_common.py` is not in its wheel, so the behaviours DESIGN.md lists are checked
here, with its semantics (`test_can_init_all_missing_weights`, `test_model_base_model_prefix`,
`test_load_with_mismatched_shapes`, `test_model_main_input_name`, `test_eager_matches_sdpa_inference`).
"""

from __future__ import annotations

import copy
import inspect
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel
from transformers.modeling_utils import AttentionInterface
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

    def config_for(self, model_class: type, **overrides: object) -> object:
        """The tester's config for `model_class` (a tower of a composite model gets its sub-config)."""
        config = self.model_tester.get_config(**overrides)
        if isinstance(config, model_class.config_class):
            return config
        for name in config.sub_configs:
            sub_config = getattr(config, name)
            if isinstance(sub_config, model_class.config_class):
                return sub_config
        raise TypeError(f"no {model_class.config_class.__name__} for {model_class.__name__} in the tester's config")

    def build(self, model_class: type, config: object | None = None, **kwargs: object) -> torch.nn.Module:
        torch.manual_seed(0)
        config = config if config is not None else self.config_for(model_class)
        return model_class._from_config(config, **kwargs).eval()

    def training_loss(self, model: torch.nn.Module, model_class: type, inputs: dict | None = None) -> torch.Tensor:
        """The model's `.loss` on `inputs` (default: the tester's), or (a class without a loss) its squared compared
        outputs."""
        inputs = self.inputs(model_class) if inputs is None else inputs
        outputs = model(**inputs, **self.model_tester.loss_kwargs(model_class))
        loss = getattr(outputs, "loss", None)
        return loss if loss is not None else self.model_tester.compared(outputs, model_class).pow(2).mean()

    def attention_classes(self) -> tuple[type, ...]:
        return tuple(model_class for model_class in self.all_model_classes if model_class._supports_sdpa)

    def base_and_heads(self) -> tuple[type, tuple[type, ...]]:
        base_class = getattr(self.model_tester, "base_model_class", self.all_model_classes[0])
        heads = getattr(self.model_tester, "head_classes", None)
        if heads is None:  # the classes built from the same config (towers of a composite model take sub-configs)
            heads = tuple(
                model_class
                for model_class in self.all_model_classes
                if model_class is not base_class and model_class.config_class is base_class.config_class
            )
        return base_class, heads

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

    # --- construction -----------------------------------------------------------------------------------------
    def test_builds_on_the_meta_device(self):
        """`from_pretrained(device_map=...)` and low-memory loading build the model with no storage: nothing in
        `__init__` may read a tensor's values (schedules are computed in plain Python)."""
        for model_class in self.all_model_classes:
            with torch.device("meta"):
                model = model_class(self.config_for(model_class))
            tensors = [*model.parameters(), *model.buffers()]
            assert tensors and all(tensor.is_meta for tensor in tensors), model_class.__name__

    def test_init_weights_covers_every_parameter_and_buffer(self, monkeypatch):
        """transformers' `test_can_init_all_missing_weights`: a model loaded with an empty state dict is built on the
        meta device and initialised by `_init_weights` alone; with the same seed before each module's init it must
        equal the model built from the config, whose tensors PyTorch's constructors also initialised."""
        initialize = PreTrainedModel._initialize_weights

        def seeded_initialize(model: PreTrainedModel, module: torch.nn.Module, *args: object, **kwargs: object) -> None:
            torch.manual_seed(0)
            initialize(model, module, *args, **kwargs)

        monkeypatch.setattr(PreTrainedModel, "_initialize_weights", seeded_initialize)
        for model_class in self.all_model_classes:
            config = self.config_for(model_class)
            from_config = model_class(config)
            from_nothing = model_class.from_pretrained(None, config=config, state_dict={})
            # every parameter and buffer, non-persistent buffers (absent from checkpoints) included
            expected = {**from_config.state_dict(), **dict(from_config.named_buffers())}
            loaded = {**from_nothing.state_dict(), **dict(from_nothing.named_buffers())}
            assert expected.keys() == loaded.keys()
            different = [name for name in expected if not torch.equal(expected[name], loaded[name])]
            assert not different, f"{model_class.__name__}: not initialised by _init_weights: {different}"

    def test_main_input_name_is_the_first_forward_argument(self):
        """transformers' `test_model_main_input_name`: generic tooling builds inputs from `main_input_name`."""
        for model_class in self.all_model_classes:
            first = list(inspect.signature(model_class.forward).parameters)[1]
            assert model_class.main_input_name == first, model_class.__name__

    def test_forward_kwargs_are_transformers_kwargs(self):
        """Extra forward arguments are typed `Unpack[TransformersKwargs]` (attention and output flags), not `Any`."""
        for model_class in self.all_model_classes:
            variadic = [
                parameter
                for parameter in inspect.signature(model_class.forward).parameters.values()
                if parameter.kind is inspect.Parameter.VAR_KEYWORD
            ]
            for parameter in variadic:
                assert "Unpack[TransformersKwargs]" in str(parameter.annotation), model_class.__name__

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
            unasked = self.model_tester.recorded(model(**self.inputs(model_class)), model_class)
            for hidden_states, attentions, _, _ in unasked:
                assert hidden_states is None and attentions is None, f"{model_class.__name__} records unasked"
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
                recorded = self.model_tester.recorded(outputs, model_class)
                for hidden_states, attentions, num_layers, num_heads in recorded:
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

    def test_eager_and_sdpa_agree(self, monkeypatch):
        """Every attention layer follows `attn_implementation` (at construction and `set_attn_implementation`), and
        eager and SDPA give the same outputs."""
        attention_classes = self.attention_classes()
        if not attention_classes:
            for model_class in self.all_model_classes:  # the skip must be earned: no attention module anywhere
                modules = {type(module).__name__ for module in self.build(model_class).modules()}
                attention = sorted(name for name in modules if "Attention" in name)
                assert not attention, f"{model_class.__name__} has {attention} but does not declare `_supports_sdpa`"
            pytest.skip("no attention layers (`_supports_sdpa` is False on every class): nothing to compare")
        sdpa_calls = []
        sdpa = AttentionInterface._global_mapping["sdpa"]

        def counted_sdpa(*args: object, **kwargs: object) -> object:
            sdpa_calls.append(1)
            return sdpa(*args, **kwargs)

        monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa", counted_sdpa)
        for model_class in attention_classes:
            outputs = {}
            for implementation in ("eager", "sdpa"):
                model = self.build(model_class, attn_implementation=implementation)
                sdpa_calls.clear()
                with torch.no_grad():
                    outputs[implementation] = self.model_tester.compared(model(**self.inputs(model_class)), model_class)
                used_sdpa = len(sdpa_calls)
                assert used_sdpa > 0 if implementation == "sdpa" else used_sdpa == 0, (model_class.__name__, used_sdpa)
            torch.testing.assert_close(outputs["eager"], outputs["sdpa"], rtol=1e-4, atol=1e-5)
            model.set_attn_implementation("eager")  # switched after construction: no SDPA call is left
            sdpa_calls.clear()
            with torch.no_grad():
                model(**self.inputs(model_class))
            assert not sdpa_calls, f"{model_class.__name__}: {len(sdpa_calls)} SDPA calls after switching to eager"

    # --- mixed precision and compilation -----------------------------------------------------------------------
    def test_bf16_autocast_forward_and_backward(self):
        """A training step under CPU bf16 autocast (what `--mixed_precision bf16` runs): no dtype error, a finite
        loss, and finite float32 gradients for the float32 parameters (for a model without weights: for its
        floating-point inputs)."""
        for model_class in self.all_model_classes:
            model = self.build(model_class).train()
            inputs = self.inputs(model_class)
            differentiated = dict(model.named_parameters())
            if not differentiated:  # a model without weights: differentiate in its floating-point inputs
                differentiated = {
                    name: value.requires_grad_(True)
                    for name, value in inputs.items()
                    if isinstance(value, torch.Tensor) and value.is_floating_point()
                }
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = self.training_loss(model, model_class, inputs)
            assert torch.isfinite(loss).all(), model_class.__name__
            loss.backward()
            grads = {name: value.grad for name, value in differentiated.items() if value.grad is not None}
            assert grads, model_class.__name__
            for name, grad in grads.items():
                assert grad.dtype == torch.float32 and torch.isfinite(grad).all(), (model_class.__name__, name)

    def check_compiled_matches_eager(self, model_class: type, backend: str) -> None:
        model = self.build(model_class)
        inputs = self.inputs(model_class)
        torch.compiler.reset()
        compiled = torch.compile(model, backend=backend, fullgraph=False)
        with torch.no_grad():
            expected = self.model_tester.compared(model(**inputs), model_class)
            actual = self.model_tester.compared(compiled(**inputs), model_class)
        torch.compiler.reset()
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5, msg=model_class.__name__)

    def test_torch_compile_matches_eager(self):
        """`torch.compile(model)` (graph breaks allowed) gives the eager outputs, for every class. The default run
        compiles with the `aot_eager` backend (Dynamo capture and AOTAutograd tracing, the steps where a model breaks
        compilation; 3-10 s per tiny class on this 2-core CPU); inductor's C++ code generation took 20 s to 3 min per
        tiny model here (with and without other jobs), so it runs for one class per method in the slow
        `test_torch_compile_inductor_matches_eager`."""
        for model_class in self.all_model_classes:
            self.check_compiled_matches_eager(model_class, "aot_eager")

    @pytest.mark.slow
    def test_torch_compile_inductor_matches_eager(self):
        self.check_compiled_matches_eager(self.all_model_classes[0], "inductor")

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

    def test_base_checkpoint_loads_into_every_head_and_back(self, tmp_path):
        """transformers' `test_model_base_model_prefix` / `test_correct_missing_keys`: a base checkpoint loads into
        each head (the head's own layers missing, every shared weight equal) and a head checkpoint into the base."""
        base_class, heads = self.base_and_heads()
        prefix = base_class.base_model_prefix
        base = self.build(base_class)
        base.save_pretrained(tmp_path / "base")
        for head_class in heads:
            head, info = head_class.from_pretrained(
                tmp_path / "base", config=self.config_for(head_class), output_loading_info=True
            )
            holds_base = isinstance(getattr(head, prefix, None), base_class)
            head_state = head.state_dict()
            shared = {
                name: f"{prefix}.{name}" if holds_base else name
                for name in base.state_dict()
                if (f"{prefix}.{name}" if holds_base else name) in head_state
            }
            assert shared, f"{head_class.__name__} shares no weight with {base_class.__name__}"
            assert info["missing_keys"] == set(head_state) - set(shared.values()), head_class.__name__
            for base_name, head_name in shared.items():
                assert torch.equal(head_state[head_name], base.state_dict()[base_name]), head_name
            head.save_pretrained(tmp_path / head_class.__name__)
            back = base_class.from_pretrained(tmp_path / head_class.__name__, config=self.config_for(base_class))
            for base_name, head_name in shared.items():
                assert torch.equal(back.state_dict()[base_name], head_state[head_name]), base_name

    def test_ignore_mismatched_sizes(self, tmp_path):
        """transformers' `test_load_with_mismatched_shapes`: a checkpoint whose label count differs fails to load
        unless `ignore_mismatched_sizes=True`, which re-initialises only the mismatched weights."""
        for model_class in self.all_model_classes:
            config = self.config_for(model_class)
            model = self.build(model_class, config=config)
            other_config = copy.deepcopy(config)
            other_config.num_labels = config.num_labels + 3
            other_shapes = {name: tensor.shape for name, tensor in model_class(other_config).state_dict().items()}
            mismatched = {name for name, tensor in model.state_dict().items() if tensor.shape != other_shapes[name]}
            path = tmp_path / model_class.__name__
            model.save_pretrained(path)
            if mismatched:
                with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
                    model_class.from_pretrained(path, num_labels=other_config.num_labels)
            reloaded, info = model_class.from_pretrained(
                path, num_labels=other_config.num_labels, ignore_mismatched_sizes=True, output_loading_info=True
            )
            assert {name for name, _, _ in info["mismatched_keys"]} == mismatched
            for name, tensor in model.state_dict().items():
                if name not in mismatched:
                    assert torch.equal(reloaded.state_dict()[name], tensor), name

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
                self.training_loss(model, model_class).backward()
                grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
            assert grads[0].keys() == grads[1].keys()
            for name in grads[0]:
                torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)

    def test_every_trainable_parameter_gets_a_gradient(self):
        for model_class in self.all_model_classes:
            model = self.build(model_class).train()
            self.training_loss(model, model_class).backward()
            missing = [
                name
                for name, param in model.named_parameters()
                if param.requires_grad and (param.grad is None or not param.grad.abs().sum() > 0)
            ]
            assert not missing, missing
