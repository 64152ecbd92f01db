"""What the per-round checkpoint costs: its save time as a fraction of the round's time.

The embedded federated config (`configs/federated/embedded.toml`: tiny-vila, LoRA r = 8, 8 clients
with a task-Dirichlet split, 20 local steps of batch 16) runs FedAvg, FedAdam and SCAFFOLD for a
few rounds, no baselines, on the in-process backend (``federated.backend = "inprocess"``: the real
ServerApp, ClientApp and Flower messages in this process, so every save call is observable here).
The per-round checkpoint is what makes a run resumable:

* `CheckpointStore.save` (server): global state, the algorithm's server state (FedAdam's m and v,
  SCAFFOLD's c; FedAvg has none), RNG states, totals, written to a temp folder and renamed;
* `ClientStore.save` (each client, before it replies): its local state (SCAFFOLD's c_i; nothing
  for FedAvg and FedAdam: no file).

This process wraps both (and `RoundLoop.round`, and the per-round evaluation callback) with
timers. A round's checkpoint time is the server save plus the sum of its clients' saves (in
process, and on one Ray actor, they run one after the other; with parallel actors the clients'
part is spread over them: ``client_save_mean_s`` is one client's share). The round time it is
compared with is `RoundLoop.round` (configure, training, validation, drift, aggregation, logging,
the checkpoint itself) minus the round's evaluation (kept small here: the embedded config's
evaluation sizes are cut, which changes neither the state sizes nor the training). Round 1 of
the first strategy also builds the client runtime; the summary uses rounds >= 2.

With ``--backend ray`` the clients' saves run in Ray actors, out of reach: the server side is
timed as above, and each client's save is re-timed here afterwards on its real saved local state
(``<run>/clients``), into a scratch `ClientStore`, once per round.

The LAST line printed is one JSON object: ``fraction`` (the largest, over strategies, of the
median over rounds >= 2 of checkpoint time / round time), per-strategy details (median and worst
fractions, seconds, bytes written) and the target (<= 0.05).

    .venv/bin/python benchmarks/checkpoint_cost.py [--rounds 3] [--backend inprocess|ray]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

TARGET = 0.05
ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ["fedavg", "fedadam", "scaffold"]


def overrides(rounds: int, strategies: list[str], backend: str) -> list[str]:
    ckpt = ROOT / "fedmllm" / "assets" / "checkpoints" / "tiny-vila"
    return [f"model.pretrained={'true' if ckpt.is_dir() else 'false'}",
            f"federated.rounds={rounds}", f"federated.strategies={json.dumps(strategies)}",
            "federated.baselines=[]", f"federated.backend={backend}",
            # evaluation only: smaller test and upstream sets, no adapter saves between rounds
            "data.test_n=8", "data.upstream_n=8", "federated.upstream_n=4",
            "federated.eval_every=1000", "federated.upstream_every=1000", "federated.save_every=1000"]


class Timers:
    """Wraps methods of classes with timers; each call's seconds land under a key its
    arguments give: ``key(*args) -> (system, round)``."""

    def __init__(self):
        self.seconds: dict[str, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.bytes: dict[str, dict[tuple, int]] = defaultdict(lambda: defaultdict(int))
        self._saved: list[tuple] = []

    def wrap(self, name: str, cls, attr: str, key, size=None) -> None:
        orig = getattr(cls, attr)
        timers = self

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return orig(*args, **kwargs)
            finally:
                k = key(*args, **kwargs)
                timers.seconds[name][k].append(time.perf_counter() - t0)
                if size is not None:
                    timers.bytes[name][k] += size(*args, **kwargs)

        self._saved.append((cls, attr, orig))
        setattr(cls, attr, timed)

    def restore(self) -> None:
        for cls, attr, orig in reversed(self._saved):
            setattr(cls, attr, orig)
        self._saved.clear()


def groups_bytes(groups) -> int:
    return sum(int(v.nbytes) for arrays in groups.values() for v in arrays.values())


def checkpoint_bytes(ckpt) -> int:
    arrays = ckpt.algorithm.get("arrays", {})
    return sum(int(v.nbytes) for v in ckpt.global_state.values()) + groups_bytes(arrays)


def retime_client_saves(run: Path, rounds: int, timers: Timers) -> None:
    """(ray) Each client's save, re-timed on its real saved local state, once per round."""
    from fedmllm.federated.client import ClientStore

    root = run / "clients"
    if not root.is_dir():
        return
    with tempfile.TemporaryDirectory(prefix="fedmllm-clientstore-") as tmp:
        scratch = ClientStore(tmp)
        for system_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for client_dir in sorted(p for p in system_dir.iterdir() if p.is_dir()):
                pid = int(client_dir.name)
                groups = ClientStore(root).load(system_dir.name, pid, rounds + 1)
                for r in range(1, rounds + 1):
                    t0 = time.perf_counter()
                    scratch.save(system_dir.name, pid, r, groups)
                    timers.seconds["client_save"][(system_dir.name, r)].append(time.perf_counter() - t0)
                    timers.bytes["client_save"][(system_dir.name, r)] += groups_bytes(groups)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(timers: Timers, strategies: list[str], rounds: int) -> dict:
    sec, size = timers.seconds, timers.bytes
    out = {}
    for system in strategies:
        per_round = []
        for r in range(1, rounds + 1):
            k = (system, r)
            server = sum(sec["checkpoint_save"].get(k, []))
            clients = sec["client_save"].get(k, [])
            round_s = sum(sec["round"].get(k, []))
            eval_s = sum(sec["evaluate"].get(k, []))
            ckpt_s = server + sum(clients)
            per_round.append({
                "round": r, "round_s": round_s, "evaluate_s": eval_s, "checkpoint_s": ckpt_s,
                "server_save_s": server, "client_saves_s": sum(clients), "client_saves": len(clients),
                "client_save_mean_s": med(clients) if clients else 0.0,
                "client_load_s": sum(sec["client_load"].get(k, [])),
                "fraction": ckpt_s / (round_s - eval_s),
                "fraction_one_client": (server + (med(clients) if clients else 0.0)) / (round_s - eval_s),
                "server_bytes": size["checkpoint_save"].get(k, 0),
                "client_bytes": size["client_save"].get(k, 0),
            })
        timed = [p for p in per_round if p["round"] >= 2] or per_round
        out[system] = {
            "fraction": med([p["fraction"] for p in timed]),
            "fraction_worst": max(p["fraction"] for p in timed),
            "fraction_one_client": med([p["fraction_one_client"] for p in timed]),
            "checkpoint_s": med([p["checkpoint_s"] for p in timed]),
            "server_save_s": med([p["server_save_s"] for p in timed]),
            "client_saves_s": med([p["client_saves_s"] for p in timed]),
            "round_s_without_eval": med([p["round_s"] - p["evaluate_s"] for p in timed]),
            "server_mb": round(timed[-1]["server_bytes"] / 2**20, 3),
            "client_mb_per_round": round(timed[-1]["client_bytes"] / 2**20, 3),
            "rounds": per_round,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds per strategy (round 1 is not summarized)")
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES)
    parser.add_argument("--backend", choices=["inprocess", "ray"], default="inprocess")
    parser.add_argument("--config", default=str(ROOT / "configs" / "federated" / "embedded.toml"))
    args = parser.parse_args()

    import torch

    from fedmllm.config import load_config
    from fedmllm.federated.checkpoint import CheckpointStore
    from fedmllm.federated.client import ClientStore
    from fedmllm.federated.experiment import FederatedExperiment
    from fedmllm.federated.rounds import RoundLoop
    from simulations.federated import run_federated

    torch.set_num_threads(1)  # as a Ray actor trains (and as the other benchmarks do)
    cfg = load_config(args.config, overrides(args.rounds, args.strategies, args.backend))
    timers = Timers()
    timers.wrap("checkpoint_save", CheckpointStore, "save",
                lambda store, system, ckpt: (system, ckpt.round),
                size=lambda store, system, ckpt: checkpoint_bytes(ckpt))
    timers.wrap("client_save", ClientStore, "save", lambda store, system, pid, r, groups: (system, r),
                size=lambda store, system, pid, r, groups: groups_bytes(groups))
    timers.wrap("client_load", ClientStore, "load", lambda store, system, pid, before: (system, before))
    timers.wrap("round", RoundLoop, "round", lambda loop, r, state: (loop.s.system, r))
    timers.wrap("evaluate", FederatedExperiment, "evaluate_round", lambda exp, system, r, state: (system, r))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedmllm-ckpt-") as tmp:
        try:
            run = run_federated(cfg, str(Path(tmp) / "run"))
        finally:
            timers.restore()
        if args.backend == "ray":
            timers.seconds["client_save"].clear()
            timers.bytes["client_save"].clear()
            retime_client_saves(run, args.rounds, timers)
        results = summarize(timers, args.strategies, args.rounds)
    wall = time.perf_counter() - t0
    for system, r in results.items():
        print(f"[{system}] checkpoint {r['checkpoint_s'] * 1000:.1f} ms "
              f"(server {r['server_save_s'] * 1000:.1f} ms, {r['server_mb']} MB; "
              f"clients {r['client_saves_s'] * 1000:.1f} ms, {r['client_mb_per_round']} MB) "
              f"of a {r['round_s_without_eval']:.2f} s round: {100 * r['fraction']:.2f}% "
              f"(worst round {100 * r['fraction_worst']:.2f}%)", flush=True)
    print(json.dumps({
        "fraction": max(r["fraction"] for r in results.values()),
        "per_strategy": {s: r["fraction"] for s, r in results.items()},
        "backend": args.backend, "rounds": args.rounds, "clients": cfg.federated.num_clients,
        "local_steps": cfg.federated.local_steps, "wall_s": round(wall, 1),
        "details": results, "target": TARGET}))


if __name__ == "__main__":
    main()
