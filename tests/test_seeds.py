"""Runs over seeds: one sub-run per seed, mean / std / t-interval and paired differences, resume per seed."""

import json
import math
import shutil

import pytest

from fedmllm.metrics.stats import paired, summarize, t_quantile
from simulations.cli import main

CENTRAL = ["model.name=tiny-vila", "model.pretrained=false", "data.train_n=8", "data.test_n=4", "data.upstream_n=4",
           "train.batch_size=4", "train.steps=2", "eval.batch_size=8", "centralized.models=[\"tiny-vila\"]",
           "centralized.methods=[\"full_st\", \"lora\"]", "centralized.tasks=[\"synth-chd\"]",
           "data.downstream=[\"synth-chd\"]", "tracking=[]"]
FED = ["model.name=tiny-vila", "model.pretrained=false", "data.train_n=8", "data.test_n=4", "data.upstream_n=4",
       "train.batch_size=4", "federated.num_clients=2", "federated.rounds=2", "federated.local_steps=2",
       "federated.upstream_n=2", "federated.baselines=[]", "federated.backend=inprocess", "federated.instrument=false",
       "federated.strategies=[\"fedavg\", \"fedprox\"]", "data.downstream=[\"synth-chd\", \"synth-scienceqa\"]",
       "tracking=[]"]


def test_t_interval_equals_hand_values():
    s = summarize([1.0, 2.0, 3.0])
    assert s.mean == 2.0 and s.std == 1.0
    t2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # df = 2 in closed form: t = (2p - 1) / sqrt(2p(1 - p))
    assert t_quantile(2) == pytest.approx(t2, rel=1e-12) and t2 == pytest.approx(4.3027, abs=1e-4)
    assert s.half == pytest.approx(t2 / math.sqrt(3), rel=1e-12)
    assert s.excludes_zero() == 0 and summarize([10.0, 11.0, 12.0]).excludes_zero() == 1
    assert summarize([-12.0, -11.0, -10.0]).excludes_zero() == -1
    one = summarize([5.0])
    assert one.half is None and one.std is None and one.fmt() == "+5.0"
    assert summarize([None, None]) is None and summarize([None, 4.0]).n == 1
    # paired: the shared offset of both runs cancels; an unpaired interval would hold 0
    a, b = {0: 10.0, 1: 20.0, 2: 30.0}, {0: 9.0, 1: 19.2, 2: 28.9}
    d = paired(a, b)
    assert d.values == pytest.approx((1.0, 0.8, 1.1)) and d.excludes_zero() == 1
    assert summarize([a[k] - b[k] + 0 for k in a]).mean == pytest.approx(d.mean)
    with pytest.raises(ValueError, match="non-finite"):
        summarize([1.0, float("nan")])


def _cells(run):
    return {(c["method"], c["task"]): c for c in json.loads((run / "results.json").read_text())["cells"]}


def test_centralized_over_seeds_summarises_each_cell_and_resumes_per_seed(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["centralized", "--out", str(out), "--seeds", "0,1", *CENTRAL]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "seeds" and meta["experiment"] == "centralized" and meta["seeds"] == [0, 1]
    subs = {s: _cells(out / f"seed-{s}") for s in (0, 1)}
    assert "seed = 1" in (out / "seed-1" / "config.toml").read_text()
    # the seeds differ in their draws, so the cells differ (a seed that was not replaced would not)
    assert subs[0][("lora", "synth-chd")]["seed"] != subs[1][("lora", "synth-chd")]["seed"]
    results = json.loads((out / "results.json").read_text())
    rows = {tuple(r["row"]): r for r in results["halves"]["centralized"]["rows"]}
    cell = rows[("cell", "tiny-vila", "lora", "synth-chd")]
    assert cell["E"]["values"] == [subs[0][("lora", "synth-chd")]["E"], subs[1][("lora", "synth-chd")]["E"]]
    assert cell["E"]["n"] == 2 and cell["E"]["mean"] == pytest.approx(sum(cell["E"]["values"]) / 2)
    pair = results["halves"]["centralized"]["paired"][0]
    assert (pair["a"], pair["b"]) == ("lora", "full_st")
    assert pair["F"]["values"] == pytest.approx([subs[s][("lora", "synth-chd")]["F"] - subs[s][("full_st", "synth-chd")]["F"]
                                                 for s in (0, 1)])
    report = (out / "report.md").read_text()
    assert "lora − full_st" in report and "±" in report and (out / "plots" / "centralized_ef.png").is_file()

    # kill seed 1 half-way (its second cell gone, as if the process died before writing it): resume
    # redoes only that cell; seed 0 is not touched
    kept = (out / "seed-0" / "results.json").stat().st_mtime_ns
    (out / "seed-1" / "results.json").unlink()
    victim = next((out / "seed-1" / "cells").glob("*lora*"))
    victim.unlink()
    capsys.readouterr()
    assert main(["centralized", "--resume", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "seed 0 (1/2): finished before, kept" in printed and "seed 1 (2/2) resumed" in printed
    assert (out / "seed-0" / "results.json").stat().st_mtime_ns == kept
    scores = lambda cells: {k: (c["tuned_score"], c["E"], c["F"], c["upstream_tuned"]) for k, c in cells.items()}  # noqa: E731
    assert scores(_cells(out / "seed-1")) == scores(subs[1])  # deterministic: the redone cell is the same


def test_federated_over_seeds_pairs_strategies_and_bands_rounds(tmp_path):
    out = tmp_path / "run"
    assert main(["federated", "--out", str(out), *FED, "seeds=[3, 4]"]) == 0
    results = json.loads((out / "results.json").read_text())["halves"]["federated"]
    pairs = {(p["a"], p["b"]): p for p in results["paired"]}
    assert set(pairs) == {("fedprox", "fedavg")} and pairs[("fedprox", "fedavg")]["E"]["n"] == 2
    assert (out / "plots" / "federated_rounds.png").is_file()
    for s in (3, 4):
        assert json.loads((out / f"seed-{s}" / "meta.json").read_text())["seed"] == s


@pytest.mark.parametrize("overrides, fragment", [
    (["seeds=[0, 0]"], "lists 0 more than once"),
    (["seeds=[-1]"], "must be an integer in [0, 2**32)"),
    (["seeds=[0]", "centralized.methods=[\"nope\"]"], "nope"),  # a seed's config is checked before the run dir
])
def test_bad_seeds_fail_before_the_run_directory(tmp_path, capsys, overrides, fragment):
    out = tmp_path / "run"
    assert main(["centralized", "--out", str(out), *CENTRAL, *overrides]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_seeds_run_resumes_only_as_its_own_kind(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["centralized", "--out", str(out), "--seeds", "0", *CENTRAL]) == 0
    shutil.rmtree(out / "seed-0")
    assert main(["federated", "--resume", str(out)]) == 2
    assert "holds 'centralized' runs over seeds" in capsys.readouterr().err
