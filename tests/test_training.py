"""The local training loop and its hooks.

Loop semantics run on the tiny LLaVA-OneVision with LoRA; the hooks' arithmetic runs on a
two-weight linear model against AdamW written out by hand (Kingma & Ba 2015, Alg. 1).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from fedmllm.errors import UserError
from fedmllm.methods import apply_method
from fedmllm.training import (
    ControlVariate, ProximalTerm, TrainConfig, TrainHook, scaffold_control_update, train_local,
)
from test_methods import fresh, rows, token_batch  # tests/ is on sys.path under pytest

N = 8  # samples in the LLaVA batch


@pytest.fixture(scope="module")
def batch():
    return token_batch(n=N, seed=1)


def lora_model():
    model, method, _ = apply_method(fresh(), "lora", {"r": 4})
    return model, method


def recording(collate, seen):
    def wrapped(samples):
        seen.append(list(samples))
        return collate(samples)
    return wrapped


# -- config ------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value,match", [
    ("lr", 0.0, "lr must be > 0"), ("lr", -1e-4, "lr must be > 0"), ("batch_size", 0, "batch_size"),
    ("grad_accum", 0, "grad_accum"), ("warmup_ratio", 1.0, "warmup_ratio"),
    ("precision", "fp16", "precision"), ("schedule", "linear", "schedule"), ("epochs", 0, "epochs"),
])
def test_config_validation(field, value, match):
    with pytest.raises(UserError, match=match):
        TrainConfig(**{field: value})


def test_num_steps():
    assert TrainConfig(steps=7).num_steps(100) == 7
    assert TrainConfig(epochs=3, batch_size=4, grad_accum=1).num_steps(10) == 9  # 3 × ceil(10/4)
    assert TrainConfig(epochs=3, batch_size=4, grad_accum=2).num_steps(10) == 5  # ceil(9/2)


# -- loop semantics ----------------------------------------------------------------------------
def test_same_seed_same_run_different_seed_different_order(batch):
    runs = []
    for seed in (5, 5, 6):
        model, _ = lora_model()
        seen: list = []
        stats = train_local(model, list(range(N)), recording(rows(batch), seen),
                            TrainConfig(lr=1e-2, steps=6, batch_size=3), seed=seed)
        runs.append((seen, stats))
    (seen_a, a), (seen_b, b), (seen_c, c) = runs
    assert seen_a == seen_b and a.losses == b.losses
    assert seen_a != seen_c and a.losses != c.losses
    assert a.steps == 6 and len(a.losses) == 6 and a.examples == sum(map(len, seen_a))
    assert a.loss_first == a.losses[0] and a.loss_last == a.losses[-1]
    assert a.loss_mean == pytest.approx(sum(a.losses) / 6)
    # Seeded shuffles per epoch, cycling: batches 3+3+2 cover the 8 samples once per epoch.
    flat = [i for b in seen_a for i in b]
    assert [len(b) for b in seen_a] == [3, 3, 2, 3, 3, 2]
    assert sorted(flat[:8]) == list(range(8)) and sorted(flat[8:]) == list(range(8))
    assert flat[:8] != flat[8:]


def test_callers_rng_and_mode_untouched(batch):
    model, _ = lora_model()
    model.eval()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_local(model, list(range(N)), rows(batch), TrainConfig(lr=1e-3, steps=1, batch_size=4),
                seed=0, progress=True)
    assert torch.equal(torch.rand(3), expected)
    assert not model.training


class GradRecorder(TrainHook):
    """Keeps a copy of every step's accumulated gradients."""

    def __init__(self):
        self.grads = []

    def after_backward(self, model, params):
        self.grads.append({n: p.grad.detach().clone() for n, p in params.items()})


def test_grad_accum_equals_big_batch(batch):
    # Rows carry 1..8 answer tokens, so plain averaging of micro-batch means would differ.
    runs = []
    for batch_size, accum in ((8, 1), (4, 2), (2, 4)):
        model, method = lora_model()
        recorder = GradRecorder()
        stats = train_local(model, list(range(N)), rows(batch),
                            TrainConfig(lr=1e-3, steps=3, batch_size=batch_size, grad_accum=accum,
                                        precision="fp32"), seed=0, hooks=[recorder])
        runs.append((stats.losses, recorder.grads, method.get_state(model)))
    (loss_ref, grads_ref, state_ref), *others = runs
    for losses, grads, state in others:
        assert losses == pytest.approx(loss_ref, abs=1e-5)
        for g, g_ref in zip(grads, grads_ref):
            for k in g_ref:
                torch.testing.assert_close(g[k], g_ref[k], rtol=1e-4, atol=1e-6)
        # Adam normalises each coordinate, so near-zero gradients amplify float noise in weights.
        for k in state_ref:
            torch.testing.assert_close(state[k], state_ref[k], rtol=0, atol=1e-4)


def test_epochs_mode_and_warmup(batch):
    model, _ = lora_model()
    stats = train_local(model, list(range(N)), rows(batch),
                        TrainConfig(lr=1e-2, epochs=2, batch_size=4, warmup_ratio=0.25), seed=0)
    assert stats.steps == 4 and stats.examples == 2 * N


def test_bf16_then_fp32_in_one_process(batch):
    for precision in ("bf16", "fp32"):
        model, _ = lora_model()
        stats = train_local(model, list(range(N)), rows(batch),
                            TrainConfig(lr=1e-3, steps=1, batch_size=2, precision=precision), seed=0)
        assert math.isfinite(stats.loss_first)


def test_no_trainable_parameters_or_samples(batch):
    model = fresh()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_local(model, [0], rows(batch), TrainConfig(steps=1), seed=0)
    with pytest.raises(UserError, match="no training samples"):
        train_local(lora_model()[0], [], rows(batch), TrainConfig(steps=1), seed=0)


def test_zero_hooks_do_not_change_training(batch):
    results = []
    for with_hooks in (False, True):
        model, method = lora_model()
        hooks = []
        if with_hooks:
            state = method.get_state(model)
            zeros = {k: torch.zeros_like(v) for k, v in state.items()}
            # Keyed by peft state names (no adapter name), resolved through the method.
            hooks = [ProximalTerm(0.0, state, method), ControlVariate(zeros, zeros, method)]
        stats = train_local(model, list(range(N)), rows(batch),
                            TrainConfig(lr=1e-2, steps=3, batch_size=4), seed=0, hooks=hooks)
        results.append((stats.losses, method.get_state(model)))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(results[0][1][k], results[1][1][k]) for k in results[0][1])


def test_hook_keys_must_match_state(batch):
    model, method = lora_model()
    state = method.get_state(model)
    bad = dict(list(state.items())[1:])
    with pytest.raises(ValueError, match="missing"):
        train_local(model, [0, 1], rows(batch), TrainConfig(steps=1),
                    seed=0, hooks=[ProximalTerm(0.1, bad, method)])
    # Without the method, hooks are keyed by parameter names (adapter name included).
    with pytest.raises(ValueError, match="lora_A.default.weight"):
        train_local(model, [0, 1], rows(batch), TrainConfig(steps=1),
                    seed=0, hooks=[ProximalTerm(0.1, state)])


# -- hooks: hand-computed arithmetic on a linear model ------------------------------------------
class LinearRegression(nn.Module):
    """y ≈ x · w with mean squared error."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float32))

    def forward(self, x, labels):
        return SimpleNamespace(loss=((x @ self.w - labels) ** 2).mean())


X = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
Y = torch.tensor([1.0, 0.0, 2.0])
W0 = [0.3, -0.2]
SAMPLES = list(range(3))


def collate_xy(idx):
    return {"x": X[idx], "labels": Y[idx]}


def adamw_by_hand(grad, steps, lr, betas=(0.9, 0.999), eps=1e-8):
    """Adam (Kingma & Ba 2015, Alg. 1), no weight decay, constant lr; returns the weights."""
    w, m, v = torch.tensor(W0, dtype=torch.float64), 0.0, 0.0
    for t in range(1, steps + 1):
        g = grad(w)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        w = w - lr * (m / (1 - betas[0] ** t)) / ((v / (1 - betas[1] ** t)).sqrt() + eps)
    return w


def mse_grad(w):
    x, y = X.double(), Y.double()
    return 2.0 / len(y) * x.T @ (x @ w - y)  # ∇ mean((xw − y)²)


CFG = TrainConfig(lr=0.05, steps=3, batch_size=3, schedule="constant", max_grad_norm=0.0, precision="fp32")


def run_linear(hooks):
    model = LinearRegression(W0)
    train_local(model, SAMPLES, collate_xy, CFG, seed=0, hooks=hooks)
    return model.w.detach().double()


def test_plain_loop_is_adamw():
    torch.testing.assert_close(run_linear([]), adamw_by_hand(mse_grad, 3, CFG.lr), rtol=0, atol=1e-6)


def test_proximal_term_value_and_update():
    mu, ref = 0.7, torch.tensor([1.0, -1.0])
    hook = ProximalTerm(mu, {"w": ref})
    model = LinearRegression([2.0, 1.0])
    hook.on_start(model, dict(model.named_parameters()))
    # mu/2 · ‖w − w_g‖² = 0.35 · ((2−1)² + (1+1)²) = 1.75
    assert hook.loss_term(model, {}).item() == pytest.approx(1.75)

    got = run_linear([ProximalTerm(mu, {"w": ref})])
    want = adamw_by_hand(lambda w: mse_grad(w) + mu * (w - ref.double()), 3, CFG.lr)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert not torch.allclose(got, run_linear([]), atol=1e-4)


def test_control_variate_update():
    c, c_i = torch.tensor([0.5, -2.0]), torch.tensor([0.25, 1.0])
    got = run_linear([ControlVariate({"w": c}, {"w": c_i})])
    want = adamw_by_hand(lambda w: mse_grad(w) + (c - c_i).double(), 3, CFG.lr)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_hooks_are_called_in_order():
    calls = []

    class Spy(TrainHook):
        def on_start(self, model, params):
            calls.append(("start", sorted(params)))

        def loss_term(self, model, params):
            calls.append("loss")

        def after_backward(self, model, params):
            calls.append(("grad", model.w.grad is not None))

        def on_end(self, model, params):
            calls.append("end")

    train_local(LinearRegression(W0), SAMPLES, collate_xy, TrainConfig(steps=2, batch_size=3), seed=0,
                hooks=[Spy()])
    assert calls == [("start", ["w"]), "loss", ("grad", True), "loss", ("grad", True), "end"]


def test_scaffold_control_update_by_hand():
    # c_i⁺ = c_i − c + (x − y_i)/(K·η) = 1 − 0.5 + (2 − 1)/(4 · 0.5) = 1.0
    out = scaffold_control_update({"w": torch.tensor([1.0])}, {"w": torch.tensor([0.5])},
                                  {"w": torch.tensor([2.0])}, {"w": torch.tensor([1.0])}, steps=4, lr=0.5)
    assert out["w"].item() == pytest.approx(1.0)


def test_trains_on_task_samples_through_encode_train():
    from functools import partial

    from fedmllm.data.collate import encode_train
    from fedmllm.data.registry import TASKS
    from fedmllm.models.registry import build_model

    bundle = build_model("tiny-llava-ov", pretrained=False, seed=0)
    samples = TASKS.get("synth-scienceqa").load("train", n=6, seed=0)
    model, _, _ = apply_method(bundle.model, "lora")
    stats = train_local(model, samples, partial(encode_train, bundle.processor),
                        TrainConfig(lr=1e-2, steps=4, batch_size=3, grad_accum=2), seed=0)
    assert stats.examples == 4 * 2 * 3
    assert stats.loss_last < stats.loss_first


def test_control_variate_records_mean_raw_gradient():
    """The "gradient" SCAFFOLD control: mean of the uncorrected minibatch gradients seen."""
    c, c_i = torch.tensor([0.5, -2.0]), torch.tensor([0.25, 1.0])
    hook = ControlVariate({"w": c}, {"w": c_i}, record_gradients=True)
    run_linear([hook])
    # Replay the same three AdamW steps by hand, collecting ∇ at each iterate (before correction).
    grads, w, m, v = [], torch.tensor(W0, dtype=torch.float64), 0.0, 0.0
    for t in range(1, 4):
        g = mse_grad(w)
        grads.append(g)
        g = g + (c - c_i).double()
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - CFG.lr * (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)).sqrt() + 1e-8)
    torch.testing.assert_close(hook.mean_gradients()["w"].double(), sum(grads) / 3, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="recorded no gradients"):
        ControlVariate({"w": c}, {"w": c_i}).mean_gradients()
