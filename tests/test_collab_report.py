"""The collaboration report from a hand-made run directory: table cells, plots, `fedmllm report`."""

import json

import pytest

from fedmllm.config import Config, dumps
from fedmllm.report import build_reports
from fedmllm.report.collab import human_bytes, round_series, write_report

TASKS = ("a", "b")


def side(E, F, mean, F_rel=None, F_acc=None):
    return {"E": E, "F": F, "O": E + F, "F_rel": F_rel, "F_acc": F_acc, "downstream_mean": mean,
            "downstream": dict.fromkeys(TASKS, mean), "upstream": {"u": 50.0 + F}, "per_task": {}}


def system(name, family, large=None, small=None, gap=None, **extra):
    return {"system": name, "family": family, "description": f"{name} (test)", "large_model": "big",
            "small_model": "tiny", "large": large, "small": small, "gap_closed": gap, **extra}


SYSTEMS = [
    system("large_zero", "baseline", large=side(0.0, 0.0, 20.0)),
    system("large_pooled", "baseline", large=side(10.0, -2.0, 30.0, F_rel=-4.0, F_acc=-1.5)),
    system("fedcollm", "logit", large=side(5.0, -1.24, 25.0, F_rel=-2.5, F_acc=-0.76),
           small=side(3.0, -0.5, 13.0), gap=0.5, personalized={"mean_weighted": 61.26, "worst": 40.0, "std": 3.0},
           rounds=2, seconds=9.0, bytes_up=4 * 142464, bytes_down=4 * 1_500_000,
           bytes_up_per_client_round=142464.0, bytes_down_per_client_round=1_500_000.0,
           client_seconds_mean=0.254, client_peak_rss_mb=1023.6),
    system("offsite", "parameter", large=side(-1.0, 0.5, 19.0), gap=-0.1, rounds=2, bytes_up=4 * 900,
           bytes_down=4 * 2.5e9, bytes_up_per_client_round=900.0, bytes_down_per_client_round=2.5e9,
           client_seconds_mean=None, client_peak_rss_mb=None),
]


def ev(event, **kw):
    return json.dumps({"event": event, **kw})


def mean_ev(system, side_, round_, a, b, **kw):
    """A global_eval event with downstream scores a, b (E against that side's zero-shot)."""
    zero = 10.0 if side_ == "small" else 20.0
    return ev("global_eval", system=system, side=side_, round=round_, downstream={"a": a, "b": b},
              E={"a": a - zero, "b": b - zero}, **kw)


EVENTS = [
    ev("zeroshot", downstream={"a": 10.0, "b": 10.0}, upstream={"u": 50.0}),
    ev("zeroshot", side="large", downstream={"a": 20.0, "b": 20.0}, upstream={"u": 50.0}),
    ev("round", system="fedcollm", round=1, bytes_up=284928, bytes_down=3_000_000, client_seconds_mean=0.25),
    mean_ev("fedcollm", "small", 1, 11.0, 13.0),
    mean_ev("fedcollm", "large", 1, 22.0, 22.0),
    mean_ev("fedcollm", "small", 2, 12.0, 14.0, F=-0.5),
    mean_ev("offsite", "large", 2, 19.0, 19.0),
]


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "collab_run"
    d.mkdir()
    (d / "config.toml").write_text(dumps(Config()))
    (d / "meta.json").write_text(json.dumps({"kind": "collab", "seed": 0}))
    (d / "results.json").write_text(json.dumps({"kind": "collab", "systems": SYSTEMS}))
    (d / "metrics.jsonl").write_text("\n".join(EVENTS) + "\n")
    return d


def test_human_bytes():
    assert [human_bytes(n) for n in (None, 900, 142464, 1_500_000, 2.5e9)] == ["—", "900 B", "142.5 KB", "1.5 MB",
                                                                               "2.5 GB"]


def test_round_series_starts_at_each_sides_zero_shot():
    series = round_series([json.loads(e) for e in EVENTS])
    assert series["small"]["fedcollm"] == ([0, 1, 2], [10.0, 12.0, 13.0])
    assert series["large"]["fedcollm"] == ([0, 1], [20.0, 22.0])
    assert series["large"]["offsite"] == ([0, 2], [20.0, 19.0])
    assert "offsite" not in series["small"]


def test_report_table_and_plots(run_dir):
    path = write_report(run_dir)
    text = path.read_text()
    cfg = Config()
    assert f"`{cfg.collab.large}`" in text and f"`{cfg.model.name}`" in text
    assert f"**clients:** {cfg.federated.num_clients}" in text and f"**rounds:** {cfg.federated.rounds}" in text
    assert f"{cfg.collab.public_n} samples per task" in text and "gap closed = (large after − large_zero)" in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["large_zero"] == "| large_zero | baseline | +0.0 | +0.0 | — | — " + "| — " * 8 + "|"
    assert rows["large_pooled"] == "| large_pooled | baseline | +10.0 | -2.0 | -4.0 | -1.5 " + "| — " * 8 + "|"
    assert rows["fedcollm"] == ("| fedcollm | logit | +5.0 | -1.2 | -2.5 | -0.8 | +3.0 | -0.5 | 61.3 | 50.0 | "
                                "142.5 KB | 1.5 MB | 0.25 | 1024 |")
    assert rows["offsite"] == ("| offsite | parameter | -1.0 | +0.5 | — | — | — | — | — | -10.0 | 900 B | 2.5 GB "
                               "| — | — |")
    for name in ("collab_ef_large", "collab_ef_small", "collab_rounds", "collab_bytes"):
        png = run_dir / "plots" / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 1000, name
        assert f"](plots/{name}.png)" in text


def test_fedmllm_report_dispatches_collab_runs(run_dir):
    assert build_reports([run_dir]) == [run_dir / "report.md"]
    assert "| fedcollm | logit |" in (run_dir / "report.md").read_text()
