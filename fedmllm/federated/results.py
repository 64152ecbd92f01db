"""Results of federated systems (strategies and baselines) in the benchmark's E / F / O terms.

For one global model evaluated on every downstream test set d and every upstream set u:
E_d = S(global, d) − S(base, d); F = mean_u S(global, u) − S(base, u) (the same F for every d,
since one model serves all tasks); O_d = E_d + F, all through `fedmllm.metrics.efo` (the one
implementation of E and F). A system's summary is the mean over d. Next to the paper's F, two
aggregations no single task dominates (`fedmllm.metrics.efo.forgetting_summary`): ``F_rel``, the
mean relative upstream change in percent of the base score (tasks with base score 0 left out,
named in ``F_rel_excluded``), and ``F_acc``, F over the accuracy-metric upstream tasks only
(``F_acc_tasks``; the CIDEr-D ones are in ``F_acc_excluded``).
"""

from __future__ import annotations

from fedmllm.metrics.efo import forgetting_summary, specialization, task_metrics
from fedmllm.runs import RunDir


def system_result(system: str, kind: str, model: str, scores: dict, zero: dict) -> dict:
    """Per-task and mean E, F, O of one system from its scores and the base's zero-shot scores."""
    down, up = scores["downstream"], scores["upstream"]
    if up:
        fs = forgetting_summary(up, {u: zero["upstream"][u] for u in up}, task_metrics(up))
    else:
        fs = {"F": 0.0, "F_rel": None, "F_rel_excluded": [], "F_acc": None, "F_acc_tasks": [],
              "F_acc_excluded": []}
    f = fs["F"]
    per_task = {}
    for t, s in down.items():
        e = specialization(s, zero["downstream"][t])
        per_task[t] = {"score": s, "E": e, "F": f, "O": e + f}
    n = len(per_task)
    return {
        "system": system, "kind": kind, "model": model, "downstream": down, "upstream": up,
        "per_task": per_task, "E": sum(v["E"] for v in per_task.values()) / n, "F": f,
        "O": sum(v["O"] for v in per_task.values()) / n,
        "downstream_mean": sum(down.values()) / n,
        **{k: v for k, v in fs.items() if k != "F"},
    }


def write_results(run: RunDir, zero: dict, systems: list[dict]) -> dict:
    """``results.json`` (and ``results.csv``) of a federated run, then the report."""
    from fedmllm.report import build_report
    from fedmllm.runs import atomic_write

    results = {"kind": "federated", "zero_shot": zero["full"], "systems": systems}
    run.write_json("results.json", results)
    tasks = list(zero["full"]["downstream"])
    lines = ["system,kind," + ",".join(f"{t},E_{t}" for t in tasks) + ",F,mean_E,mean_O,F_rel,F_acc"]
    for s in systems:
        cells = ",".join(f"{s['per_task'][t]['score']:.2f},{s['per_task'][t]['E']:.2f}" for t in tasks)
        extra = ",".join("" if s.get(k) is None else f"{s[k]:.2f}" for k in ("F_rel", "F_acc"))
        lines.append(f"{s['system']},{s['kind']},{cells},{s['F']:.2f},{s['E']:.2f},{s['O']:.2f},{extra}")
    atomic_write(run.path / "results.csv", "\n".join(lines) + "\n")
    build_report(run.path)
    return results
