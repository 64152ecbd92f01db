"""What SecAgg+ costs a round: `SecAggTransport` against plain `GridTransport` on the same setup.

The project's ClientApp on the tiny model (tiny-vila, LoRA, K clients, FedAvg) runs R rounds of our
round loop twice, in this process over `InProcessGrid` (real Flower messages through the protobuf
wire format, no Ray): once over `GridTransport` (one train message per client), once over
`SecAggTransport` (Flower's SecAgg+: four messages per client per round: setup, share keys, collect
masked vectors with the training, unmask). Round 1 is left out on both sides (it builds the client
runtime and asks the nodes' partitions). Per round:

- ``seconds``: the round event's configure-to-log time (median over rounds 2..R);
- ``wire bytes``: every message's serialized protobuf size (``message_to_proto(m).ByteSize()``,
  counted where `InProcessGrid` serializes), server -> clients and back;
- ``record bytes``: what the round event reports (plain: the payload and reply arrays; secagg:
  every record of the four stages: arrays, keys, ciphertexts, shares, masked int64 vectors).

Also printed: the protocol's own seconds per round (secagg minus plain: key agreement, secret
sharing, masking and unmasking, the three extra message exchanges) and the largest difference
between the two global states after each round: after round 1 it is SecAgg+'s quantization error
(within the bound of tests/test_secagg.py); later rounds start from different states, and local
training (AdamW's first steps move each value by about lr whatever the size of its gradient) can
amplify that difference. The LAST line is one JSON object with the ratios (secagg / plain).

    .venv/bin/python benchmarks/secagg_cost.py [--clients 4] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def overrides(clients: int, rounds: int) -> list[str]:
    return ["model.name=tiny-vila", "model.pretrained=false", "data.train_n=8", "data.test_n=4",
            "data.upstream_n=4", "train.batch_size=4", f"federated.num_clients={clients}",
            f"federated.rounds={rounds}", "federated.local_steps=2", "federated.baselines=[]",
            "federated.partitioner=iid"]


class WireMeter:
    """Counts the serialized size of every message `InProcessGrid` puts on its wire."""

    def __init__(self):
        import server.inprocess as inprocess

        self.module, self.orig, self.down, self.up = inprocess, inprocess.message_to_proto, 0, 0

    def __enter__(self):
        def counting(message):
            proto = self.orig(message)
            if message.metadata.reply_to_message_id:
                self.up += proto.ByteSize()
            else:
                self.down += proto.ByteSize()
            return proto

        self.module.message_to_proto = counting
        return self

    def __exit__(self, *exc):
        self.module.message_to_proto = self.orig


def run(cfg, root: Path, partition, secure: bool) -> dict:
    """R rounds of FedAvg over one transport; per-round seconds, bytes and the final state."""
    import clients.app as client_app
    from fedmllm.federated.algorithms import build_algorithm
    from fedmllm.federated.experiment import loop_settings
    from fedmllm.federated.rounds import RoundLoop
    from fedmllm.federated.sequential import initial_global_state
    from server.inprocess import InProcessGrid
    from server.secagg import SecAggTransport
    from server.strategy import GridTransport

    grid = InProcessGrid(client_app.app, cfg.federated.num_clients)
    transport = SecAggTransport.from_config(grid, cfg, sizes=partition.sizes()) if secure else GridTransport(grid)
    events, wire = [], []
    with WireMeter() as meter:
        def log(event: dict) -> None:
            if event["event"] == "round":
                wire.append((meter.down, meter.up))
                events.append(event)

        states: list[dict] = []
        loop = RoundLoop(build_algorithm("fedavg", {}, num_clients=cfg.federated.num_clients), transport,
                         loop_settings(cfg, "fedavg", root, partition), log=log, metrics_size=lambda: 0,
                         evaluate=lambda r, state: states.append(dict(state)))
        loop.run(initial_global_state(cfg))
    per_round = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(wire, wire[1:])]  # rounds 2..R
    timed = events[1:]
    return {"seconds": statistics.median(e["seconds"] for e in timed),
            "wire_down": statistics.median(d for d, _ in per_round),
            "wire_up": statistics.median(u for _, u in per_round),
            "record_down": statistics.median(e["bytes_down"] for e in timed),
            "record_up": statistics.median(e["bytes_up"] for e in timed), "states": states}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from fedmllm.config import dumps, load_config
    from fedmllm.experiment import ExperimentData
    from fedmllm.federated.experiment import resolve_strategy_options
    from fedmllm.federated.runtime import build_partition
    from fedmllm.runs import atomic_write, write_json
    from server.inprocess import server_task_identity

    cfg = resolve_strategy_options(load_config(None, overrides(args.clients, args.rounds)))
    with tempfile.TemporaryDirectory() as tmp, server_task_identity():
        root = Path(tmp)
        atomic_write(root / "config.toml", dumps(cfg))
        write_json(root / "meta.json", {"kind": "federated"})
        partition = build_partition(cfg, ExperimentData.load(cfg, parts=("train",)))
        write_json(root / "partition.json", partition.to_json())
        plain = run(cfg, root, partition, secure=False)
        secure = run(cfg, root, partition, secure=True)
    diffs = [max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
             for a, b in zip(plain["states"], secure["states"])]
    for name, r in (("plain", plain), ("secagg", secure)):
        print(f"{name:7s} round {r['seconds']:.3f} s  wire down {r['wire_down']:,} B  up {r['wire_up']:,} B  "
              f"record down {r['record_down']:,} B  up {r['record_up']:,} B", flush=True)
    print("max |secagg - plain| of the global state after each round: " + ", ".join(f"{d:.2g}" for d in diffs))
    wire = {k: secure[k] / plain[k] for k in ("wire_down", "wire_up")}
    print(json.dumps({
        "seconds_ratio": secure["seconds"] / plain["seconds"],
        "bytes_ratio": (secure["wire_down"] + secure["wire_up"]) / (plain["wire_down"] + plain["wire_up"]),
        "bytes_down_ratio": wire["wire_down"], "bytes_up_ratio": wire["wire_up"],
        "record_bytes_ratio": (secure["record_down"] + secure["record_up"])
        / (plain["record_down"] + plain["record_up"]),
        "seconds_per_round": {"plain": plain["seconds"], "secagg": secure["seconds"]},
        "wire_bytes_per_round": {"plain": plain["wire_down"] + plain["wire_up"],
                                 "secagg": secure["wire_down"] + secure["wire_up"]},
        "extra_seconds_per_round": secure["seconds"] - plain["seconds"], "clients": args.clients,
        "rounds_timed": args.rounds - 1, "max_state_diff_by_round": diffs}))


if __name__ == "__main__":
    main()
