"""What Flower + Ray add to a round: the federated simulation against the sequential reference.

The same config (tiny-vila, 2 clients, FedAvg, R rounds) runs twice: `run_federated` (Flower's
Ray simulation backend: the ServerApp's own round loop, `fedmllm.federated.rounds.RoundLoop`, over
`server.strategy.GridTransport`, clients loading their slice from the run directory's
partition.json) and `run_sequential_fedavg` (the same `ClientRuntime.run_round` calls the
ClientApp makes, in a loop in this process: no Flower, no round loop, no checkpoints). Local
training is calibrated to about 1 s and about 0.1 s per client per round. One-off costs are left
out on both sides: Ray start, actor imports and model builds, zero-shot and final evaluation
(federated), runtime build (sequential: one runtime, the calibration's); round 1 is not timed
either (the actors build their runtime in it). A federated round's time is the wall time between
the ends of consecutive rounds (``end_time`` of the ``round`` events in metrics.jsonl:
configure, sending, Ray dispatch, training, polling, reply validation, drift, aggregation, logging
and the round's atomic checkpoint, `CheckpointStore.save`, timed on its own as ``checkpoint_s``);
the configure-to-log time (``seconds`` of the event) is reported beside it.

With one Ray actor (``num_cpus_per_client = 2`` on 2 cores) the clients train one after the
other, as in the reference, so the ratio is pure overhead; two actors (one per core) are reported
too (they can overlap clients, so their ratio may fall below 1 on an idle machine).
The LAST line printed is one JSON object with ``ratio_1s``, ``ratio_0.1s`` (median federated
round / median sequential round, one actor), ``per_round_floor_s`` (median of federated round
minus its clients' training time, one actor, 0.1 s setting), ``overhead_s_*`` (that floor minus
the sequential round's own time outside training: the absolute cost of Flower + Ray per round,
less exposed than the ratios to the load of a shared machine), ``ratio_same_training_*`` (each
federated round / (its own clients' training time + the sequential round's median time outside
training): the ratio with the training time of the same moment on both sides),
``latency_s_0.1s`` (where a round waits: `LatencyProbe`), ``checkpoint_s_0.1s`` (median
`CheckpointStore.save`), details and the targets.

    .venv/bin/python benchmarks/federated_overhead.py [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fedmllm.config import load_config
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms import GLOBAL, Payload
from fedmllm.federated.checkpoint import CheckpointStore
from fedmllm.federated.client import ClientRuntime
from fedmllm.federated.sequential import default_runtime, initial_global_state, run_sequential_fedavg
from fedmllm.runs import read_events

TARGETS = {"ratio_1s": 1.10, "ratio_0.1s": 1.5}
SETTINGS = {"1s": (1.0, 8), "0.1s": (0.1, 2)}  # target seconds per client per round, batch size


def base_overrides(model: str) -> list[str]:
    ckpt = Path(__file__).resolve().parent.parent / "fedmllm" / "assets" / "checkpoints" / model
    return [f"model.name={model}", f"model.pretrained={'true' if ckpt.is_dir() else 'false'}",
            "data.train_n=32", "data.test_n=4", "data.upstream_n=4", "federated.upstream_n=2",
            "federated.num_clients=2", "federated.strategies=[\"fedavg\"]", "federated.baselines=[]",
            "federated.partitioner=iid", "federated.eval_every=1000", "federated.upstream_every=1000",
            "federated.save_every=1000"]


def calibrate(overrides: list[str], target_s: float, batch: int) -> tuple[int, float, ClientRuntime]:
    """Local steps giving about ``target_s`` of training per client, the step time measured and
    the runtime (reused by the sequential runs: it depends on the model, method, data and
    ``train.*``, which the runs share, not on rounds or local steps)."""
    cfg = load_config(None, [*overrides, f"train.batch_size={batch}"])
    rt, x0 = default_runtime(cfg), initial_global_state(cfg)

    def seconds(pid: int, steps: int) -> float:
        config = {P.SERVER_ROUND: 1, P.LR: cfg.train.lr, P.LOCAL_STEPS: steps, P.ALGORITHM: "fedavg"}
        return rt.run_round(pid, Payload({GLOBAL: x0}, config), {}).seconds

    seconds(0, 2)  # warm-up
    per_step = statistics.median(seconds(pid, 4) / 4 for pid in (0, 1, 0, 1, 0, 1))
    return max(1, round(target_s / per_step)), per_step, rt


def sequential(cfg, runtime: ClientRuntime) -> dict:
    _, history = run_sequential_fedavg(cfg, runtime=runtime)
    timed = history[1:]
    return {"round_s": [h["seconds"] for h in timed], "train_s": [sum(h["train_seconds"]) for h in timed]}


class LatencyProbe:
    """Where a train round waits, from the driver's side of Flower's in-memory grid.

    Wraps ``InMemoryGrid.send_and_receive`` (the ServerApp runs in this process) and, from each
    reply's ``created_at`` (stamped in the actor when the ClientApp returns) and its
    ``wall-seconds`` metric, splits a round into: ``dispatch`` (push -> first client starts: the
    engine's poll for instructions, every 0.01 s with `simulations.dispatch`; Ray submit),
    ``between_clients`` (one actor only: a client's end -> the next one's start; negative when
    actors overlap) and ``return`` (last reply created -> seen by the server: Ray return, Flower's
    reply queue, the grid's poll). Profiling only.
    """

    def __init__(self):
        from flwr.superlink.grid import InMemoryGrid

        self.cls, self.orig, self.rounds = InMemoryGrid, InMemoryGrid.send_and_receive, []

    def __enter__(self):
        probe = self

        def send_and_receive(grid, messages, *, timeout=None):
            messages = list(messages)
            pushed = time.time()
            replies = probe.orig(grid, messages, timeout=timeout)
            seen = time.time()
            ok = sorted((m for m in replies if not m.has_error()), key=lambda m: m.metadata.created_at)
            if ok and messages[0].metadata.message_type == "train":
                starts = [m.metadata.created_at - float(m.content[P.METRICS][P.WALL_SECONDS]) for m in ok]
                probe.rounds.append({
                    "dispatch": starts[0] - pushed, "return": seen - ok[-1].metadata.created_at,
                    "between_clients": [b - a.metadata.created_at for a, b in zip(ok, starts[1:])]})
            return replies

        self.cls.send_and_receive = send_and_receive
        return self

    def __exit__(self, *exc):
        self.cls.send_and_receive = self.orig

    def medians(self) -> dict:
        timed = self.rounds[1:]
        return {"dispatch": med([r["dispatch"] for r in timed]), "return": med([r["return"] for r in timed]),
                "between_clients": med([x for r in timed for x in r["between_clients"]])}


class CheckpointTimer:
    """Times `CheckpointStore.save` (the round loop's per-round checkpoint, in this process)."""

    def __init__(self):
        self.orig, self.seconds = CheckpointStore.save, []

    def __enter__(self):
        timer = self

        def save(store, system, ckpt):
            t0 = time.perf_counter()
            try:
                return timer.orig(store, system, ckpt)
            finally:
                timer.seconds.append(time.perf_counter() - t0)

        CheckpointStore.save = save
        return self

    def __exit__(self, *exc):
        CheckpointStore.save = self.orig


def federated(cfg, out: Path) -> dict:
    from simulations.federated import run_federated

    t0 = time.perf_counter()
    with LatencyProbe() as probe, CheckpointTimer() as ckpt:
        run_federated(cfg, str(out))
    total = time.perf_counter() - t0
    events = list(read_events(out))
    rounds = sorted((e for e in events if e["event"] == "round"), key=lambda e: e["round"])
    ends = [e["end_time"] for e in rounds]
    train = {}
    for e in events:
        if e["event"] == "client_train":
            train[e["round"]] = train.get(e["round"], 0.0) + e["seconds"]
    timed = rounds[1:]
    # round r's time (end of r - 1 to end of r) holds round r - 1's checkpoint: rounds 1..R-1 are timed
    return {"round_s": [b - a for a, b in zip(ends, ends[1:])],
            "configure_to_aggregate_s": [e["seconds"] for e in timed],
            "train_s": [train[e["round"]] for e in timed], "total_s": total,
            "checkpoint_s": ckpt.seconds[:-1], "latency_s": probe.medians()}


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bench(label: str, overrides: list[str], rounds: int, work: Path) -> dict:
    target, batch = SETTINGS[label]
    steps, per_step, runtime = calibrate(overrides, target, batch)
    opts = [*overrides, f"train.batch_size={batch}", f"federated.local_steps={steps}",
            f"federated.rounds={rounds}"]
    print(f"[{label}] batch {batch}, {steps} local steps ({per_step * 1000:.0f} ms/step)", flush=True)
    cfg = load_config(None, opts)
    # The machine is shared: interleave seq, fed (1 actor), seq, fed (2 actors), seq and compare
    # each federated run with the sequential runs on either side of it.
    seqs, fed = [sequential(cfg, runtime)], {}
    for actors, cpus in (("1_actor", 2), ("2_actors", 1)):
        fed[actors] = federated(load_config(None, [*opts, f"federated.num_cpus_per_client={cpus}"]),
                                work / f"{label}-{actors}")
        seqs.append(sequential(cfg, runtime))
        print(f"[{label}] federated {actors}: median round {med(fed[actors]['round_s']):.3f} s "
              f"(whole run {fed[actors]['total_s']:.1f} s); sequential "
              f"{med(seqs[-2]['round_s']):.3f} s before, {med(seqs[-1]['round_s']):.3f} s after", flush=True)
    around = {"1_actor": seqs[0:2], "2_actors": seqs[1:3]}
    ref = {k: med([x for s in v for x in s["round_s"]]) for k, v in around.items()}
    seq = {k: [x for s in seqs for x in s[k]] for k in seqs[0]}
    one = fed["1_actor"]
    return {
        "local_steps": steps, "batch_size": batch, "train_s_per_client": med(seq["train_s"]) / 2,
        "sequential_round_s": ref,
        "federated_round_s": {k: med(v["round_s"]) for k, v in fed.items()},
        "federated_configure_to_aggregate_s": {k: med(v["configure_to_aggregate_s"]) for k, v in fed.items()},
        "checkpoint_s": {k: med(v["checkpoint_s"]) for k, v in fed.items()},
        "ratio": med(one["round_s"]) / ref["1_actor"],
        "ratio_2_actors": med(fed["2_actors"]["round_s"]) / ref["2_actors"],
        # Outside the clients' training: federated (Flower, Ray, drift, ...) vs sequential
        # (set/get state, averaging): their difference is the overhead, less exposed to load.
        "floor_s": med([r - t for r, t in zip(one["round_s"], one["train_s"])]),
        "sequential_outside_training_s": med([r - t for r, t in zip(seq["round_s"], seq["train_s"])]),
        "overhead_s": med([r - t for r, t in zip(one["round_s"], one["train_s"])])
        - med([r - t for r, t in zip(seq["round_s"], seq["train_s"])]),
        # Each federated round against the sequential round with that round's own training time
        # (same load on both sides of the ratio; only the outside-training part is borrowed).
        "ratio_same_training": med([r / (t + med([a - b for a, b in zip(seq["round_s"], seq["train_s"])]))
                                    for r, t in zip(one["round_s"], one["train_s"])]),
        "latency_s": {k: v["latency_s"] for k, v in fed.items()},
        "startup_and_final_eval_s": {k: v["total_s"] - sum(v["round_s"]) for k, v in fed.items()},
        "raw": {"sequential": seq, "federated": fed},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="rounds per run (round 1 is not timed)")
    parser.add_argument("--model", default="tiny-vila")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = base_overrides(args.model)
    with tempfile.TemporaryDirectory(prefix="fedmllm-overhead-") as tmp:
        results = {label: bench(label, overrides, args.rounds, Path(tmp)) for label in SETTINGS}
    summary = {
        "ratio_1s": results["1s"]["ratio"], "ratio_0.1s": results["0.1s"]["ratio"],
        "ratio_same_training_1s": results["1s"]["ratio_same_training"],
        "ratio_same_training_0.1s": results["0.1s"]["ratio_same_training"],
        "per_round_floor_s": results["0.1s"]["floor_s"],
        "overhead_s_1s": results["1s"]["overhead_s"], "overhead_s_0.1s": results["0.1s"]["overhead_s"],
        "latency_s_0.1s": results["0.1s"]["latency_s"]["1_actor"],
        "checkpoint_s_0.1s": results["0.1s"]["checkpoint_s"]["1_actor"],
        "ratio_2_actors_1s": results["1s"]["ratio_2_actors"],
        "ratio_2_actors_0.1s": results["0.1s"]["ratio_2_actors"],
        "rounds_timed": args.rounds - 1, "clients": 2, "model": args.model,
        "details": results, "targets": TARGETS,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
