"""One federated experiment, run by the ServerApp: partition, zero-shot, baselines, strategies.

Every system (each strategy, the ``pooled`` and ``local`` baselines) trains on the same partition
from the same base and is scored on the same test sets; its result is a file under ``systems/``, so
a resumed run skips finished systems. Baselines run in the server process (no messages needed).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid

from fedmllm.config import Config, dumps, method_options
from fedmllm.experiment import ExperimentData, derive_seed
from fedmllm.federated import protocol as P
from fedmllm.federated.drift import weight_divergence
from fedmllm.federated.results import system_result
from fedmllm.federated.runtime import ClientRuntime, ServerRuntime
from fedmllm.runs import RunDir, write_json
from server.instrument import Instrumented


class Experiment:
    """Shared state of one federated experiment in the server process."""

    def __init__(self, cfg: Config, run: RunDir):
        from fedmllm.models import build_model

        self.cfg, self.run = cfg, run
        self.bundle = build_model(cfg.model.name, pretrained=cfg.model.pretrained, seed=cfg.seed)
        self.data = ExperimentData.load(cfg)
        self.server = ServerRuntime(cfg, self.data, self.bundle)
        self.clients = ClientRuntime(cfg, self.bundle, self.data)  # for the in-process baselines
        self.partition = self.clients.partition
        self._write_partition()
        self.zero = self._zero_shot()
        self.pooled_state: Optional[dict[str, torch.Tensor]] = None
        self.node_partitions: dict[int, int] = {}  # node id -> partition id, asked once

    def _write_partition(self) -> None:
        path = self.run.path / "partition.json"
        if not path.is_file():
            write_json(path, self.partition.to_json())
            self.run.log({"event": "partition", "partitioner": self.cfg.federated.partitioner,
                          "counts": self.partition.to_json().get("counts")})
        print(self.partition.counts_table(), flush=True)

    def _zero_shot(self) -> dict:
        path = self.run.path / "zeroshot.json"
        if path.is_file():
            return json.loads(path.read_text())
        zero = self.server.zero_shot()
        write_json(path, zero)
        self.run.log({"event": "zeroshot", **zero["full"]})
        print("zero-shot: " + ", ".join(f"{t} {s:.1f}" for t, s in zero["full"]["downstream"].items()), flush=True)
        return zero

    def done(self, system: str) -> Optional[dict]:
        path = self.run.path / "systems" / f"{system}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def finish(self, system: str, kind: str, state: dict, extra: dict) -> dict:
        """Final full evaluation of ``state``, adapter saved, result file written."""
        scores = self.server.evaluate(state, upstream="full")
        result = system_result(system, kind, self.cfg.model.name, scores, self.zero["full"])
        result.update(extra)
        self.save_adapter(system, state, self.cfg.federated.rounds)
        write_json(self.run.path / "systems" / f"{system}.json", result)
        self.run.log({"event": "system_done", "system": system, "E": result["E"], "F": result["F"], "O": result["O"]})
        print(f"[{system}] final: mean E {result['E']:+.1f}  F {result['F']:+.1f}  O {result['O']:+.1f}", flush=True)
        return result

    def save_adapter(self, system: str, state: dict, server_round: int) -> None:
        self.server.method.set_state(self.server.model, state)
        out = self.run.path / "adapters" / system / f"round-{server_round:03d}"
        self.server.method.save(self.server.model, out)
        write_json(out / "round.json", {"system": system, "round": server_round})

    # --- baselines -------------------------------------------------------------------------
    def run_pooled(self) -> dict:
        """Centralized training on the union of the clients' data, same total steps."""
        fed = self.cfg.federated
        per_round = fed.clients_per_round or fed.num_clients
        steps = fed.rounds * per_round * fed.local_steps
        rt = self.clients
        samples = [s for pid in range(len(self.partition.clients)) for s in rt.client_samples(pid)]
        t0 = time.perf_counter()
        state = self._train_from_initial(samples, steps, derive_seed(self.cfg.seed, "pooled"))
        self.pooled_state = state
        return self.finish("pooled", "baseline", state, {"steps": steps, "seconds": time.perf_counter() - t0})

    def run_local(self) -> dict:
        """Each client alone for all rounds; scores averaged over clients."""
        fed = self.cfg.federated
        per_client = []
        t0 = time.perf_counter()
        for pid in range(len(self.partition.clients)):
            samples = self.clients.client_samples(pid)
            if not samples:
                continue
            state = self._train_from_initial(samples, fed.rounds * fed.local_steps, derive_seed(self.cfg.seed, "local", pid))
            per_client.append(self.server.evaluate(state, upstream="full"))
            print(f"[local] client {pid} done", flush=True)
        avg = {part: {t: sum(c[part][t] for c in per_client) / len(per_client) for t in per_client[0][part]}
               for part in ("downstream", "upstream")}
        result = system_result("local", "baseline", self.cfg.model.name, avg, self.zero["full"])
        result.update({"clients": len(per_client), "seconds": time.perf_counter() - t0})
        write_json(self.run.path / "systems" / "local.json", result)
        self.run.log({"event": "system_done", "system": "local", "E": result["E"], "F": result["F"], "O": result["O"]})
        return result

    def _train_from_initial(self, samples, steps: int, seed: int) -> dict:
        from fedmllm.pretrain import loop_config
        from fedmllm.training.loop import train_local

        rt = self.clients
        rt.method.set_state(rt.model, self.server.initial_state())
        _, lr = method_options(self.cfg, self.cfg.federated.method)
        train_local(rt.model, samples, rt.collate, loop_config(self.cfg.train, lr=lr, steps=steps), seed=seed)
        return rt.method.get_state(rt.model)

    # --- strategies ------------------------------------------------------------------------
    def run_strategy(self, grid: Grid, name: str) -> dict:
        fed = self.cfg.federated
        strategy = build_instrumented(self.cfg, name, self.run.log,
                                      self.server.method.lora_factors(self.server.initial_state()),
                                      self.node_partitions)
        t0 = time.perf_counter()
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(self.server.initial_state()),
                                num_rounds=fed.rounds, train_config=ConfigRecord({P.SYSTEM: name}),
                                evaluate_fn=lambda r, arrays: self._evaluate_round(name, r, arrays))
        final = result.arrays.to_torch_state_dict()
        comm = {"bytes_up": sum(h["bytes_up"] for h in strategy.history),
                "bytes_down": sum(h["bytes_down"] for h in strategy.history)}
        return self.finish(name, "strategy", final, {"seconds": time.perf_counter() - t0, "rounds": fed.rounds, **comm})

    def _evaluate_round(self, system: str, server_round: int, arrays: ArrayRecord) -> Optional[MetricRecord]:
        fed = self.cfg.federated
        if server_round == 0 or (server_round % fed.eval_every and server_round != fed.rounds):
            return None
        upstream = "small" if server_round % fed.upstream_every == 0 or server_round == fed.rounds else None
        state = arrays.to_torch_state_dict()
        scores = self.server.evaluate(state, upstream=upstream)
        zero_down = self.zero["full"]["downstream"]
        event = {"event": "global_eval", "system": system, "round": server_round, **scores,
                 "E": {t: scores["downstream"][t] - zero_down[t] for t in scores["downstream"]}}
        if upstream:
            zero_up = self.zero["small"]["upstream"]
            event["F"] = sum(scores["upstream"][u] - zero_up[u] for u in zero_up) / len(zero_up)
        if self.pooled_state is not None:
            event["divergence_from_pooled"] = weight_divergence(state, self.pooled_state)
        self.run.log(event)
        if server_round % fed.save_every == 0 and server_round != fed.rounds:
            self.save_adapter(system, state, server_round)
        mean_down = sum(scores["downstream"].values()) / len(scores["downstream"])
        print(f"[{system}] round {server_round}/{fed.rounds}: downstream mean {mean_down:.1f}"
              + (f", F {event['F']:+.1f}" if "F" in event else ""), flush=True)
        return MetricRecord({"downstream-mean": mean_down})


def build_instrumented(cfg: Config, name: str, log: Callable[[dict], None],
                       lora_factors: Optional[list] = None,
                       partitions: Optional[dict[int, int]] = None) -> Instrumented:
    """Strategy ``name`` configured from ``cfg`` (sampling, options) inside `Instrumented`
    (round lr, run config, failure tolerance, logging to ``log``, drift over ``lora_factors``,
    ``partitions``: the node -> partition cache shared by the experiment's strategies)."""
    from server.strategies import build_strategy

    fed = cfg.federated
    _, lr = method_options(cfg, fed.method)
    per_round = fed.clients_per_round or fed.num_clients
    inner = build_strategy(name, dict(cfg.strategy_options.get(name, {})),
                           fraction_train=per_round / fed.num_clients, min_train_nodes=per_round,
                           min_available_nodes=fed.num_clients)
    return Instrumented(inner, log, system=name, base_lr=lr, lr_decay=fed.lr_decay,
                        local_steps=fed.local_steps, run_config=dumps(cfg), seed=cfg.seed,
                        max_failure_fraction=fed.max_failure_fraction, lora_factors=lora_factors,
                        partitions=partitions)


def run_experiment(grid: Grid, cfg: Config, run_dir: Path) -> dict:
    """Everything the ServerApp does: baselines and strategies, results.json, report."""
    from fedmllm.federated.results import write_results

    run = RunDir(Path(run_dir), cfg)
    exp = Experiment(cfg, run)
    systems = []
    fed = cfg.federated
    order = (["pooled"] if "pooled" in fed.baselines else []) + list(fed.strategies) + \
            (["local"] if "local" in fed.baselines else [])
    for system in order:
        done = exp.done(system)
        if done is not None:
            systems.append(done)
            if system == "pooled":
                exp.pooled_state = None  # divergence needs the live state; skipped on resume
            continue
        if system == "pooled":
            systems.append(exp.run_pooled())
        elif system == "local":
            systems.append(exp.run_local())
        else:
            systems.append(exp.run_strategy(grid, system))
    return write_results(run, exp.zero, systems)
