"""Reports a researcher reads without decoding: chance / majority floors (hand-computed on tiny
sample lists), floors and below-chance marks in every table, round-0 points, the per-upstream F
breakdown, fixed styles per system, labelled panels, and `fedmllm report` on a demo directory."""

import json
import shutil
from types import SimpleNamespace

import pytest

from fedmllm.data.record import Sample
from fedmllm.eval import floors as fl
from fedmllm.federated.results import system_result
from fedmllm.report import build_report, build_reports


def item(task, answers, choices=(), qtype=None, **meta):
    meta = {**({"qtype": qtype} if qtype else {}), **meta}
    return Sample(uid=f"{task}/{len(answers)}/{id(meta)}", task=task, images=[], question="q?",
                  answers=list(answers), choices=list(choices), meta=meta)


# ---------------------------------------------------------------- floors by hand
def test_multiple_choice_chance_is_the_mean_of_one_over_k():
    t = "synth-scienceqa"  # option-letter accuracy, reference = the letter
    test = [item(t, ["A"], ["left", "right"]), item(t, ["C"], ["a", "b", "c", "d"]), item(t, ["C"], ["x", "y", "z"])]
    train = [item(t, ["C"], ["a", "b", "c"]), item(t, ["C"], ["a", "b", "c"]), item(t, ["A"], ["a", "b"])]
    f = fl.task_floors(t, test, train)
    assert f["chance"] == pytest.approx(100 * (1 / 2 + 1 / 4 + 1 / 3) / 3)  # 36.1
    # always "C" (the most frequent training letter) is right on items 2 and 3
    assert f["majority_answer"] == "C" and f["majority"] == pytest.approx(200 / 3)
    assert (f["majority_from"], f["n"], f["n_from"], f["majority_share"]) == ("train", 3, 3, pytest.approx(2 / 3))
    assert "options (letters)" in f["chance_how"] and "exact expectation" in f["chance_how"]


def test_an_item_whose_reference_is_no_option_scores_zero_by_chance():
    t = "synth-scienceqa"
    f = fl.task_floors(t, [item(t, ["D"], ["left", "right"]), item(t, ["B"], ["left", "right"])])
    assert f["chance"] == pytest.approx(25.0)  # (0 + 1/2) / 2
    assert f["majority_from"] == "test"  # no training split given: the evaluated items count


def test_option_texts_and_open_answers_by_question_type():
    t = "synth-iconqa"  # exact match; choose-the-text items answer with the option's text
    train = [item(t, ["1"], qtype="count"), item(t, ["3"], qtype="count"), item(t, ["3"], qtype="count"),
             item(t, ["star"], ["star", "heart", "cross"], qtype="choose_txt")]
    test = [item(t, ["heart"], ["star", "heart", "cross"], qtype="choose_txt"),
            item(t, ["1"], qtype="count"),     # pool of "count": {1, 3} -> 1/2
            item(t, ["5"], qtype="count"),     # 5 was never a training answer -> 0
            item(t, ["star"], qtype="shape"),  # type unseen in training: all 3 distinct targets -> 1/3
            item(t, ["star"], qtype="choose_txt")]  # its type has one answer (star): all 3 targets -> 1/3
    f = fl.task_floors(t, test, train)
    assert f["chance"] == pytest.approx(100 * (1 / 3 + 1 / 2 + 0 + 1 / 3 + 1 / 3) / 5)
    assert f["majority_answer"] == "3" and f["majority"] == 0.0
    assert "options (texts)" in f["chance_how"]


def test_vqa_accuracy_chance_is_exact_and_the_hit_shortcut_changes_nothing(monkeypatch):
    t = "synth-okvqa"
    train = [item(t, [a] * 10, qtype="fruit") for a in ("lime", "lemon", "apple", "plum")]
    test = [item(t, ["lime"] * 2 + ["lemon"] * 8, qtype="fruit")]
    # lime: 2 of 10 annotators -> (8 * 2/3 + 2 * 1/3) / 10 = 0.6; lemon: 8 -> 1.0; apple, plum: 0
    f = fl.task_floors(t, test, train)
    assert f["chance"] == pytest.approx(100 * (0.6 + 1.0) / 4)
    monkeypatch.setattr(fl, "ZERO_UNLESS_REFERENCE", frozenset())  # score every candidate
    assert fl.task_floors(t, test, train)["chance"] == pytest.approx(f["chance"])


def test_corpus_metric_chance_is_a_seeded_mean_of_draws(monkeypatch):
    t = "synth-mme"  # acc and acc+ over yes/no pairs: no per-item expectation
    test = [item(t, ["yes"], qtype="existence", category="existence", pair=str(k // 2)) if k % 2 == 0 else
            item(t, ["no"], qtype="existence", category="existence", pair=str(k // 2)) for k in range(4)]
    f = fl.task_floors(t, test, seed=3)
    assert f == fl.task_floors(t, test, seed=3) and "seeded draws" in f["chance_how"]
    # always "no" (tie with "yes", alphabetically first): acc 50, acc+ 0 -> 25
    assert (f["majority_answer"], f["majority"]) == ("no", pytest.approx(25.0))
    monkeypatch.setattr(fl, "DRAWS", 3000)  # E[acc] = 50, E[acc+] = 25: the mean tends to 37.5
    assert fl.task_floors(t, test, seed=3)["chance"] == pytest.approx(37.5, abs=2.0)


def test_run_floors_roles_and_the_file_is_reused_on_resume(tmp_path):
    sq, mme = "synth-scienceqa", "synth-mme"
    data = SimpleNamespace(train={sq: [item(sq, ["B"], ["l", "r"])]}, test={sq: [item(sq, ["A"], ["l", "r"])]},
                           upstream={mme: [item(mme, ["yes"], category="c", pair="0"),
                                           item(mme, ["no"], category="c", pair="0")]})
    floors = fl.ensure_floors(tmp_path, data, seed=0)
    assert json.loads((tmp_path / "floors.json").read_text()) == floors
    assert (floors[sq]["role"], floors[sq]["majority_from"], floors[sq]["majority"]) == ("downstream", "train", 0.0)
    assert (floors[mme]["role"], floors[mme]["majority_from"]) == ("upstream", "test")
    for f in floors.values():
        assert {"chance", "majority", "majority_answer", "n"} <= set(f)
    edited = {**floors, sq: {**floors[sq], "majority": 99.0}}
    (tmp_path / "floors.json").write_text(json.dumps(edited))
    assert fl.ensure_floors(tmp_path, data, seed=0)[sq]["majority"] == 99.0  # read back, not recomputed


# ---------------------------------------------------------------- hand-made run directories
FLOORS = {"synth-chd": {"chance": 37.5, "majority": 16.7, "majority_answer": "yes", "n": 4, "majority_from": "train"},
          "synth-iconqa": {"chance": 26.7, "majority": 14.6, "majority_answer": "diamond", "n": 4,
                           "majority_from": "train"},
          "synth-okvqa": {"chance": 28.1, "majority": 20.8, "majority_answer": "lime", "n": 4, "majority_from": "test"},
          "synth-mme": {"chance": 40.0, "majority": 25.0, "majority_answer": "no", "n": 4, "majority_from": "test"}}
ZERO = {"downstream": {"synth-chd": 50.0, "synth-iconqa": 20.0},
        "upstream": {"synth-okvqa": 100.0, "synth-mme": 60.0}}


def _federated_run(tmp_path, floors=True, name="fed"):
    run = tmp_path / name
    (run / "systems").mkdir(parents=True)
    (run / "meta.json").write_text(json.dumps({"kind": "federated"}))
    (run / "zeroshot.json").write_text(json.dumps({"full": ZERO, "small": {"upstream": ZERO["upstream"]}}))
    if floors:
        (run / "floors.json").write_text(json.dumps(FLOORS))
    systems = []
    for sys_name, kind, chd, up in (("pooled", "baseline", 70.0, {"synth-okvqa": 80.0, "synth-mme": 50.0}),
                                    ("fedavg", "strategy", 30.0, {"synth-okvqa": 90.0, "synth-mme": 30.0}),
                                    ("fedprox", "strategy", 30.0, {"synth-okvqa": 90.0, "synth-mme": 30.0})):
        r = system_result(sys_name, kind, "tiny-vila", {"downstream": {"synth-chd": chd, "synth-iconqa": 20.0},
                                                        "upstream": up}, ZERO)
        systems.append(r)
        (run / "systems" / f"{sys_name}.json").write_text(json.dumps(r))
    events = []
    for s in ("fedavg", "fedprox"):  # identical curves: the FedAvg line lies under FedProx's
        for r in (1, 2):
            events.append({"event": "global_eval", "system": s, "round": r,
                           "downstream": {"synth-chd": 30.0 + r, "synth-iconqa": 20.0},
                           "upstream": {"synth-okvqa": 90.0, "synth-mme": 30.0}, "F": -20.0})
            events.append({"event": "round", "system": s, "round": r, "bytes_up": 10, "bytes_down": 10, "clients": 2,
                           "drift": {"all.update_norm_mean": 1.0, "lora_dW.update_norm_mean": 0.5,
                                     "all.cosine_pairwise_mean": 0.3, "all.b_local": 1.2, "lora_discrepancy": 0.1}})
            events.append({"event": "client_train", "system": s, "round": r, "train_loss": 2.0 / r})
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    (run / "results.json").write_text(json.dumps({"kind": "federated", "zero_shot": ZERO, "systems": systems}))
    return run


def test_federated_report_floors_marks_and_per_upstream_breakdown(tmp_path):
    text = build_report(_federated_run(tmp_path)).read_text()
    assert "| *floors* | *chance / majority* | 37.5 / 16.7 | 26.7 / 14.6 | – | – | – | – | – |" in text
    # fedavg's 30.0 on synth-chd is below its chance 37.5; iconqa 20.0 below 26.7 (zero-shot too)
    assert "| fedavg | strategy | 30.0↓ (-20.0) | 20.0↓ (+0.0) |" in text
    assert "| pooled | baseline | 70.0 (+20.0) | 20.0↓ (+0.0) |" in text
    assert "| base (zero-shot) | – | 50.0 | 20.0↓ |" in text
    assert "↓ = below chance" in text and 'synth-chd "yes"' in text
    section = text.split("## Forgetting per upstream task")[1]
    assert "| system | synth-okvqa (vqa_accuracy) | synth-mme (mme) | F (mean) |" in section
    # F per upstream task = final − zero-shot, hand-computed; F = their mean (-20 − 10) / 2 = -15
    assert "| pooled | -20.0 (80.0) | -10.0 (50.0) | -15.0 |" in section
    assert "| fedavg | -10.0 (90.0) | -30.0 (30.0↓) | -20.0 |" in section
    assert "| *floors: chance / majority* | 28.1 / 20.8 | 40.0 / 25.0 | – |" in section


def test_old_runs_report_without_floors_and_say_so(tmp_path):
    text = build_report(_federated_run(tmp_path, floors=False)).read_text()
    assert "Floors: not recorded" in text and "*chance / majority*" not in text and "↓" not in text
    assert "## Forgetting per upstream task" in text


def test_round_curves_start_at_the_zero_shot_point(tmp_path, monkeypatch):
    from fedmllm.report import rounds

    seen = {}
    real = rounds._line_plot
    monkeypatch.setattr(rounds, "_line_plot", lambda series, path, **kw: (seen.__setitem__(path.name, (series, kw)),
                                                                            real(series, path, **kw)))
    build_report(_federated_run(tmp_path))
    series, kw = seen["rounds_downstream.png"]
    assert series["fedavg"] == ([0, 1, 2], [35.0, 25.5, 26.0])  # round 0 = mean zero-shot (50 + 20) / 2
    assert kw["floors"] == (pytest.approx((37.5 + 26.7) / 2), pytest.approx((16.7 + 14.6) / 2))
    assert kw["hlines"] == {"pooled": 45.0}
    assert seen["rounds_forgetting.png"][0]["fedprox"] == ([0, 1, 2], [0.0, -20.0, -20.0])  # F(base) = 0
    assert seen["train_loss.png"][0]["fedavg"] == ([1, 2], [2.0, 1.0])  # no loss before training: no round 0
    assert (tmp_path / "fed" / "plots" / "rounds_tasks.png").is_file()


def _captured_figures(monkeypatch, module):
    figures = {}
    real = module.save_figure
    monkeypatch.setattr(module, "save_figure", lambda fig, path: (figures.__setitem__(path.name, fig), real(fig, path)))
    return figures


def assert_readable(figures: dict) -> None:
    """Every panel: axis labels (a twin axis: its y label), a title, a legend outside the data."""
    assert figures
    for name, fig in figures.items():
        for ax in fig.axes:
            if not ax.axison or ax.get_label() == "<colorbar>":
                continue
            twin = not ax.xaxis.get_visible()  # twinx: shares the x axis of the panel it sits on
            assert ax.get_ylabel() and (twin or (ax.get_xlabel() and ax.get_title())), (name, ax.get_title())
            legend, box = ax.get_legend(), ax.get_window_extent()  # outside the data: right of or below the axes
            anchor = None if legend is None else legend.get_bbox_to_anchor()
            assert legend is None or anchor.x0 >= box.x1 - 1 or anchor.y1 <= box.y0 + 1, name


def test_every_panel_is_labelled_and_a_system_keeps_its_style(tmp_path, monkeypatch):
    from fedmllm.report import rounds
    from fedmllm.report.plotting import system_styles

    figures = _captured_figures(monkeypatch, rounds)
    build_report(_federated_run(tmp_path))
    styles = system_styles(["pooled", "fedavg", "fedprox"])
    assert len({(s["color"], s["marker"], s["linestyle"]) for s in styles.values()}) == 3
    assert styles == system_styles(["pooled", "fedavg", "fedprox"])  # deterministic from the list
    assert_readable(figures)
    for ax in figures["drift.png"].axes:  # fedavg has one colour in every drift panel
        colours = {tuple(line.get_color()) for line in ax.get_lines() if line.get_marker() == styles["fedavg"]["marker"]}
        assert colours == {tuple(styles["fedavg"]["color"])}
    lines = {ln.get_label(): ln for ln in figures["train_loss.png"].axes[0].get_lines()}
    assert lines["fedavg"].get_marker() != lines["fedprox"].get_marker()
    assert lines["fedavg"].get_linestyle() != lines["fedprox"].get_linestyle()


def _cell(method, family, task, tuned, base=50.0):
    from fedmllm.metrics.efo import efo

    up_b, up_t = {"synth-okvqa": 100.0}, {"synth-okvqa": 90.0}
    return {"model": "tiny-vila", "method": method, "family": family, "task": task, "base_score": base,
            "tuned_score": tuned, **efo({task: base, **up_b}, {task: tuned, **up_t}, task, list(up_b)),
            "upstream_tuned": up_t, "upstream_base": up_b}


def _centralized_run(tmp_path, name="cen"):
    run = tmp_path / name
    (run / "cells").mkdir(parents=True)
    (run / "meta.json").write_text(json.dumps({"kind": "centralized"}))
    (run / "floors.json").write_text(json.dumps(FLOORS))
    for c in (_cell("lora", "reparameterization", "synth-chd", 30.0), _cell("full_st", "selective", "synth-chd", 80.0)):
        (run / "cells" / f"{c['method']}.json").write_text(json.dumps(c))
    (run / "results.json").write_text(json.dumps({"kind": "centralized", "cells": [
        json.loads(p.read_text()) for p in sorted((run / "cells").glob("*.json"))]}))
    return run


def test_centralized_table_and_bars_carry_the_floors(tmp_path, monkeypatch):
    from fedmllm.report import centralized

    figures = _captured_figures(monkeypatch, centralized)
    text = build_report(_centralized_run(tmp_path)).read_text()
    assert "| reparameterization | lora | 30.0↓ / -20.0 / -10.0 / -30.0 |" in text
    assert "| selective | full_st | 80.0 / +30.0 / -10.0 / +20.0 |" in text
    assert "| *floors* | *chance / majority* | 37.5 / 16.7 | – | – | – | – | – |" in text
    assert "| *floors: chance / majority* | 28.1 / 20.8 |" in text.split("### Forgetting per upstream task")[1]
    assert_readable(figures)
    score_ax = figures["bars_tiny-vila_synth-chd.png"].axes[0]
    labels = [ln.get_label() for ln in score_ax.get_lines()]
    assert "chance: 37.5" in labels and "majority: 16.7" in labels and "zero-shot base: 50.0" in labels
    assert score_ax.get_ylabel().startswith("score on synth-chd (points")


def test_collab_task_table_has_floors_and_marks(tmp_path):
    from fedmllm.report.collab import write_report

    run = tmp_path / "collab"
    run.mkdir()
    (run / "meta.json").write_text(json.dumps({"kind": "collab"}))
    (run / "floors.json").write_text(json.dumps(FLOORS))
    side = system_result("fedcollm", "collab", "m", {"downstream": {"synth-chd": 30.0, "synth-iconqa": 40.0},
                                                     "upstream": {}}, ZERO)
    systems = [{"system": "fedcollm", "family": "logit", "large": None, "small": side}]
    (run / "results.json").write_text(json.dumps({"kind": "collab", "systems": systems}))
    (run / "metrics.jsonl").write_text(json.dumps({"event": "zeroshot", "downstream": ZERO["downstream"]}) + "\n")
    text = write_report(run).read_text()
    assert "| base (zero-shot) [small] | 50.0 | 20.0↓ |" in text
    assert "| *floors: chance / majority* | 37.5 / 16.7 | 26.7 / 14.6 |" in text
    assert "| fedcollm [small] | 30.0↓ (-20.0) | 40.0 (+20.0) |" in text and "↓ = below chance" in text


def test_report_compares_a_demo_directorys_halves(tmp_path):
    demo = tmp_path / "demo-x"
    demo.mkdir()
    (demo / "meta.json").write_text(json.dumps({"kind": "demo"}))
    shutil.move(str(_centralized_run(tmp_path)), demo / "centralized")
    shutil.move(str(_federated_run(tmp_path)), demo / "federated")
    other = _federated_run(tmp_path, name="other")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "meta.json").write_text(json.dumps({"kind": "federated"}))
    paths = build_reports([demo, other, unfinished], out=str(tmp_path / "cmp"))
    text = paths[-1].read_text()
    assert "| demo-x/centralized | tiny-vila | lora | -20.0 | -10.0 | -30.0 |" in text
    assert "| demo-x/federated | tiny-vila | fedavg |" in text and "| other | tiny-vila | fedavg |" in text
    assert "- `unfinished`: not in the table: no results.json yet (unfinished run)." in text
    assert (demo / "report.md").is_file()
