"""F_rel and F_acc next to the paper's F: hand-computed values, the registry classification, the
federated results and both reports (new columns, their definitions, old-format run directories)."""

import json

import pytest

from fedmllm.federated.results import system_result
from fedmllm.metrics import METRICS
from fedmllm.metrics.efo import (ACCURACY_METRICS, NON_ACCURACY_METRICS, forgetting, forgetting_on,
                                 forgetting_summary, is_accuracy_metric, relative_forgetting, task_metrics)
from fedmllm.report import build_report, build_reports


# ---------------------------------------------------------------- pure functions, by hand
def test_relative_forgetting_by_hand_and_zero_base_left_out():
    tuned = {"a": 45.0, "b": 28.0, "c": 5.0}
    base = {"a": 50.0, "b": 40.0, "c": 0.0}
    # a: (45 - 50) / 50 = -10 %; b: (28 - 40) / 40 = -30 %; c: base 0 -> left out. Mean -20 %.
    f_rel, excluded = relative_forgetting(tuned, base)
    assert f_rel == pytest.approx(-20.0) and excluded == ["c"]
    assert relative_forgetting({"a": 60.0}, {"a": 40.0}) == (pytest.approx(50.0), [])
    assert relative_forgetting({"a": 3.0, "b": 0.0}, {"a": 0.0, "b": 0.0}) == (None, ["a", "b"])
    with pytest.raises(ValueError, match="differ"):
        relative_forgetting({"a": 1.0}, {"b": 1.0})
    with pytest.raises(ValueError, match="no upstream"):
        relative_forgetting({}, {})


def test_forgetting_on_a_subset():
    tuned = {"a": 45.0, "b": 28.0, "cap": 400.0}
    base = {"a": 50.0, "b": 30.0, "cap": 650.0}
    assert forgetting_on(tuned, base, ["a", "b"]) == pytest.approx(-3.5)  # (-5 - 2) / 2
    assert forgetting_on(tuned, base, ["a", "b", "cap"]) == pytest.approx(forgetting(tuned, base))
    assert forgetting_on(tuned, base, []) is None
    with pytest.raises(ValueError, match="missing"):
        forgetting_on(tuned, base, ["a", "nope"])


def test_forgetting_summary_caption_task_left_out_of_f_acc():
    tuned = {"okvqa": 45.0, "coco": 400.0, "mme": 80.0}
    base = {"okvqa": 50.0, "coco": 650.0, "mme": 100.0}
    metric_of = {"okvqa": "vqa_accuracy", "coco": "cider_d", "mme": "mme"}
    out = forgetting_summary(tuned, base, metric_of)
    # F = (-5 - 250 - 20) / 3; F_rel = (-10 - 250/650*100 - 20) / 3; F_acc = (-5 - 20) / 2
    assert out["F"] == pytest.approx(-275.0 / 3)
    assert out["F_rel"] == pytest.approx((-10.0 - 25000.0 / 650.0 - 20.0) / 3)
    assert out["F_rel"] == pytest.approx(-22.8205, abs=1e-4)
    assert out["F_rel_excluded"] == []
    assert out["F_acc"] == pytest.approx(-12.5)
    assert out["F_acc_tasks"] == ["okvqa", "mme"] and out["F_acc_excluded"] == ["coco"]
    # A task whose metric is unknown (None) is no accuracy; no accuracy task at all -> F_acc None.
    none = forgetting_summary({"coco": 1.0, "x": 2.0}, {"coco": 0.0, "x": 4.0}, {"coco": "cider_d"})
    assert none["F_acc"] is None and none["F_acc_tasks"] == [] and none["F_acc_excluded"] == ["coco", "x"]
    assert none["F_rel"] == pytest.approx(-50.0) and none["F_rel_excluded"] == ["coco"]


def test_every_registered_metric_is_classified_once():
    names = set(METRICS.names())
    assert ACCURACY_METRICS | NON_ACCURACY_METRICS == names
    assert not ACCURACY_METRICS & NON_ACCURACY_METRICS
    assert is_accuracy_metric("exact_match") and not is_accuracy_metric("cider_d")
    assert not is_accuracy_metric(None)


def test_task_metrics_come_from_the_task_registry():
    m = task_metrics(["synth-okvqa", "synth-coco-caption", "synth-mme", "no-such-task"])
    assert m == {"synth-okvqa": "vqa_accuracy", "synth-coco-caption": "cider_d", "synth-mme": "mme",
                 "no-such-task": None}
    out = forgetting_summary({"synth-okvqa": 90.0, "synth-coco-caption": 500.0},
                             {"synth-okvqa": 100.0, "synth-coco-caption": 650.0},
                             task_metrics(["synth-okvqa", "synth-coco-caption"]))
    assert out["F_acc"] == pytest.approx(-10.0) and out["F_acc_excluded"] == ["synth-coco-caption"]


# ---------------------------------------------------------------- federated results
ZERO = {"downstream": {"synth-chd": 50.0, "synth-iconqa": 20.0},
        "upstream": {"synth-okvqa": 100.0, "synth-coco-caption": 650.0, "synth-mme": 0.0}}
SCORES = {"downstream": {"synth-chd": 70.0, "synth-iconqa": 20.0},
          "upstream": {"synth-okvqa": 80.0, "synth-coco-caption": 390.0, "synth-mme": 10.0}}


def test_system_result_adds_keys_and_keeps_the_old_ones():
    r = system_result("fedavg", "strategy", "tiny-vila", SCORES, ZERO)
    # F = (-20 - 260 + 10) / 3 = -90; F_rel = (-20 % - 40 %) / 2 = -30 (mme: base 0, left out);
    # F_acc = (-20 + 10) / 2 = -5 (coco-caption is CIDEr-D).
    assert r["F"] == pytest.approx(-90.0) and r["E"] == pytest.approx(10.0) and r["O"] == pytest.approx(-80.0)
    assert r["F_rel"] == pytest.approx(-30.0) and r["F_rel_excluded"] == ["synth-mme"]
    assert r["F_acc"] == pytest.approx(-5.0)
    assert r["F_acc_tasks"] == ["synth-okvqa", "synth-mme"] and r["F_acc_excluded"] == ["synth-coco-caption"]
    for key in ("system", "kind", "model", "downstream", "upstream", "per_task", "E", "F", "O", "downstream_mean"):
        assert key in r
    assert r["per_task"]["synth-chd"] == {"score": 70.0, "E": 20.0, "F": r["F"], "O": 20.0 + r["F"]}
    empty = system_result("local", "baseline", "m", {"downstream": SCORES["downstream"], "upstream": {}}, ZERO)
    assert empty["F"] == 0.0 and empty["F_rel"] is None and empty["F_acc"] is None


# ---------------------------------------------------------------- reports on hand-made run directories
OLD_KEYS = ("system", "kind", "model", "downstream", "upstream", "per_task", "E", "F", "O", "downstream_mean")


def _federated_run(tmp_path, new_format: bool):
    run = tmp_path / ("fed_new" if new_format else "fed_old")
    (run / "systems").mkdir(parents=True)
    (run / "meta.json").write_text(json.dumps({"kind": "federated"}))
    small = {"upstream": {"synth-okvqa": 100.0, "synth-coco-caption": 600.0, "synth-mme": 50.0}}
    (run / "zeroshot.json").write_text(json.dumps({"full": ZERO, "small": small}))
    systems = []
    for name, kind, scale in (("pooled", "baseline", 1.0), ("fedavg", "strategy", 0.5)):
        up = {u: s * scale if u != "synth-mme" else s for u, s in SCORES["upstream"].items()}
        r = system_result(name, kind, "tiny-vila", {"downstream": SCORES["downstream"], "upstream": up}, ZERO)
        if not new_format:
            r = {k: r[k] for k in OLD_KEYS}
        systems.append(r)
        (run / "systems" / f"{name}.json").write_text(json.dumps(r))
    events = [{"event": "global_eval", "system": "fedavg", "round": i, "downstream": SCORES["downstream"],
               "upstream": {"synth-okvqa": 90.0, "synth-coco-caption": 300.0, "synth-mme": 50.0}, "F": -120.0}
              for i in (1, 2)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    (run / "results.json").write_text(json.dumps({"kind": "federated", "zero_shot": ZERO, "systems": systems}))
    return run, systems


@pytest.mark.parametrize("new_format", [True, False])
def test_federated_report_columns_definitions_and_rankings(tmp_path, new_format):
    run, systems = _federated_run(tmp_path, new_format)
    text = build_report(run).read_text()
    assert "| F | F_rel (%) | F_acc | mean E | mean O |" in text
    # pooled: F -90, F_rel -30, F_acc -5 (hand values above); the old format gets them recomputed.
    assert "| pooled | baseline | 70.0 (+20.0) | 20.0 (+0.0) | -90.0 | -30.0 | -5.0 | +10.0 | -80.0 |" in text
    assert "- **F** (the paper's): mean over upstream u of S(tuned, u) − S(base, u)" in text
    assert "- **F_rel** (relative retention)" in text and "left out (base score 0): synth-mme." in text
    assert "- **F_acc** (accuracy tasks only)" in text
    assert "over: synth-okvqa, synth-mme; left out: synth-coco-caption (cider_d)." in text
    fedavg = system_result("fedavg", "strategy", "m", {"downstream": SCORES["downstream"],
                                                       "upstream": systems[1]["upstream"]}, ZERO)
    assert f"| F_rel, relative retention % (less forgetting first) | pooled (-30) > fedavg ({fedavg['F_rel']:.3g}) |" in text
    assert f"| F_acc, accuracy tasks only (less forgetting first) | pooled (-5) > fedavg ({fedavg['F_acc']:.3g}) |" in text
    assert "| F, the paper's (less forgetting first) |" in text
    # Per-round F_rel / F_acc from the events' upstream scores against the "small" zero-shot.
    for name in ("rounds_forgetting.png", "rounds_forgetting_F_rel.png", "rounds_forgetting_F_acc.png"):
        assert (run / "plots" / name).is_file() and f"(plots/{name})" in text


def test_federated_report_without_upstream_scores_shows_dashes(tmp_path):
    run, _ = _federated_run(tmp_path, new_format=False)
    for p in (run / "systems").glob("*.json"):
        s = json.loads(p.read_text())
        del s["upstream"]
        p.write_text(json.dumps(s))
    text = build_report(run).read_text()
    assert "| -90.0 | – | – | +10.0 | -80.0 |" in text
    assert "| F_rel, relative retention % (less forgetting first) | – |" in text
    assert "not stored and not computable for this run." in text


def _cell(method, family, task, tuned_up, base_up, new_format, tuned=60.0, base=50.0):
    from fedmllm.metrics.efo import efo

    scores_b = {task: base, **base_up}
    scores_t = {task: tuned, **tuned_up}
    c = {"model": "tiny-vila", "method": method, "family": family, "task": task, "base_score": base,
         "tuned_score": tuned, **efo(scores_b, scores_t, task, list(base_up)),
         "upstream_tuned": tuned_up, "upstream_base": base_up}
    if new_format:
        c.update({k: v for k, v in forgetting_summary(tuned_up, base_up, task_metrics(base_up)).items() if k != "F"})
    return c


@pytest.mark.parametrize("new_format", [True, False])
def test_centralized_report_columns_definitions_and_rankings(tmp_path, new_format):
    run = tmp_path / "cen"
    (run / "cells").mkdir(parents=True)
    (run / "meta.json").write_text(json.dumps({"kind": "centralized"}))
    base_up = {"synth-okvqa": 100.0, "synth-coco-caption": 650.0, "synth-mme": 0.0}
    # lora: F = (-20 - 260 + 10) / 3 = -90, F_rel = (-20 - 40) / 2 = -30, F_acc = (-20 + 10) / 2 = -5
    # full_st: F = (-50 - 65 + 0) / 3 = -38.3, F_rel = (-50 - 10) / 2 = -30, F_acc = (-50 + 0) / 2 = -25
    cells = [_cell("lora", "reparameterization", "synth-chd",
                   {"synth-okvqa": 80.0, "synth-coco-caption": 390.0, "synth-mme": 10.0}, base_up, new_format),
             _cell("full_st", "selective", "synth-chd",
                   {"synth-okvqa": 50.0, "synth-coco-caption": 585.0, "synth-mme": 0.0}, base_up, new_format)]
    for c in cells:
        (run / "cells" / f"{c['method']}.json").write_text(json.dumps(c))
    text = build_reports([run])[0].read_text()
    assert "| mean E | mean F | mean O | mean F_rel (%) | mean F_acc |" in text
    assert "| reparameterization | lora | 60.0 / +10.0 / -90.0 / -80.0 | +10.0 | -90.0 | -80.0 | -30.0 | -5.0 |" in text
    assert "- **mean F_rel** (relative retention)" in text and "left out (base score 0): synth-mme." in text
    assert "left out: synth-coco-caption (cider_d)." in text
    # The paper's F ranks full_st first; F_acc ranks lora first (the caption twin dominated F).
    assert "by stability (mean F, the paper's; less forgetting first): full_st (-38.3) > lora (-90.0)" in text
    assert "by stability, accuracy tasks only (mean F_acc; less forgetting first): lora (-5.0) > full_st (-25.0)" in text
    assert "by stability, relative (mean F_rel, %; less forgetting first):" in text
    assert "synth-coco-caption (cider_d)" in text.split("### Forgetting per upstream task")[1]
    for name in ("tradeoff.png", "tradeoff_F_rel.png", "tradeoff_F_acc.png"):
        assert (run / "plots" / name).is_file()
    # An old cell without its upstream scores: F_rel / F_acc are "–".
    bare = {k: v for k, v in cells[0].items() if k not in ("upstream_tuned", "upstream_base", "F_rel",
                                                            "F_rel_excluded", "F_acc", "F_acc_tasks",
                                                            "F_acc_excluded")}
    (run / "cells" / "lora.json").write_text(json.dumps(bare))
    (run / "cells" / "full_st.json").unlink()
    text = build_report(run).read_text()
    assert "| reparameterization | lora | 60.0 / +10.0 / -90.0 / -80.0 | +10.0 | -90.0 | -80.0 | – | – |" in text


def test_comparison_has_the_alternatives(tmp_path):
    run, _ = _federated_run(tmp_path, new_format=False)
    paths = build_reports([run, run], out=str(tmp_path / "cmp"))
    text = paths[-1].read_text()
    assert "| mean F_rel (%) | mean F_acc |" in text
    assert "| pooled | +10.0 | -90.0 | -80.0 | -30.0 | -5.0 | 1 |" in text
