"""Peak memory of a federated run with 1000 partitions against 10, same clients per round.

Only the number of partitions (simulated supernodes) changes: the data (6 x 170 training samples,
enough for 1000 iid partitions of at least one sample), the 4 clients sampled per round, the
rounds and the local work are the same. Each run is a child process (``--child``) running
`run_federated` on Flower's Ray backend (2 actors); this process samples the resident set size
(RSS, via psutil) of the child and all its descendants (Ray's daemons and workers) every 0.2 s.

What should not grow with the partitions: the server (driver) keeps the partition (saved once
as the run directory's ``partition.json``), the round loop sends each sampled client's payload
(round values only: lr, steps, algorithm, experiment id and run directory; never the config), and
each Ray actor builds its `ClientRuntime` from the run directory and loads only the slices of the
partitions it serves (`fedmllm.federated.client.load_client_samples`). What does grow: Flower's
per-node contexts and the one-off ``query`` asking every node its partition id
(`server.strategy.GridTransport.nodes_by_partition`, the ``node_partitions`` event).

Reported per run: the peak of driver + Ray workers (``ray::`` processes), the peak including
Ray's daemons (gcs_server, raylet, ...), the largest single worker's peak, the per-round wall
time from metrics.jsonl and the node query's time. The LAST line printed is one JSON object
``{"ratio": peak_1000 / peak_10 (driver + workers), ..., "target": 1.10}``.

    .venv/bin/python benchmarks/client_scaling.py [--rounds 3] [--per-round 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

TARGET = 1.10
ROOT = Path(__file__).resolve().parent.parent


def overrides(partitions: int, rounds: int, per_round: int) -> list[str]:
    ckpt = ROOT / "fedmllm" / "assets" / "checkpoints" / "tiny-vila"
    return ["model.name=tiny-vila", f"model.pretrained={'true' if ckpt.is_dir() else 'false'}",
            "data.train_n=170", "data.test_n=4", "data.upstream_n=4", "federated.upstream_n=2",
            "train.batch_size=4", f"federated.num_clients={partitions}",
            f"federated.clients_per_round={per_round}", f"federated.rounds={rounds}",
            "federated.local_steps=2", 'federated.strategies=["fedavg"]', "federated.baselines=[]",
            "federated.partitioner=iid", "federated.eval_every=1000", "federated.save_every=1000",
            "federated.num_cpus_per_client=1"]


def child(out: str, opts: list[str]) -> None:
    """Runs in the child process: one federated run."""
    import torch

    from fedmllm.config import load_config
    from simulations.federated import run_federated

    torch.set_num_threads(1)
    run_federated(load_config(None, opts), out)


def rss_sample(proc: psutil.Process) -> dict[str, int]:
    """RSS in bytes of the driver, of Ray workers (and the largest one) and of the other
    descendants (daemons)."""
    out = {"driver": 0, "workers": 0, "daemons": 0, "worker_max": 0}
    try:
        out["driver"] = proc.memory_info().rss
        children = proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return out
    for p in children:
        try:
            name = " ".join(p.cmdline()[:1]) or p.name()
            kind = "workers" if name.startswith("ray::") or "default_worker.py" in " ".join(p.cmdline()) \
                else "daemons"
            rss = p.memory_info().rss
            out[kind] += rss
            if kind == "workers":
                out["worker_max"] = max(out["worker_max"], rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def measure(partitions: int, rounds: int, per_round: int, work: Path) -> dict:
    out = work / f"p{partitions}"
    cmd = [sys.executable, __file__, "--child", str(out), *overrides(partitions, rounds, per_round)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = {"driver": 0, "workers": 0, "daemons": 0, "worker_max": 0, "driver+workers": 0, "total": 0}
    while proc.poll() is None:
        s = rss_sample(ps)
        for key, value in (*s.items(), ("driver+workers", s["driver"] + s["workers"]),
                           ("total", s["driver"] + s["workers"] + s["daemons"])):
            peak[key] = max(peak[key], value)
        time.sleep(0.2)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"run with {partitions} partitions failed:\n{err[-3000:]}")
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ends = [e["end_time"] for e in events if e["event"] == "round"]
    clients = sorted({e["client"] for e in events if e["event"] == "client_train"})
    asked = [e["seconds"] for e in events if e["event"] == "node_partitions"]
    if len(clients) == 0 or not ends:
        raise SystemExit(f"run with {partitions} partitions trained no client (see {out}/metrics.jsonl)")
    return {"peak_mb": {k: round(v / 2**20, 1) for k, v in peak.items()},
            "partition_json_kb": round((out / "partition.json").stat().st_size / 1024, 1),
            "wall_s": round(time.perf_counter() - t0, 1),
            "round_s": [round(b - a, 3) for a, b in zip(ends, ends[1:])],
            "clients_trained": len(clients), "node_partition_query_s": round(sum(asked), 1)}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=4, help="clients sampled per round")
    parser.add_argument("--partitions", type=int, nargs=2, default=[10, 1000])
    args = parser.parse_args()
    small, large = args.partitions
    results = {}
    with tempfile.TemporaryDirectory(prefix="fedmllm-scaling-") as tmp:
        for n in (small, large):
            print(f"[{n} partitions] running ...", flush=True)
            results[n] = measure(n, args.rounds, args.per_round, Path(tmp))
            print(f"[{n} partitions] peak RSS {results[n]['peak_mb']} MB, {results[n]['wall_s']} s, "
                  f"rounds {results[n]['round_s']} s", flush=True)
    a, b = results[small]["peak_mb"], results[large]["peak_mb"]
    print(json.dumps({
        "ratio": b["driver+workers"] / a["driver+workers"], "ratio_total": b["total"] / a["total"],
        "ratio_driver": b["driver"] / a["driver"], "ratio_worker_max": b["worker_max"] / a["worker_max"],
        "partitions": [small, large],
        "clients_per_round": args.per_round, "rounds": args.rounds,
        "details": {str(k): v for k, v in results.items()}, "target": TARGET}))


if __name__ == "__main__":
    main()
