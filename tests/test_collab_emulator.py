"""Offsite-tuning emulators of the large tiny LLaVA-OneVision (random init, CPU)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from fedmllm.collab.emulator import (
    EmulatorPlan, adapter_keys, build_emulator, emulator_key_to_large, plan_emulator, plug_adapter,
    read_plan, save_emulator,
)
from fedmllm.data.collate import encode_generate
from fedmllm.data.registry import TASKS
from fedmllm.data.synth import suite_texts  # noqa: F401  (registers the synthetic tasks)
from fedmllm.errors import UserError
from fedmllm.federated.algorithms.base import as_arrays, as_tensors
from fedmllm.methods import apply_method
from fedmllm.models.registry import build_model

LARGE = "tiny-llava-ov-large"
LAYER = re.compile(r"language_model\.layers\.(\d+)\.")
PLAN = EmulatorPlan(bottom=1, top=1, middle=(1, 4), num_layers=6)


def _layer(key: str) -> int | None:
    match = LAYER.search(key)
    return int(match.group(1)) if match else None


@pytest.fixture(scope="module")
def large():
    return build_model(LARGE, pretrained=False, seed=0)


@pytest.fixture(scope="module")
def emulator(large):
    return build_emulator(large.model, PLAN)


@pytest.fixture(scope="module")
def inputs(large):
    sample = TASKS.get("synth-gqa").load("test", n=1, seed=0)
    return encode_generate(large.processor, sample)


def test_plan_drops_middle_layers_uniformly():
    plan = plan_emulator(6, 1, 1, 0.5)  # middle 1..4, keep round(0.5 * 4) = 2 at stride 3: 1, 4
    assert plan == PLAN
    assert plan.emulator_layers() == [0, 1, 4, 5] and plan.adapter_layers() == [0, 5]
    assert [plan.to_large(i) for i in range(4)] == [0, 1, 4, 5]
    # 6 middle layers (2..7), keep 3 at stride 2.5: 2 + round(0, 2.5, 5) = 2, 4, 7
    assert plan_emulator(9, 2, 1, 0.5) == EmulatorPlan(2, 1, (2, 4, 7), 9)
    assert plan_emulator(6, keep_middle=1.0).middle == (1, 2, 3, 4)
    assert plan_emulator(6, keep_middle=0.01).middle == (3,)  # at least one: the centre (1 + round(1.5))
    assert plan_emulator(3).emulator_layers() == [0, 1, 2]
    with pytest.raises(ValueError, match="out of range"):
        plan.to_large(4)


@pytest.mark.parametrize("args, message", [
    ((2, 1, 1, 0.5), "deeper than its adapter: 2 layers < bottom \\+ top \\+ 1 = 3"),
    ((4, 2, 2, 0.5), "deeper than its adapter"),
    ((6, 0, 1, 0.5), "bottom must be >= 1"),
    ((6, 1, 0, 0.5), "top must be >= 1"),
    ((6, 1, 1, 0.0), "keep_middle must be in \\(0, 1\\]"),
    ((6, 1, 1, 1.5), "keep_middle must be in \\(0, 1\\]"),
])
def test_plan_errors_name_the_valid_range(args, message):
    with pytest.raises(UserError, match=message) as err:
        plan_emulator(*args)
    assert "\n" not in str(err.value)


def test_emulator_keeps_exactly_the_planned_layers(large, emulator):
    layers = emulator.get_decoder().layers
    assert len(layers) == 4 and len(large.model.get_decoder().layers) == 6  # the large one untouched
    text = emulator.config.text_config
    assert text.num_hidden_layers == 4 and len(text.layer_types) == 4
    assert [layer.self_attn.layer_idx for layer in layers] == [0, 1, 2, 3]
    big, small = large.model.state_dict(), emulator.state_dict()
    # Every emulator weight equals the large weight of its mapped layer (non-layer weights: same key).
    expected = {LAYER.sub(f"language_model.layers.{PLAN.to_large(_layer(k))}.", k) if _layer(k) is not None
                else k: k for k in small}
    assert len(expected) == len(small)
    dropped = {k for k in big if _layer(k) in (2, 3)}
    assert set(expected) == set(big) - dropped
    for large_key, key in expected.items():
        assert torch.equal(big[large_key], small[key]), key
        assert big[large_key].data_ptr() != small[key].data_ptr()  # a copy, not shared storage


def test_emulator_generates_saves_and_loads_back(large, emulator, inputs, tmp_path):
    with torch.inference_mode():
        logits = emulator(**inputs).logits
        cached = emulator.generate(**inputs, max_new_tokens=5, do_sample=False, min_new_tokens=5)
        plain = emulator.generate(**inputs, max_new_tokens=5, do_sample=False, min_new_tokens=5, use_cache=False)
    assert torch.isfinite(logits).all() and logits.shape[-1] == large.model.config.text_config.vocab_size
    assert torch.equal(cached, plain)  # the KV cache indexes the renumbered layers correctly

    folder = save_emulator(dataclasses.replace(large, model=emulator), PLAN, tmp_path / "emulator")
    assert read_plan(folder) == PLAN
    loaded = build_model(str(folder))
    assert loaded.model.config.text_config.num_hidden_layers == 4
    assert loaded.processor.tokenizer.get_vocab() == large.processor.tokenizer.get_vocab()
    ours, theirs = emulator.state_dict(), loaded.model.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    with torch.inference_mode():
        again = loaded.model.generate(**inputs, max_new_tokens=5, do_sample=False, min_new_tokens=5)
    assert torch.equal(again, cached)

    with pytest.raises(ValueError, match="has 6 layers"):
        save_emulator(large, PLAN, tmp_path / "not-an-emulator")


def test_key_mapping_and_split():
    key = "base_model.model.model.language_model.layers.{}.self_attn.q_proj.lora_A.weight"
    assert emulator_key_to_large(key.format(2), PLAN) == key.format(4)
    assert emulator_key_to_large(key.format(3), PLAN) == key.format(5)
    keys = [key.format(i) for i in range(4)]
    assert adapter_keys(keys, PLAN) == ([keys[0], keys[3]], [keys[1], keys[2]])
    with pytest.raises(ValueError, match="out of range"):
        emulator_key_to_large(key.format(4), PLAN)
    with pytest.raises(ValueError, match="not a decoder-layer key"):
        adapter_keys(["base_model.model.model.multi_modal_projector.linear_1.lora_A.weight"], PLAN)


def _hidden(model, inputs):
    with torch.inference_mode():
        return model(**inputs, output_hidden_states=True).hidden_states


def test_plugged_adapter_is_the_emulators_bottom_and_top(inputs):
    base = build_model(LARGE, pretrained=False, seed=0).model  # LoRA wraps it in place: our own copy
    base_hidden = _hidden(base, inputs)
    emulator, e_method, _ = apply_method(build_emulator(base, PLAN), "lora")
    large, l_method, _ = apply_method(base, "lora")
    # A zero adapter (B = 0, peft's init) leaves the large model exactly the base.
    zero_hidden = _hidden(large, inputs)
    assert all(torch.equal(a, b) for a, b in zip(zero_hidden, base_hidden))

    rng = np.random.default_rng(0)
    e_state = {k: rng.normal(0, 0.5, v.shape).astype(v.dtype) if "lora_B" in k else v
               for k, v in as_arrays(e_method.get_state(emulator)).items()}
    e_method.set_state(emulator, as_tensors(e_state))
    adapter, frozen = adapter_keys(e_state, PLAN)
    assert {_layer(k) for k in adapter} == {0, 3} and {_layer(k) for k in frozen} == {1, 2}

    plugged = plug_adapter(e_state, PLAN)
    l_state = as_arrays(l_method.get_state(large))
    assert set(plugged) == {k for k in l_state if _layer(k) in (0, 5)}
    assert all(plugged[k].shape == l_state[k].shape for k in plugged)
    l_method.set_state(large, as_tensors({**l_state, **plugged}))
    after = as_arrays(l_method.get_state(large))
    for k, v in after.items():  # adapter layers hold the emulator's arrays, middle ones stay zero-B
        src = plugged.get(k, l_state[k])
        assert np.array_equal(v, src), k
    assert all(not after[k].any() for k in after if "lora_B" in k and _layer(k) in (1, 2, 3, 4))

    # Layer 0 is the same weights + the same LoRA on the same input in both models.
    large_hidden, emu_hidden = _hidden(large, inputs), _hidden(emulator, inputs)
    assert len(large_hidden) == 7 and len(emu_hidden) == 5
    torch.testing.assert_close(large_hidden[1], emu_hidden[1], rtol=1e-5, atol=1e-6)
    assert (large_hidden[1] - base_hidden[1]).abs().max() > 1e-3  # the plugged adapter acts
