"""Tuning methods: one contract row per registered method, plus option and error checks.

Models are the embedded tiny LLaVA-OneVision / VILA-style models at random init
(``build_model(..., pretrained=False)``); batches are real processor output for a random image
followed by random answer tokens, so every check runs the real forward pass.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict
from PIL import Image

from fedmllm.errors import UserError
from fedmllm.methods import METHODS, apply_method, load_method, make_method, trainable_summary
from fedmllm.models import groups as groups_mod
from fedmllm.models.registry import build_model
from fedmllm.training import TrainConfig, train_local

# Smaller than the defaults where the default would dominate the test's runtime.
FAST_OPTIONS = {"vera": {"r": 16}, "top_layers": {"k": 2}}


def fresh(name: str = "tiny-llava-ov") -> torch.nn.Module:
    return build_model(name, pretrained=False, seed=0).model


def token_batch(name: str = "tiny-llava-ov", n: int = 4, seed: int = 0, text_len: int = 8) -> dict:
    """Processor output for ``n`` copies of a random image, then random tokens; row i has i+1
    answer tokens in ``labels`` (different counts per row)."""
    proc = build_model(name, pretrained=False).processor
    rs = np.random.RandomState(seed)
    img = Image.fromarray(rs.randint(0, 255, (64, 64, 3), dtype=np.uint8))
    enc = proc(text=[proc.image_token] * n, images=[img] * n, return_tensors="pt")
    specials = set(proc.tokenizer.all_special_ids)
    pool = torch.tensor([i for i in range(len(proc.tokenizer)) if i not in specials])
    text = pool[torch.from_numpy(rs.randint(0, len(pool), (n, text_len)))]
    ids = torch.cat([enc["input_ids"], text], 1)
    labels = torch.full_like(ids, -100)
    for i in range(n):
        k = 1 + i % text_len
        labels[i, -k:] = ids[i, -k:]
    batch = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
    batch.update(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    return batch


def rows(batch: dict):
    """collate for `train_local`: samples are row indices of a fixed batch."""
    return lambda idx: {k: v[idx] for k, v in batch.items()}


@pytest.fixture(scope="module")
def batch():
    return token_batch()


def _assert_states_equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name, batch, tmp_path):
    base = fresh()
    with torch.no_grad():
        base_logits = base(**batch).logits
    model, method, options = apply_method(base, name, FAST_OPTIONS.get(name))
    assert method.name == name and options is method.options

    # Exactly the declared parameters train.
    live = method.state_parameters(model)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable and trainable == {id(p) for p in live.values()}
    assert trainable_summary(model)["trainable"] == sum(p.numel() for p in live.values())
    names = method.state_names(model)
    state = method.get_state(model)
    assert names == list(live) == list(state)

    # Identity at init where the method guarantees it.
    if method.identity_at_init:
        with torch.no_grad():
            torch.testing.assert_close(model(**batch).logits, base_logits, rtol=0, atol=1e-5)

    # get_state: detached CPU clones, equal to the live values.
    for k, p in live.items():
        assert state[k].device.type == "cpu" and not state[k].requires_grad
        assert torch.equal(state[k], p.detach().cpu())
    with torch.no_grad():
        for p in live.values():
            p.add_(1.0)
    assert all(not torch.equal(state[k], p.detach().cpu()) for k, p in live.items())

    # set_state(get_state) round-trips exactly; strictness.
    method.set_state(model, state)
    _assert_states_equal(method.get_state(model), state)
    first = names[0]
    with pytest.raises(ValueError, match="missing"):
        method.set_state(model, {k: v for k, v in state.items() if k != first})
    with pytest.raises(ValueError, match="unexpected"):
        method.set_state(model, {**state, "not.a.key": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        method.set_state(model, {**state, first: torch.zeros(*state[first].shape, 2)})

    # Training changes the state and lowers the loss on a fixed batch.
    model.eval()
    with torch.no_grad():
        before = model(**batch).loss.item()
    train_local(model, list(range(4)), rows(batch), TrainConfig(lr=1e-2, steps=4, batch_size=4), seed=0)
    model.eval()
    with torch.no_grad():
        after = model(**batch).loss.item()
    trained = method.get_state(model)
    assert any(not torch.equal(trained[k], state[k]) for k in state)
    assert after < before

    # save → load into a fresh model gives the identical state.
    out = method.save(model, tmp_path / "saved")
    again, method2, _ = apply_method(fresh(), name, FAST_OPTIONS.get(name))
    method2.load(again, out)
    _assert_states_equal(method2.get_state(again), trained)
    reloaded, method3, options3 = load_method(fresh(), out)
    assert options3 == options
    _assert_states_equal(method3.get_state(reloaded), trained)
    if method.is_peft:
        assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
        from_peft = PeftModel.from_pretrained(fresh(), str(out))
        peft_state = get_peft_model_state_dict(from_peft)
        assert set(peft_state) == set(trained)
        assert all(torch.equal(peft_state[k].cpu(), trained[k]) for k in trained)


@pytest.mark.parametrize("name", METHODS.names())
def test_method_declaration(name):
    cls = METHODS.get(name)
    assert cls.name == name and cls.family in ("selective", "reparameterization", "additive")
    assert cls.__doc__ and cls.Options.__doc__
    defaults = make_method(name).options
    assert dataclasses.is_dataclass(defaults)


def test_families_and_peft_flags():
    fam = {n: METHODS.get(n).family for n in METHODS.names()}
    assert {n for n, f in fam.items() if f == "selective"} == {"full_st", "top_layers", "last_layer", "projector"}
    assert {n for n, f in fam.items() if f == "reparameterization"} == {"lora", "dora", "loha", "lokr", "vera"}
    assert {n for n, f in fam.items() if f == "additive"} == {"adapter", "prompt", "ia3"}
    assert {n for n in METHODS.names() if METHODS.get(n).is_peft} == {
        "lora", "dora", "loha", "lokr", "vera", "ia3", "prompt"}
    assert all(METHODS.get(n).averageable for n in METHODS.names())


def test_selective_methods_select_groups():
    counts = {}
    for name in ("full_st", "top_layers", "last_layer", "projector"):
        model, method, _ = apply_method(fresh(), name)
        chosen = method.state_names(model)
        counts[name] = len(chosen)
        assert not any(n in chosen for n in groups_mod.params_in_group(model, "vision"))
        assert not any(n in chosen for n in groups_mod.params_in_group(model, "embeddings"))
        assert not any(n in chosen for n in groups_mod.params_in_group(model, "lm_head"))
    model = fresh()
    n_layers = groups_mod.num_llm_layers(model)
    per_layer = len(groups_mod.params_in_group(model, "llm_layers", layers={0}))
    proj = len(groups_mod.params_in_group(model, "projector"))
    assert counts["projector"] == proj
    assert counts["last_layer"] == per_layer
    assert counts["top_layers"] == 2 * per_layer + proj
    assert counts["full_st"] == n_layers * per_layer + len(groups_mod.params_in_group(model, "llm_norm")) + proj


def test_top_layers_are_the_last_k():
    model, method, _ = apply_method(fresh(), "top_layers", {"k": 1})
    n = groups_mod.num_llm_layers(model)
    assert set(groups_mod.params_in_group(model, "llm_layers", layers={n - 1})) <= set(method.state_names(model))
    assert not set(groups_mod.params_in_group(model, "llm_layers", layers={n - 2})) & set(method.state_names(model))


def test_lora_targets_and_factors():
    model, method, _ = apply_method(fresh(), "lora", {"r": 4, "alpha": 8.0})
    state = method.get_state(model)
    assert state and all(".language_model." in k for k in state)  # vision tower untouched
    factors = method.lora_factors(state)
    assert len(factors) == len(state) // 2 and all(s == 2.0 for _, _, s in factors)
    # Effective ΔW = scaling · B @ A equals what peft merges into the base weight.
    a_key, b_key, scaling = factors[0]
    with torch.no_grad():
        for p in method.state_parameters(model).values():
            p.normal_()
    state = method.get_state(model)
    layer = model.get_submodule(a_key[: -len(".lora_A.weight")])
    merged = layer.get_delta_weight("default")
    torch.testing.assert_close(merged, scaling * state[b_key] @ state[a_key])

    model2, method2, _ = apply_method(fresh(), "lora", {"targets": "llm+projector"})
    assert any("multi_modal_projector" in k for k in method2.state_names(model2))
    assert make_method("full_st").lora_factors(state) == []


def test_paper_lora_settings_and_vila():
    model, method, _ = apply_method(fresh("tiny-vila"), "lora", {"r": 32, "alpha": 64})
    assert method.options.alpha == 64.0
    assert trainable_summary(model)["trainable"] > 0


def test_unknown_method_lists_choices():
    with pytest.raises(UserError, match="Valid choices: .*lora"):
        make_method("loraa")


def test_unknown_and_mistyped_options():
    with pytest.raises(UserError, match="valid options: r, alpha, targets, dropout"):
        make_method("lora", {"rank": 8})
    with pytest.raises(UserError, match="tuning method 'lora' option 'r' must be int, got str '8'"):
        make_method("lora", {"r": "8"})
    with pytest.raises(UserError, match="targets must be one of"):
        make_method("lora", {"targets": "vision"})
    with pytest.raises(UserError, match="valid options: \\(none\\)"):
        make_method("full_st", {"k": 2})


def test_top_layers_k_too_large_names_both_numbers():
    model = fresh()
    n = groups_mod.num_llm_layers(model)
    with pytest.raises(UserError, match=f"k={n + 1} exceeds the model's {n} LLM layers"):
        apply_method(model, "top_layers", {"k": n + 1})
    assert trainable_summary(model)["trainable"] == trainable_summary(fresh())["trainable"]  # untouched


def test_projector_method_on_model_type_without_projector(monkeypatch):
    lacking = dataclasses.replace(groups_mod.GROUPS["llava"], projector=None, projector_linear=None)
    with pytest.raises(UserError, match="no 'projector' module group"):
        lacking.pattern("projector")
    monkeypatch.setitem(groups_mod.GROUPS, "llava", lacking)
    for name, options in (("projector", None), ("top_layers", None), ("lora", {"targets": "llm+projector"})):
        with pytest.raises(UserError, match="projector"):
            apply_method(fresh("tiny-vila"), name, options)


def test_apply_twice_and_unapplied_load_fail(tmp_path):
    model, method, _ = apply_method(fresh(), "last_layer")
    with pytest.raises(ValueError, match="already applied"):
        apply_method(model, "projector")
    method.save(model, tmp_path)
    other, method2, _ = apply_method(fresh(), "projector")
    with pytest.raises(ValueError, match="'last_layer' state, not 'projector'"):
        method2.load(other, tmp_path)


def test_apply_is_seeded():
    a_model, a, _ = apply_method(fresh(), "adapter", seed=3)
    b_model, b, _ = apply_method(fresh(), "adapter", seed=3)
    c_model, c, _ = apply_method(fresh(), "adapter", seed=4)
    _assert_states_equal(a.get_state(a_model), b.get_state(b_model))
    assert any(not torch.equal(x, y) for x, y in zip(a.get_state(a_model).values(), c.get_state(c_model).values()))
