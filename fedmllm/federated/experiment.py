"""One federated experiment, Flower-free: setup, every system (strategies and baselines), results.

Every system trains on the same partition from the same initial state and is scored on the same
test sets; each is a step of the experiment's progress journal (`checkpoint.Progress`), so a
resumed run skips finished systems, continues a strategy from its last complete round and a
baseline from its last loop checkpoint, and truncates ``metrics.jsonl`` to the furthest durable
point. Strategies run through a `rounds.Transport` (Flower's Grid from ``server/``, or in-process);
baselines in this process or as jobs on the clients (`baselines.train_on_clients`). E and F come
from `fedmllm.metrics.efo` (`results.system_result`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from fedmllm.config import Config, dumps, method_options
from fedmllm.errors import UserError
from fedmllm.experiment import ExperimentData
from fedmllm.faults import crash_point
from fedmllm.federated import protocol as P
from fedmllm.federated.aggregate import contiguous
from fedmllm.federated.algorithms import build_algorithm
from fedmllm.federated.baselines import BASELINES
from fedmllm.federated.algorithms.base import Arrays
from fedmllm.federated.checkpoint import CheckpointStore, Progress
from fedmllm.federated.client import ClientRuntime, config_key
from fedmllm.federated.drift import weight_divergence
from fedmllm.federated.lora import RESIDUAL_FILE, is_residual
from fedmllm.federated.results import system_result
from fedmllm.federated.rounds import LoopSettings, Observer, RoundLoop, Transport
from fedmllm.federated.runtime import ServerRuntime, build_partition
from fedmllm.federated.systems import client_extras, strategy_systems, system_spec
from fedmllm.runs import RunDir, write_json



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
    """pooled first (its state is the divergence reference), then the strategy systems
    (`systems.strategy_systems`: strategies x privacy x attacks), then local."""
    fed = cfg.federated
    return (["pooled"] if "pooled" in fed.baselines else []) + [s.name for s in strategy_systems(cfg)] + \
        (["local"] if "local" in fed.baselines else [])


def loop_settings(cfg: Config, system: str, run_path: Path, partition=None) -> LoopSettings:
    """The round loop settings of strategy system ``system``: rounds, sampling, round lr, failure
    budget, the reply checks (each partition's size from ``partition``, the update-norm bound),
    the config values every train message carries (experiment id, run dir, client store) and the
    ones the system adds per client (attackers, stragglers)."""
    from fedmllm.federated.heterogeneity import client_ranks, client_steps
    from fedmllm.federated.tuned import rank_scaling

    fed = cfg.federated
    spec = system_spec(cfg, system)
    _, lr = method_options(cfg, fed.method)
    return LoopSettings(
        lora_scaling=rank_scaling(cfg)[1],
        system=system, rounds=fed.rounds, num_clients=fed.num_clients,
        clients_per_round=fed.clients_per_round, seed=cfg.seed, local_steps=fed.local_steps,
        base_lr=lr, lr_decay=fed.lr_decay, max_failure_fraction=fed.max_failure_fraction,
        client_ranks=client_ranks(cfg, spec.strategy), client_steps=client_steps(cfg),
        client_extras=client_extras(cfg, spec), max_update_norm=fed.max_update_norm,
        client_sizes=None if partition is None else partition.sizes(),
        common_config=common_config(cfg, run_path))


def common_config(cfg: Config, run_path: Path) -> dict[str, Any]:
    """The config values every message to a client carries: experiment id, run dir, client store."""
    return {P.EXPERIMENT_ID: config_key(dumps(cfg)), P.EXPERIMENT_DIR: str(run_path.resolve()),
            P.CLIENT_STORE: str((run_path / "clients").resolve())}


class FederatedExperiment:
    """Shared state of one federated experiment in the server process."""

    def __init__(self, cfg: Config, run: RunDir, transport: Optional[Transport] = None,
                 observer: Optional[Callable[[str], Optional[Observer]]] = None,
                 baseline_transport=None):
        """``observer(system)`` gives the measurement callback of a system's rounds (None: off);
        ``baseline_transport`` (one with ``exchange_jobs``, e.g. `server.strategy.GridTransport`):
        the baselines train on the clients through it (`baselines.train_on_clients`), else here."""
        from fedmllm.models import build_model

        self.cfg, self.run, self.transport, self.observer = cfg, run, transport, observer
        self.baseline_transport = baseline_transport
        self.progress = Progress(run.path)
        self.checkpoints = CheckpointStore(run.path / "checkpoints")
        self._truncate_to_durable_point()
        self.bundle = build_model(cfg.model.name, pretrained=cfg.model.pretrained, seed=cfg.seed)
        self.data = ExperimentData.load(cfg)
        self.server = ServerRuntime(cfg, self.data, self.bundle)
        self.partition = self._partition()
        self.test_partition = self._test_partition()
        self.clients = ClientRuntime(cfg, self.partition, self.bundle, self.data.train,  # baselines
                                     test_partition=self.test_partition, test_pools=self.data.test)
        self.personal: dict[str, dict] = {}  # system -> its last personalized summary
        self.zero = self._setup()
        self.pooled_state: Optional[Arrays] = self._load_pooled()

    # --- setup and resume ------------------------------------------------------------------
    def order(self) -> list[str]:
        """The experiment's systems in run order (each a step of the progress journal)."""
        return system_order(self.cfg)

    def _truncate_to_durable_point(self) -> None:
        offset = 0
        for step in ["setup", *self.order()]:
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

    def _test_partition(self):
        """Each client's local test split (``partition_test.json``), for personalized scores."""
        from fedmllm.data.partition import Partition
        from fedmllm.federated.personal import split_for_clients

        if not self.cfg.federated.eval_personalized:
            return None
        path = self.run.path / "partition_test.json"
        if path.is_file():
            return Partition.from_json(path.read_text())
        split = split_for_clients(self.partition, self.data.test)
        write_json(path, split.to_json())
        return split

    def _setup(self) -> dict:
        """Partition and zero-shot events, once (zero-shot scores cached in zeroshot.json); the
        tasks' chance / majority floors in floors.json (also for a resumed run that lacks them)."""
        from fedmllm.eval.floors import ensure_floors

        ensure_floors(self.run.path, self.data, self.cfg.seed)
        path = self.run.path / "zeroshot.json"
        zero = json.loads(path.read_text()) if path.is_file() else None
        from fedmllm.federated.heterogeneity import client_columns

        print(self.partition.counts_table(client_columns(self.cfg)), flush=True)
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

    def final_scores(self, system: str, state: Arrays) -> dict:
        """The full evaluation of ``state`` (downstream, full upstream sets), reusing what the last
        evaluation of this very state already scored on the same sets."""
        last = getattr(self, "_last_eval", None)
        small_is_full = all(len(self.server.upstream_sets["small"][t]) == len(v)
                            for t, v in self.server.upstream_sets["full"].items())
        if last is not None and last[0] == system and last[1] is state:
            # its downstream scores (the same sets) stand, its upstream ones too when they were
            # on the full sets (or the per-round subsample is the whole set)
            if last[3] == "full" or small_is_full:
                return last[2]
            scores = {**last[2], "upstream": self.server.evaluate_upstream(state, "full")}
        else:
            scores = self.server.evaluate(state, upstream="full")
        self._last_eval = (system, state, scores, "full")
        return scores

    def finish(self, system: str, kind: str, state: Arrays, extra: dict) -> dict:
        """Final full evaluation of ``state``, adapter saved, result file written, step marked."""
        scores = self.final_scores(system, state)
        result = system_result(system, kind, self.cfg.model.name, scores, self.zero["full"])
        result.update(extra)
        if kind == "strategy":
            spec = system_spec(self.cfg, system)
            result.update({"strategy": spec.strategy, "attack": spec.attack, "noise_multiplier": spec.noise_multiplier})
            if spec.attack == "backdoor":
                result["backdoor"] = self.backdoor_success(system, state)
        if system in self.personal:
            result["personalized"] = self.personal[system]
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

            save_file(residuals, str(out / RESIDUAL_FILE))
        write_json(out / "round.json", {"system": system, "round": server_round})

    def run_strategy(self, name: str) -> dict:
        """A strategy's rounds (resumed from its last checkpoint), then its final evaluation."""
        if self.transport is None:
            raise UserError(f"strategy {name!r} needs a transport (run it through `fedmllm federated`)")
        fed = self.cfg.federated
        spec = system_spec(self.cfg, name)
        algo = self.algorithm(spec)
        observer = self.observer(name) if self.observer else None
        settings = loop_settings(self.cfg, name, self.run.path, self.partition)
        loop = RoundLoop(algo, self.transport, settings, log=self.run.log,
                         metrics_size=self.progress.metrics_size, checkpoints=self.checkpoints,
                         observer=observer, after_aggregate=getattr(observer, "aggregated", None),
                         evaluate=lambda r, state: self.evaluate_round(name, r, state, algo, settings))
        final = loop.run(self.server.initial_state())
        t = loop.totals
        return self.finish(name, "strategy", final, {"seconds": t["seconds"], "rounds": fed.rounds,
                                                     "bytes_up": t["bytes_up"], "bytes_down": t["bytes_down"]})

    def algorithm(self, spec):
        """The algorithm of a strategy system: the strategy with its options, DP-wrapped when the
        system is private, with the server's reference update when the rule needs one (FLTrust)."""
        fed = self.cfg.federated
        algo = build_algorithm(spec.strategy, self.cfg.strategy_options.get(spec.strategy, {}),
                               num_clients=fed.num_clients)
        if getattr(algo, "needs_reference", False):
            _, lr = method_options(self.cfg, fed.method)
            algo.reference = lambda server_round, state, a=algo: self.reference_update(
                a, server_round, state, lr * fed.lr_decay ** (server_round - 1))
        if spec.private:
            from fedmllm.federated.privacy import private

            algo = private(algo, self.cfg, spec.noise_multiplier)
        return algo

    def reference_update(self, algo, server_round: int, state: Arrays, lr: float) -> Arrays:
        """The server's own trained shared state of ``server_round`` on its root set (FLTrust):
        a clean client that trains like the others (same steps and lr), on samples no client holds."""
        from fedmllm.federated.algorithms import STATE, Payload

        p = algo.configure(server_round, 0, state)
        config = {P.SERVER_ROUND: server_round, P.LR: lr, P.LOCAL_STEPS: self.cfg.federated.local_steps,
                  P.ALGORITHM: algo.name, **p.config}
        update = self.clients.train_samples(self.root_samples(), Payload(p.arrays, config), {}, ("root", server_round))
        return update.arrays[STATE]

    def root_samples(self) -> list:
        """The server's small clean set (FLTrust's root dataset): per downstream task, the
        ``strategy_options.fltrust.root_n`` samples after the clients' pool (indices train_n...)."""
        if getattr(self, "_root", None) is None:
            from fedmllm.data.suite import load_task

            n = int(self.cfg.strategy_options.get("fltrust", {}).get("root_n", 8))
            base = self.cfg.data.train_n
            self._root = [s for task in self.cfg.data.downstream
                          for s in load_task(task, "train", base + n, self.cfg.seed, self.cfg.data,
                                             indices=range(base, base + n))]
        return self._root

    def evaluate_round(self, system: str, server_round: int, state: Arrays, algo=None, settings=None) -> None:
        """The per-round evaluation schedule: downstream every ``eval_every`` rounds (and every
        client's own model on its local split, ``eval_personalized``), upstream (the small
        subsample) every ``upstream_every``, adapters every ``save_every``."""
        fed = self.cfg.federated
        if server_round % fed.eval_every and server_round != fed.rounds:
            return
        upstream = "small" if server_round % fed.upstream_every == 0 or server_round == fed.rounds else None
        scores = self.server.evaluate(state, upstream=upstream)
        self._last_eval = (system, state, scores, upstream) if upstream else None
        zero_down = self.zero["full"]["downstream"]
        event: dict[str, Any] = {"event": "global_eval", "system": system, "round": server_round, **scores,
                                 "E": {t: scores["downstream"][t] - zero_down[t] for t in scores["downstream"]}}
        if upstream:
            from fedmllm.metrics.efo import forgetting

            event["F"] = forgetting(scores["upstream"], self.zero["small"]["upstream"])
        if self.pooled_state is not None:
            event.update(pooled_divergence(state, self.pooled_state, self.server.models.scaling))
        if system in {s.name for s in strategy_systems(self.cfg)} and system_spec(self.cfg, system).attack == "backdoor":
            event["backdoor"] = self.backdoor_success(system, state)
        self.run.log(event)
        if fed.eval_personalized and algo is not None and hasattr(self.transport, "evaluate"):
            self.personalized_round(system, server_round, state, algo, settings)
        if server_round % fed.save_every == 0 and server_round != fed.rounds:
            self.save_adapter(system, state, server_round)
        mean_down = sum(scores["downstream"].values()) / len(scores["downstream"])
        print(f"[{system}] round {server_round}/{fed.rounds}: downstream mean {mean_down:.1f}"
              + (f", F {event['F']:+.1f}" if "F" in event else ""), flush=True)

    def backdoor_success(self, system: str, state: Arrays) -> dict:
        """The backdoor's attack success rate on the global ``state``: triggered downstream test
        images (up to ``federated.upstream_n`` per task) answered with the target (the last
        round's value when the final evaluation scores that very state again)."""
        last = getattr(self, "_last_asr", None)
        if last is not None and last[0] == system and last[1] is state:
            return last[2]
        from fedmllm.eval.generate import generate
        from fedmllm.federated.attacks import build_attack
        from fedmllm.federated.attacks.backdoor import attack_success_rate

        options = build_attack("backdoor", self.cfg.attack.options.get("backdoor", {})).options
        model = self.server.load(state).model
        n = self.cfg.federated.upstream_n
        asr = attack_success_rate(
            lambda samples: generate(model, self.server.processor, samples, batch_size=self.cfg.eval.batch_size),
            {t: s[:n] for t, s in self.data.test.items()}, options)
        self._last_asr = (system, state, asr)
        return asr

    def personalized_round(self, system: str, server_round: int, state: Arrays, algo, settings) -> None:
        """Every client scores its own model (what its next round would start from) on its local
        test split, through evaluate messages; logs a ``personalized_eval`` event. A client whose
        own model is the global ``state`` (its payload carries every key of it, unchanged) is
        scored from the server's answers of this round's evaluation of ``state`` instead."""
        from fedmllm.federated.personal import COUNT, SCORE, client_score, summarize
        from fedmllm.federated.rounds import round_payloads

        config = {**settings.common_config, P.SERVER_ROUND: server_round, P.ALGORITHM: algo.name, P.SYSTEM: system}
        # what each client's next round would start from: the configuration of round + 1
        payloads = round_payloads(algo, server_round + 1, state, range(self.cfg.federated.num_clients), config,
                                  settings.client_config)
        per_client = {}
        for pid, payload in payloads.items():
            split = self.server.split_scores(state, self.clients.client_tests(pid)) \
                if carries_state(payload, state) else None
            if split is not None:
                per_client[pid] = client_score(*split)
        rest = {pid: p for pid, p in payloads.items() if pid not in per_client}
        raw, failures = self.transport.evaluate(server_round, rest) if rest else ({}, {})
        for pid, reply in raw.items():
            scores = {k[len(SCORE):]: float(v) for k, v in reply.metrics.items() if k.startswith(SCORE)}
            counts = {k[len(COUNT):]: int(v) for k, v in reply.metrics.items() if k.startswith(COUNT)}
            per_client[pid] = client_score(scores, counts)
        summary = summarize(per_client)
        self.personal[system] = summary
        self.run.log({"event": "personalized_eval", "system": system, "round": server_round,
                      "failed": sorted(failures), **summary})

    def personal_baseline(self, models_by_client, state: Optional[Arrays] = None) -> dict:
        """Personalized summary of a baseline: ``models_by_client(pid)`` -> the model it scores;
        with ``state`` (every client's model), from the answers of its last server evaluation."""
        from fedmllm.federated.personal import client_score, summarize

        return summarize({pid: client_score(*self.own_split_scores(pid, state, models_by_client))
                          for pid in range(len(self.partition.clients))})

    def own_split_scores(self, pid: int, state: Optional[Arrays], model_fn) -> tuple[dict, dict]:
        """(task -> score, task -> samples) of client ``pid``'s test split: from the server's
        answers for ``state`` when it just evaluated it, else by scoring ``model_fn(pid)``."""
        from fedmllm.federated.personal import score_on_splits

        tests = self.clients.client_tests(pid)
        split = None if state is None else self.server.split_scores(state, tests)
        return split if split is not None else score_on_splits(model_fn(pid), self.server.processor, tests,
                                                               self.cfg.eval.batch_size)

    # --- baselines' training -------------------------------------------------------------------


def carries_state(payload, state: Arrays) -> bool:
    """True when ``payload`` hands its client every key of ``state`` with the same values: its
    own model is then ``state`` (`Algorithm.prepare` keeps every received key over local ones)."""
    from fedmllm.federated.algorithms.base import GLOBAL

    received = payload.arrays.get(GLOBAL, {})
    return received.keys() == state.keys() and all(
        received[k] is state[k] or (np.shape(received[k]) == np.shape(state[k]) and np.array_equal(received[k], state[k]))
        for k in state)


def pooled_divergence(state: Arrays, pooled: Arrays, scaling: Optional[float]) -> dict:
    """Weight divergence from the pooled model (Zhao et al. 2018): over the raw trainable state
    where the two have the same keys and shapes, and for LoRA also over the effective updates
    dW = R + s B A (comparable across ranks, residuals and re-initialized factors)."""
    from fedmllm.federated import lora

    out: dict[str, Any] = {}
    if all(k in state and np.shape(state[k]) == np.shape(v) for k, v in pooled.items()) and \
            not any(lora.is_residual(k) for k in state):
        out["divergence_from_pooled"] = weight_divergence(state, pooled)
    prefixes = lora.layers(list(pooled))
    if scaling is not None and prefixes:
        fl = {p: lora.effective_update(state, p, scaling) for p in prefixes}
        c = {p: lora.effective_update(pooled, p, scaling) for p in prefixes}
        out["divergence_from_pooled_dW"] = weight_divergence(fl, c)
    return out
