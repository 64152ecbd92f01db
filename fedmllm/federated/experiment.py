"""One federated experiment, Flower-free: setup, every system (strategies and baselines), results.

Every system trains on the same partition from the same initial state and is scored on the same
test sets; each is a step of the experiment's progress journal (`checkpoint.Progress`), so a
resumed run skips finished systems, continues a strategy from its last complete round and a
baseline from its last loop checkpoint, and truncates ``metrics.jsonl`` to the furthest durable
point. Strategies run through a `rounds.Transport` (Flower's Grid from ``server/``, or in-process);
baselines run in this process. E and F come from `fedmllm.metrics.efo` (`results.system_result`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from fedmllm.config import Config, dumps, method_options
from fedmllm.errors import UserError
from fedmllm.experiment import ExperimentData, derive_seed
from fedmllm.faults import crash_point
from fedmllm.federated import protocol as P
from fedmllm.federated.aggregate import contiguous
from fedmllm.federated.algorithms import build_algorithm
from fedmllm.federated.algorithms.base import Arrays
from fedmllm.federated.checkpoint import CheckpointStore, Progress
from fedmllm.federated.client import ClientRuntime, config_key
from fedmllm.federated.drift import weight_divergence
from fedmllm.federated.lora import is_residual
from fedmllm.federated.results import system_result
from fedmllm.federated.rounds import LoopSettings, Observer, RoundLoop, Transport
from fedmllm.federated.runtime import ServerRuntime, build_partition
from fedmllm.registry import Registry
from fedmllm.runs import RunDir, write_json

# name -> run(experiment) -> result dict; strategies are every registered algorithm.
BASELINES: Registry[Callable[["FederatedExperiment"], dict]] = Registry("baseline")


def resolve_strategy_options(cfg: Config) -> Config:
    """``cfg`` with every strategy's options at their effective values (defaults included), so the
    run's ``config.toml`` records what ran (e.g. FedAdam's v_init = tau^2, SCAFFOLD's N)."""
    fed = cfg.federated
    resolved = dict(cfg.strategy_options)
    for name in fed.strategies:
        algo = build_algorithm(name, cfg.strategy_options.get(name, {}), num_clients=fed.num_clients)
        resolved[name] = algo.resolved_options()
    cfg.strategy_options = resolved
    return cfg


def system_order(cfg: Config) -> list[str]:
    """pooled first (its state is the divergence reference), then strategies, then local."""
    fed = cfg.federated
    return (["pooled"] if "pooled" in fed.baselines else []) + list(fed.strategies) + \
        (["local"] if "local" in fed.baselines else [])


def loop_settings(cfg: Config, system: str, run_path: Path) -> LoopSettings:
    """The round loop settings of strategy ``system``: rounds, sampling, round lr, failure budget,
    and the config values every train message carries (experiment id, run dir, client store)."""
    fed = cfg.federated
    _, lr = method_options(cfg, fed.method)
    return LoopSettings(
        system=system, rounds=fed.rounds, num_clients=fed.num_clients,
        clients_per_round=fed.clients_per_round, seed=cfg.seed, local_steps=fed.local_steps,
        base_lr=lr, lr_decay=fed.lr_decay, max_failure_fraction=fed.max_failure_fraction,
        common_config={P.EXPERIMENT_ID: config_key(dumps(cfg)), P.EXPERIMENT_DIR: str(run_path.resolve()),
                       P.CLIENT_STORE: str((run_path / "clients").resolve())})


class FederatedExperiment:
    """Shared state of one federated experiment in the server process."""

    def __init__(self, cfg: Config, run: RunDir, transport: Optional[Transport] = None,
                 observer: Optional[Callable[[str], Optional[Observer]]] = None):
        """``observer(system)`` gives the measurement callback of a system's rounds (None: off)."""
        from fedmllm.models import build_model

        self.cfg, self.run, self.transport, self.observer = cfg, run, transport, observer
        self.progress = Progress(run.path)
        self.checkpoints = CheckpointStore(run.path / "checkpoints")
        self._truncate_to_durable_point()
        self.bundle = build_model(cfg.model.name, pretrained=cfg.model.pretrained, seed=cfg.seed)
        self.data = ExperimentData.load(cfg)
        self.server = ServerRuntime(cfg, self.data, self.bundle)
        self.partition = self._partition()
        self.clients = ClientRuntime(cfg, self.partition, self.bundle, self.data.train)  # baselines
        self.zero = self._setup()
        self.pooled_state: Optional[Arrays] = self._load_pooled()

    # --- setup and resume ------------------------------------------------------------------
    def _truncate_to_durable_point(self) -> None:
        offset = 0
        for step in ["setup", *system_order(self.cfg)]:
            done = self.progress.get(step)
            if done is not None:
                offset = done["metrics_offset"]
                continue
            ckpt = self.checkpoints.latest(step)
            if ckpt is not None:
                offset = ckpt.metrics_offset
            break
        self.progress.truncate_metrics(offset)

    def _partition(self):
        from fedmllm.data.partition import Partition

        path = self.run.path / "partition.json"
        if path.is_file():
            return Partition.from_json(path.read_text())
        partition = build_partition(self.cfg, self.data)
        write_json(path, partition.to_json())
        return partition

    def _setup(self) -> dict:
        """Partition and zero-shot events, once (zero-shot scores cached in zeroshot.json)."""
        path = self.run.path / "zeroshot.json"
        zero = json.loads(path.read_text()) if path.is_file() else None
        print(self.partition.counts_table(), flush=True)
        if self.progress.get("setup") is None:
            if zero is None:
                zero = self.server.zero_shot()
                write_json(path, zero)
            self.run.log({"event": "partition", "partitioner": self.cfg.federated.partitioner,
                          "counts": self.partition.counts()})
            self.run.log({"event": "zeroshot", **zero["full"]})
            self.progress.mark("setup")
        print("zero-shot: " + ", ".join(f"{t} {s:.1f}" for t, s in zero["full"]["downstream"].items()), flush=True)
        return zero

    def _load_pooled(self) -> Optional[Arrays]:
        path = self.run.path / "checkpoints" / "pooled" / "final.safetensors"
        if not path.is_file():
            return None
        from safetensors.numpy import load_file

        loaded = load_file(str(path))
        return {k: loaded[k] for k in self.server.initial_state()}  # the state's own key order

    # --- running -----------------------------------------------------------------------------
    def run_all(self) -> dict:
        """Every system in order (finished ones read back), then results.json and the report."""
        from fedmllm.federated.results import write_results

        systems = []
        for system in system_order(self.cfg):
            if self.progress.get(system) is not None:
                systems.append(json.loads((self.run.path / "systems" / f"{system}.json").read_text()))
                continue
            if system in self.cfg.federated.baselines:
                systems.append(BASELINES.get(system)(self))
            else:
                systems.append(self.run_strategy(system))
            crash_point(system, "done")
        return write_results(self.run, self.zero, systems)

    def finish(self, system: str, kind: str, state: Arrays, extra: dict) -> dict:
        """Final full evaluation of ``state``, adapter saved, result file written, step marked."""
        scores = self.server.evaluate(state, upstream="full")
        result = system_result(system, kind, self.cfg.model.name, scores, self.zero["full"])
        result.update(extra)
        self.save_adapter(system, state, self.cfg.federated.rounds)
        return self.done(system, result)

    def done(self, system: str, result: dict) -> dict:
        write_json(self.run.path / "systems" / f"{system}.json", result)
        self.run.log({"event": "system_done", "system": system, "E": result["E"], "F": result["F"], "O": result["O"]})
        self.progress.mark(system)
        print(f"[{system}] final: mean E {result['E']:+.1f}  F {result['F']:+.1f}  O {result['O']:+.1f}", flush=True)
        return result

    def save_adapter(self, system: str, state: Arrays, server_round: int) -> None:
        tuned = self.server.load(state)
        out = self.run.path / "adapters" / system / f"round-{server_round:03d}"
        tuned.method.save(tuned.model, out)
        residuals = {k: contiguous(v) for k, v in state.items() if is_residual(k)}
        if residuals:  # updates merged into the base weights (FLoRA, FedEx-LoRA): W = W0 + R
            from safetensors.numpy import save_file

            save_file(residuals, str(out / "lora_residual.safetensors"))
        write_json(out / "round.json", {"system": system, "round": server_round})

    def run_strategy(self, name: str) -> dict:
        """A strategy's rounds (resumed from its last checkpoint), then its final evaluation."""
        if self.transport is None:
            raise UserError(f"strategy {name!r} needs a transport (run it through `fedmllm federated`)")
        fed = self.cfg.federated
        algo = build_algorithm(name, self.cfg.strategy_options.get(name, {}), num_clients=fed.num_clients)
        loop = RoundLoop(algo, self.transport, loop_settings(self.cfg, name, self.run.path), log=self.run.log,
                         metrics_size=self.progress.metrics_size, checkpoints=self.checkpoints,
                         observer=self.observer(name) if self.observer else None,
                         evaluate=lambda r, state: self.evaluate_round(name, r, state))
        final = loop.run(self.server.initial_state())
        t = loop.totals
        return self.finish(name, "strategy", final, {"seconds": t["seconds"], "rounds": fed.rounds,
                                                     "bytes_up": t["bytes_up"], "bytes_down": t["bytes_down"]})

    def evaluate_round(self, system: str, server_round: int, state: Arrays) -> None:
        """The per-round evaluation schedule: downstream every ``eval_every`` rounds, upstream
        (the small subsample) every ``upstream_every``, adapters every ``save_every``."""
        fed = self.cfg.federated
        if server_round % fed.eval_every and server_round != fed.rounds:
            return
        upstream = "small" if server_round % fed.upstream_every == 0 or server_round == fed.rounds else None
        scores = self.server.evaluate(state, upstream=upstream)
        zero_down = self.zero["full"]["downstream"]
        event: dict[str, Any] = {"event": "global_eval", "system": system, "round": server_round, **scores,
                                 "E": {t: scores["downstream"][t] - zero_down[t] for t in scores["downstream"]}}
        if upstream:
            from fedmllm.metrics.efo import forgetting

            event["F"] = forgetting(scores["upstream"], self.zero["small"]["upstream"])
        if self.pooled_state is not None:
            event["divergence_from_pooled"] = weight_divergence(state, self.pooled_state)
        self.run.log(event)
        if server_round % fed.save_every == 0 and server_round != fed.rounds:
            self.save_adapter(system, state, server_round)
        mean_down = sum(scores["downstream"].values()) / len(scores["downstream"])
        print(f"[{system}] round {server_round}/{fed.rounds}: downstream mean {mean_down:.1f}"
              + (f", F {event['F']:+.1f}" if "F" in event else ""), flush=True)

    # --- baselines' training -------------------------------------------------------------------
    def train_from_initial(self, samples: list, steps: int, seed: int, name: str) -> Arrays:
        """Centralized training of the method from the initial state, resumable every
        ``federated.baseline_checkpoint_every`` steps (``checkpoints/<name>.pt``)."""
        from fedmllm.federated.algorithms.base import as_arrays
        from fedmllm.training.loop import LoopCheckpoint, loop_config, train_local

        rt, fed = self.clients, self.cfg.federated
        rt.method.set_state(rt.model, _tensors(self.server.initial_state()))
        _, lr = method_options(self.cfg, fed.method)
        every = fed.baseline_checkpoint_every
        ckpt = LoopCheckpoint(self.run.path / "checkpoints" / f"{name}.pt", every) if every else None
        if ckpt is not None:
            ckpt.path.parent.mkdir(parents=True, exist_ok=True)
        train_local(rt.model, samples, rt.collate, loop_config(self.cfg.train, lr=lr, steps=steps),
                    seed=seed, checkpoint=ckpt)
        state = as_arrays(rt.method.get_state(rt.model))
        if ckpt is not None:
            ckpt.path.unlink(missing_ok=True)  # the caller records the result durably next
        return state


def _tensors(state: Arrays) -> dict:
    from fedmllm.federated.algorithms.base import as_tensors

    return as_tensors(state)


def run_pooled(exp: FederatedExperiment) -> dict:
    """Centralized training on the union of the clients' data, same total steps."""
    fed = exp.cfg.federated
    per_round = fed.clients_per_round or fed.num_clients
    steps = fed.rounds * per_round * fed.local_steps
    samples = [s for pid in range(len(exp.partition.clients)) for s in exp.clients.client_samples(pid)]
    t0 = time.perf_counter()
    state = exp.pooled_state  # trained by a killed attempt that did not finish evaluating
    if state is None:
        from safetensors.numpy import save_file

        state = exp.train_from_initial(samples, steps, derive_seed(exp.cfg.seed, "pooled"), "pooled")
        path = exp.run.path / "checkpoints" / "pooled" / "final.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: contiguous(v) for k, v in state.items()}, str(path))
        exp.pooled_state = state
    return exp.finish("pooled", "baseline", state, {"steps": steps, "seconds": time.perf_counter() - t0})


def run_local(exp: FederatedExperiment) -> dict:
    """Each client alone for all rounds' steps; scores averaged over clients (each client's
    scores are kept under ``checkpoints/local/``, so a resumed run skips finished clients)."""
    fed = exp.cfg.federated
    folder = exp.run.path / "checkpoints" / "local"
    per_client = []
    t0 = time.perf_counter()
    for pid in range(len(exp.partition.clients)):
        path = folder / f"client-{pid}.json"
        if path.is_file():
            per_client.append(json.loads(path.read_text()))
            continue
        samples = exp.clients.client_samples(pid)
        if not samples:
            continue
        state = exp.train_from_initial(samples, fed.rounds * fed.local_steps,
                                       derive_seed(exp.cfg.seed, "local", pid), f"local-{pid}")
        scores = exp.server.evaluate(state, upstream="full")
        write_json(path, scores)
        per_client.append(scores)
        print(f"[local] client {pid} done", flush=True)
    avg = {part: {t: sum(c[part][t] for c in per_client) / len(per_client) for t in per_client[0][part]}
           for part in ("downstream", "upstream")}
    result = system_result("local", "baseline", exp.cfg.model.name, avg, exp.zero["full"])
    result.update({"clients": len(per_client), "seconds": time.perf_counter() - t0})
    return exp.done("local", result)


BASELINES.register("pooled", run_pooled)
BASELINES.register("local", run_local)
