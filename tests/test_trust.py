"""Attacks, robust rules against attackers, the systems grid, reply checks, stragglers (no Ray).

The end-to-end case runs the real ServerApp and ClientApp in process (`federated.backend =
inprocess`) on a tiny random-init model: attackers, a straggler past the round timeout and the
report's robustness table, all from one run directory.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fedmllm.config import load_config
from fedmllm.data.record import Sample
from fedmllm.errors import UserError
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms import build_algorithm
from fedmllm.federated.attacks import ATTACKS, build_attack
from fedmllm.federated.attacks.backdoor import attack_success_rate, stamp
from fedmllm.federated.attacks.base import delta, norm
from fedmllm.federated.robust import fltrust, norm_bounded_mean
from fedmllm.federated.rounds import LoopSettings, RawReply, RoundLoop
from fedmllm.federated.systems import attackers, client_extras, strategy_systems, system_spec

TINY = ["model.name=tiny-vila", "model.pretrained=false", "data.train_n=8", "data.test_n=4",
        "data.upstream_n=4", "train.batch_size=4", "federated.num_clients=5", "federated.rounds=1",
        "federated.local_steps=1", "federated.upstream_n=2", "federated.baselines=[]",
        'data.downstream=["synth-chd","synth-rsvqa"]', 'data.upstream=["synth-okvqa"]']


def states(n, shape=(3, 4), seed=0):
    rng = np.random.default_rng(seed)
    return [{"w": rng.normal(size=shape), "b": rng.normal(size=(2,))} for _ in range(n)]


# --- model-poisoning attacks: the uploaded state, key by key -------------------------------
def test_model_poisoning_attacks_follow_their_formulas():
    received, trained = states(2)
    d = delta(trained, received)
    rng = np.random.default_rng(0)
    flip = build_attack("sign_flip", {"factor": 3.0}).poison_update(trained, received, rng)
    scale = build_attack("scale").poison_update(trained, received, rng)
    for k in trained:
        np.testing.assert_allclose(flip[k], received[k] - 3.0 * d[k])
        np.testing.assert_allclose(scale[k], received[k] + 10.0 * d[k])  # default factor 10
    noise = build_attack("gaussian").poison_update(trained, received, np.random.default_rng(1))
    nd = delta(noise, received)
    assert norm(nd) == pytest.approx(norm(d), rel=1e-9)  # matched norm ...
    cos = sum(float((nd[k] * d[k]).sum()) for k in d) / (norm(nd) * norm(d))
    assert abs(cos) < 0.8  # ... but not the update's direction


def test_attack_options_are_checked():
    with pytest.raises(UserError, match="factor"):
        build_attack("scale", {"factor": -1.0})
    with pytest.raises(UserError, match="unknown attack"):
        build_attack("nope")
    with pytest.raises(UserError, match="patch"):
        build_attack("backdoor", {"patch": 0.9})


# --- data poisoning ---------------------------------------------------------------------------
def sample(task, answer, choices=(), image=True):
    img = [Image.new("RGB", (32, 32), (90, 90, 90))] if image else []
    return Sample(uid=f"{task}/{answer}", task=task, images=img, question="q?", answers=[answer],
                  choices=list(choices))


def test_label_flip_is_a_fixed_permutation_of_the_answers():
    samples = [sample("t", "yes"), sample("t", "no"), sample("t", "yes"), sample("mc", "C", "abc"),
               sample("mc", "A", "abc")]
    flipped = build_attack("label_flip").poison_samples(samples, np.random.default_rng(0))
    assert [s.answers[0] for s in flipped] == ["no", "yes", "no", "A", "B"]
    assert all(a.answers != b.answers for a, b in zip(samples, flipped))
    assert samples[0].answers == ["yes"]  # the client's own samples are not modified in place


def test_backdoor_stamps_a_trigger_and_relabels_a_share():
    samples = [sample("t", "yes") for _ in range(200)]
    poisoned = build_attack("backdoor", {"rate": 0.5}).poison_samples(samples, np.random.default_rng(0))
    hit = [s for s in poisoned if s.answers == ["zebra"]]
    assert 70 < len(hit) < 130
    img = np.array(hit[0].images[0])
    assert (img[-8:, -8:] != 90).any() and (img[:16, :16] == 90).all()  # corner patch only
    clean = [s for s in poisoned if s.answers == ["yes"]]
    assert np.array_equal(np.array(clean[0].images[0]), np.array(samples[0].images[0]))


def test_attack_success_rate_counts_target_answers_on_triggered_images():
    tests = {"t": [sample("t", "yes"), sample("t", "no"), sample("t", "zebra"), sample("t", "no", image=False)]}
    seen = []

    def predict(pool):  # "sees" the trigger: answers the target where the corner is stamped
        seen.extend(pool)
        return ["Zebra" if (np.array(s.images[0])[-1, -1] != 90).any() else "no" for s in pool]

    out = attack_success_rate(predict, tests, build_attack("backdoor").options)
    assert out == {"asr": 100.0, "n": 2}  # the target-answer item and the image-less one left out
    assert len(seen) == 2
    assert attack_success_rate(lambda pool: ["no"] * len(pool), tests, build_attack("backdoor").options)["asr"] == 0


def test_stamp_fits_small_and_odd_images():
    for size in [(8, 8), (13, 7), (64, 48)]:
        out = np.array(stamp(Image.new("RGB", size, (10, 10, 10)), 0.25))
        assert out.shape[:2] == size[::-1]
        assert (out != 10).any()


# --- robust rules --------------------------------------------------------------------------
def test_norm_bounding_clips_each_update_before_the_mean():
    g = {"w": np.zeros(4)}
    xs = [{"w": np.array([3.0, 4.0, 0, 0])}, {"w": np.array([0, 0, 0.3, 0.4])}, {"w": np.array([30.0, 0, 0, 0])}]
    out, norms = norm_bounded_mean(xs, [1, 1, 2], g, max_norm=1.0)
    assert norms == pytest.approx([5.0, 0.5, 30.0])
    expect = (np.array([0.6, 0.8, 0, 0]) + np.array([0, 0, 0.3, 0.4]) + 2 * np.array([1.0, 0, 0, 0])) / 4
    np.testing.assert_allclose(out["w"], expect)
    med, _ = norm_bounded_mean(xs, [1, 1, 1], g, max_norm=0)  # bound = median norm 5
    np.testing.assert_allclose(med["w"], (xs[0]["w"] + xs[1]["w"] + np.array([5.0, 0, 0, 0])) / 3)


def test_fltrust_weights_by_relu_cosine_and_equalizes_norms():
    g = {"w": np.zeros(2)}
    ref = {"w": np.array([1.0, 0.0])}  # ||g0|| = 1
    xs = [{"w": np.array([2.0, 0.0])}, {"w": np.array([1.0, 1.0])}, {"w": np.array([-5.0, 0.0])}]
    out, scores = fltrust(xs, g, ref)
    assert scores == pytest.approx([1.0, 2 ** -0.5, 0.0])
    expect = (1.0 * np.array([1.0, 0]) + 2 ** -0.5 * np.array([1.0, 1.0]) / 2 ** 0.5) / (1 + 2 ** -0.5)
    np.testing.assert_allclose(out["w"], expect)
    none, zero = fltrust([{"w": np.array([-1.0, 0])}], g, ref)
    assert zero == [0.0] and np.array_equal(none["w"], g["w"])


# --- the loop: reply checks and robust rules against attackers --------------------------------
class Replies:
    """A canned transport: each client's reply from ``make(pid, payload)``."""

    def __init__(self, make):
        self.make = make

    def exchange(self, server_round, payloads):
        return {pid: self.make(pid, p) for pid, p in payloads.items()}, {}


def honest(pid, payload, n=None, scale=1.0, direction=None):
    g = payload.arrays["global"]
    step = np.ones(4) if direction is None else direction
    return RawReply({"state": {"w": (g["w"] + scale * step * (1 + 0.1 * pid)).astype(np.float32)}},
                    {P.NUM_EXAMPLES: n or 10, P.TRAIN_LOSS: 1.0, P.PARTITION_ID: pid})


def run_one(algo, make, n=5, **settings):
    events = []
    s = LoopSettings(system="s", rounds=1, num_clients=n, clients_per_round=0, seed=0, local_steps=1,
                     base_lr=0.1, **settings)
    out = RoundLoop(algo, Replies(make), s, log=events.append, metrics_size=lambda: 0).run(
        {"w": np.zeros(4, np.float32)})
    return out, events


def test_claimed_example_count_and_update_norm_are_checked():
    """A client claiming 1e9 examples (its partition has 10) and one whose update is too long are
    rejected with their reason; the global state is FedAvg of the others."""
    def make(pid, payload):
        if pid == 1:
            return honest(pid, payload, n=10 ** 9)
        if pid == 2:
            return honest(pid, payload, scale=100.0)
        return honest(pid, payload)

    out, events = run_one(build_algorithm("fedavg"), make, client_sizes=[10] * 5, max_update_norm=10.0)
    reasons = {e["client"]: e["error"] for e in events if e["event"] == "client_failed"}
    assert "claims 1000000000 examples, its partition has 10" in reasons[1]
    assert "exceeds federated.max_update_norm" in reasons[2]
    (rnd,) = [e for e in events if e["event"] == "round"]
    assert rnd["rejected"] == 2 and rnd["clients"] == 3
    np.testing.assert_allclose(out["w"], np.mean([1.0, 1.3, 1.4]), rtol=1e-6)


@pytest.mark.parametrize("attack", ["sign_flip", "scale"])
def test_a_robust_rule_resists_what_breaks_fedavg(attack):
    """2 of 7 clients attack; FedAvg's step leaves the honest direction, the median's does not."""
    a = build_attack(attack)

    def make(pid, payload):
        r = honest(pid, payload)
        if pid in (0, 1):
            g = payload.arrays["global"]
            r.arrays["state"] = a.poison_update(r.arrays["state"], g, np.random.default_rng(pid))
        return r

    honest_mean = np.mean([1 + 0.1 * p for p in range(2, 7)])
    avg, _ = run_one(build_algorithm("fedavg"), make, n=7)
    med, _ = run_one(build_algorithm("fedmedian"), make, n=7)
    assert abs(avg["w"][0] - honest_mean) > 0.5
    assert abs(med["w"][0] - honest_mean) < 0.2


# --- the systems grid -------------------------------------------------------------------------
def test_systems_cross_strategies_privacy_and_attacks():
    cfg = load_config(None, [*TINY, 'federated.strategies=["fedavg","krum"]', 'attack.names=["scale"]',
                             "privacy.mode=server-fixed", "privacy.noise_multipliers=[0.5, 1]"])
    names = [s.name for s in strategy_systems(cfg)]
    assert names == ["fedavg+dp0.5", "fedavg+dp0.5+scale", "fedavg+dp1", "fedavg+dp1+scale",
                     "krum+dp0.5", "krum+dp0.5+scale", "krum+dp1", "krum+dp1+scale"]
    spec = system_spec(cfg, "krum+dp1+scale")
    assert (spec.strategy, spec.noise_multiplier, spec.attack) == ("krum", 1.0, "scale")
    with pytest.raises(UserError, match="not one of"):
        system_spec(cfg, "fedavg+scale")


def test_attackers_are_reproducible_and_told_their_attack():
    cfg = load_config(None, [*TINY, "federated.num_clients=10", 'attack.names=["scale"]',
                             "attack.options.scale.factor=7.0"])
    bad = attackers(cfg)
    assert len(bad) == 2 and bad == attackers(cfg)
    assert bad != attackers(load_config(None, [*TINY, "federated.num_clients=10", "seed=1"]))
    extras = client_extras(cfg, system_spec(cfg, "fedavg+scale"))
    assert sorted(extras) == bad
    assert extras[bad[0]] == {P.ATTACK: "scale", P.ATTACK_OPTION + "factor": 7.0}
    assert client_extras(cfg, system_spec(cfg, "fedavg")) == {}


@pytest.mark.parametrize("overrides, message", [
    (["attack.fraction=1.5"], "attack.fraction"),
    (["attack.clean=false"], "needs attack.names"),
    (['attack.names=["scale","scale"]'], "more than once"),
    (["federated.straggler_slowdown=0.5"], "straggler_slowdown"),
    (["federated.round_timeout_s=-1"], "round_timeout_s"),
    (["privacy.delta=2"], "privacy.delta"),
    (["privacy.noise_multipliers=[-1]"], "noise_multipliers"),
    (["privacy.mode=bogus"], "valid: off"),
])
def test_trust_options_are_validated(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config(None, [*TINY, *overrides])


def test_check_federated_names_unknown_attacks():
    from simulations.federated import check_trust

    with pytest.raises(UserError, match="unknown attack"):
        check_trust(load_config(None, [*TINY, 'attack.names=["poison"]']))
    with pytest.raises(UserError, match="unknown attack"):
        check_trust(load_config(None, [*TINY, "attack.options.poison.x=1"]))
    assert set(ATTACKS.names()) == {"sign_flip", "scale", "gaussian", "label_flip", "backdoor"}


# --- end to end: the real apps in process ----------------------------------------------------
@pytest.mark.slow
def test_attacked_run_with_a_straggler_end_to_end(tmp_path):
    """FedAvg clean and under a scale attack on the real apps: the attacker's update is boosted
    (its norm in the drift measures), a straggler past the round timeout is dropped and counted,
    the results carry the attack, and the report has the robustness table."""
    from simulations.federated import run_federated

    cfg = load_config(None, [*TINY, "federated.backend=inprocess", 'attack.names=["scale"]',
                             "federated.eval_personalized=false",
                             "federated.straggler_fraction=0.2", "federated.straggler_slowdown=100",
                             "federated.round_timeout_s=1.5"])
    out = run_federated(cfg, str(tmp_path / "run"))
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rounds = [e for e in events if e["event"] == "round"]
    assert [e["system"] for e in rounds] == ["fedavg", "fedavg+scale"]
    late = [e for e in events if e["event"] == "client_failed"]
    assert late and all(e["error"].startswith("timeout") for e in late)
    assert all(e["stragglers"] == 1 and e["clients"] == 4 for e in rounds)
    (bad,) = attackers(cfg)
    drift = [e["drift"] for e in rounds if e["system"] == "fedavg+scale"][0]
    norms = dict(zip(drift["clients"], drift["all.update_norm"]))
    if bad in norms:  # the attacker is not the straggler
        assert norms[bad] > 5 * np.median(list(norms.values()))
    result = json.loads((out / "systems" / "fedavg+scale.json").read_text())
    assert (result["strategy"], result["attack"]) == ("fedavg", "scale")
    report = (out / "report.md").read_text()
    assert "## Robustness to attackers" in report and "| strategy | clean | scale |" in report
    assert (out / "plots" / "failures.png").is_file()
