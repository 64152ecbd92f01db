"""What a federated client computes, without Flower: its own data, one round of any algorithm.

`ClientRuntime` holds the base model with the tuning method applied (built once per process, e.g.
once per Ray actor) and the samples of the partitions it has served (each built on first use from
the experiment's saved partition: only that client's slice is loaded). `ClientRuntime.run_round`
runs one round of any registered algorithm: the algorithm's client half prepares the initial
state and hooks from the payload and the client's local state, the one training loop trains, the
client half turns the result into the reply and the new local state. `ClientStore` keeps local
state across rounds (and across a killed and resumed run) on disk.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from fedmllm.config import Config, method_options
from fedmllm.experiment import derive_seed
from fedmllm.federated import protocol as P
from fedmllm.federated.aggregate import contiguous
from fedmllm.federated.algorithms import ALGORITHMS, LocalResult, Payload
from fedmllm.federated.algorithms.base import GLOBAL, STATE, Groups, as_arrays, as_tensors
from fedmllm.federated.lora import is_residual
from fedmllm.federated.node_policy import InstructionRefusedError

_RUNTIMES: dict[str, "ClientRuntime"] = {}


def config_key(cfg_toml: str) -> str:
    """The experiment id: a short hash of the resolved config's TOML text."""
    return hashlib.sha256(cfg_toml.encode()).hexdigest()[:16]


def load_client_samples(cfg: Config, partition, partition_id: int) -> list:
    """Only client ``partition_id``'s training samples, task by task in index order (the order
    of `Partition.samples`): synthetic twins generate just those indices."""
    from fedmllm.data.suite import load_task

    if not 0 <= partition_id < len(partition.clients):
        raise ValueError(f"partition id {partition_id} out of range (0..{len(partition.clients) - 1})")
    own = partition.clients[partition_id]
    out = []
    for task in partition.tasks:
        if own[task]:
            out += load_task(task, "train", cfg.data.train_n, cfg.seed, cfg.data, indices=own[task])
    return out


@dataclass
class ClientUpdate:
    """One client's round: reply arrays and metrics, and the local state to keep."""

    arrays: Groups
    num_examples: int
    train_loss: float
    steps: int
    seconds: float
    local_state: Groups


class ClientRuntime:
    """Base model + method (one per LoRA rank), built once; each partition's samples, on first use."""

    def __init__(self, cfg: Config, partition, bundle=None, pools: Optional[dict] = None,
                 test_partition=None, test_pools: Optional[dict] = None):
        """``partition``: the experiment's `Partition`. ``bundle`` (its model is copied) and
        ``pools`` (the downstream training pools) let an in-process caller share what it has;
        ``test_partition`` (and ``test_pools``) give each client its local test split."""
        import torch

        from fedmllm.data.collate import encode_train
        from fedmllm.federated.tuned import TunedModels
        from fedmllm.models import build_model

        self.cfg, self.partition, self._pools = cfg, partition, pools
        self.test_partition, self._test_pools = test_partition, test_pools
        self._tests: dict[int, dict] = {}
        own = bundle is None
        if own:  # a fresh process (Ray actor): one torch thread per simulated client
            from fedmllm.training.loop import resolve_device

            torch.set_num_threads(1)
            bundle = build_model(cfg.model.name, pretrained=cfg.model.pretrained, seed=cfg.seed)
            # A GPU only if Ray gave the actor one (federated.num_gpus_per_client), train.device allowing.
            bundle.model.to(resolve_device(cfg.train.device))
        self.models = TunedModels(cfg, bundle, share_base=own)  # one per LoRA rank, on first use
        default = self.models.get()
        self.model, self.method, self.initial = default.model, default.method, default.initial
        _, self.base_lr = method_options(cfg, cfg.federated.method)
        self.processor = bundle.processor
        self.collate = lambda batch: encode_train(self.processor, batch)
        self._samples: dict[int, list] = {}
        self._algorithms: dict[str, object] = {}

    def client_samples(self, partition_id: int) -> list:
        """The training samples of one client (cached: a Ray actor serves several clients)."""
        if partition_id not in self._samples:
            if self._pools is not None:
                if not 0 <= partition_id < len(self.partition.clients):
                    raise ValueError(f"partition id {partition_id} out of range "
                                     f"(0..{len(self.partition.clients) - 1})")
                self._samples[partition_id] = self.partition.samples(partition_id, self._pools)
            else:
                self._samples[partition_id] = load_client_samples(self.cfg, self.partition, partition_id)
        return self._samples[partition_id]

    def pooled_samples(self) -> list:
        """The union of every partition's training samples, partition by partition (the pooled
        baseline's data, in the order `baselines.run_pooled` trains on)."""
        return [s for pid in range(len(self.partition.clients)) for s in self.client_samples(pid)]

    def client_tests(self, partition_id: int) -> dict:
        """The client's local test split, by task (cached)."""
        from fedmllm.federated.personal import load_client_tests

        if self.test_partition is None:
            raise RuntimeError("this experiment has no partition_test.json (federated.eval_personalized = false)")
        if partition_id not in self._tests:
            if self._test_pools is not None:
                own = self.test_partition.clients[partition_id]
                self._tests[partition_id] = {t: [self._test_pools[t][i] for i in own[t]]
                                             for t in self.test_partition.tasks if own[t]}
            else:
                self._tests[partition_id] = load_client_tests(self.cfg, self.test_partition, partition_id)
        return self._tests[partition_id]

    def own_model(self, payload: Payload, local_state: Groups):
        """Load the client's own model for ``payload`` (what its round would start from): the
        shared part received, its local part, residuals in the base. Returns ``(tuned, algorithm,
        payload without residuals, hooks, plan)``."""
        config = payload.config
        algo = self.algorithm(str(config[P.ALGORITHM]))
        rank = config.get(P.LORA_RANK)
        tuned = self.models.get(int(rank) if rank else None)
        received = payload.arrays[GLOBAL]
        residuals = {k: v for k, v in received.items() if is_residual(k)}
        self.models.set_residuals(tuned, residuals)  # merged updates go into the frozen base
        payload = Payload({**payload.arrays, GLOBAL: {k: v for k, v in received.items() if k not in residuals}},
                          config)
        state, hooks, plan = algo.prepare(payload, local_state, tuned.method, tuned.initial)
        tuned.method.set_state(tuned.model, as_tensors(state))
        return tuned, algo, payload, hooks, plan

    def evaluate_round(self, partition_id: int, payload: Payload, local_state: Groups) -> tuple[dict, dict]:
        """(task -> score, task -> samples) of the client's own model on its local test split."""
        from fedmllm.federated.personal import score_on_splits

        tuned = self.own_model(payload, local_state)[0]
        return score_on_splits(tuned.model, self.processor, self.client_tests(partition_id),
                               self.cfg.eval.batch_size)

    def algorithm(self, name: str):
        """The client half of algorithm ``name`` (it reads its settings from the payload)."""
        if name not in self._algorithms:
            from fedmllm.collab.base import PARADIGMS  # collaboration paradigms are algorithms too

            self._algorithms[name] = (PARADIGMS.get(name) if name in PARADIGMS else ALGORITHMS.get(name))()
        return self._algorithms[name]

    def run_round(self, partition_id: int, payload: Payload, local_state: Groups) -> ClientUpdate:
        """One round of local training of ``partition_id`` as the payload's algorithm says (and,
        in an attacked system, as the message's attack says; a straggler then sleeps). A pooled
        baseline job (``P.POOLED``) trains on every partition's samples instead."""
        config = payload.config
        server_round = int(config[P.SERVER_ROUND])
        attack = self.attack(config)
        samples = self.pooled_samples() if config.get(P.POOLED) else self.client_samples(partition_id)
        if attack is not None:  # data poisoning (a no-op for model-poisoning attacks)
            samples = attack.poison_samples(samples, np.random.default_rng(
                derive_seed(self.cfg.seed, "attack-data", partition_id)))
        update = self.train_samples(samples, payload, local_state, ("client", server_round, partition_id))
        if attack is not None:  # model poisoning (a no-op for data-poisoning attacks)
            received = {k: v for k, v in payload.arrays[GLOBAL].items() if not is_residual(k)}
            update.arrays[STATE] = attack.poison_update(update.arrays[STATE], received, np.random.default_rng(
                derive_seed(self.cfg.seed, "attack", server_round, partition_id)))
        slowdown = float(config.get(P.SLOWDOWN, 1.0))
        if slowdown > 1:  # a simulated straggler: its round takes slowdown x its compute time
            time.sleep((slowdown - 1.0) * update.seconds)
        return update

    def train_samples(self, samples: list, payload: Payload, local_state: Groups,
                      seed_parts: tuple) -> ClientUpdate:
        """Train the model ``payload`` describes on ``samples`` (the training seed derives from the
        experiment seed and ``seed_parts``); the reply arrays are client-side clipped when the
        message asks (DP). Also the server's reference training (FLTrust's root set)."""
        from fedmllm.training.loop import loop_config, train_local

        config = payload.config
        lr, steps = float(config[P.LR]), int(config[P.LOCAL_STEPS])
        tuned, algo, payload, hooks, plan = self.own_model(payload, local_state)
        model, method = tuned.model, tuned.method
        params = method.state_parameters(model)
        frozen = [params[k] for k in plan.frozen if params[k].requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        t0 = time.perf_counter()
        try:
            stats = train_local(model, samples, self.collate,
                                loop_config(self.cfg.train, lr=lr, steps=steps, warmup_ratio=0.0,
                                            schedule="constant"),
                                seed=derive_seed(self.cfg.seed, *seed_parts), hooks=hooks)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        result = LocalResult(as_arrays(method.get_state(model)), stats.steps, lr, hooks)
        arrays, new_local = algo.finish(payload, local_state, plan, result)
        outputs = getattr(algo, "client_outputs", None)
        if outputs is not None:  # what the trained model computes on the public set (collaboration)
            arrays.update(outputs(payload, model, self.processor, self.cfg))
        if P.DP_CLIP in config:  # client-side DP: the update leaves the client clipped
            from fedmllm.federated.privacy import clip_update

            arrays[STATE] = clip_update(arrays[STATE], payload.arrays[GLOBAL], float(config[P.DP_CLIP]))[0]
        return ClientUpdate(arrays, len(samples), float(stats.loss_mean), stats.steps,
                            time.perf_counter() - t0, new_local)

    def attack(self, config):
        """The attack this round's message tells the client to run (simulated adversary), or None."""
        name = config.get(P.ATTACK)
        if not name:
            return None
        from fedmllm.federated.attacks import build_attack, options_from_config

        return build_attack(str(name), options_from_config(config))


def client_runtime(experiment_dir: str | Path, experiment_id: str,
                   accept: Optional[Callable[[Config], None]] = None) -> ClientRuntime:
    """The process-wide cached runtime of an experiment, built from its run directory's
    ``config.toml`` and ``partition.json`` (one per Ray actor; a new experiment frees the old).
    ``accept`` (a node's `NodePolicy.check_config`) sees the config on every call, before
    anything is built from it, and raises to refuse it."""
    if experiment_id not in _RUNTIMES:
        from fedmllm.config import config_from_toml, dumps
        from fedmllm.data.partition import Partition

        root = Path(experiment_dir)
        cfg = config_from_toml((root / "config.toml").read_text())
        if config_key(dumps(cfg)) != experiment_id:
            raise InstructionRefusedError(f"{root}/config.toml is not experiment {experiment_id}")
        if accept is not None:
            accept(cfg)
        partition = Partition.from_json((root / "partition.json").read_text())
        tests = root / "partition_test.json"
        test_partition = Partition.from_json(tests.read_text()) if tests.is_file() else None
        _RUNTIMES.clear()  # one experiment per process at a time: free the previous model
        _RUNTIMES[experiment_id] = ClientRuntime(cfg, partition, test_partition=test_partition)
    elif accept is not None:
        accept(_RUNTIMES[experiment_id].cfg)
    return _RUNTIMES[experiment_id]


class ClientStore:
    """Each client's local state across rounds: ``<root>/<system>/<partition>/round-NNNN.safetensors``.

    A round's file is written (atomically) before the client replies, so the server's checkpoint
    of round r always finds the clients' round-r state on disk; a resumed round r + 1 reads the
    newest file of a round < r + 1, so a killed attempt's files are never read, only overwritten.
    Older files than the one a round started from are removed. ``root=None`` keeps everything in
    memory (per process; not resumable).
    """

    def __init__(self, root: Optional[str | Path]):
        self.root = Path(root) if root else None
        self._memory: dict[tuple[str, int], dict[int, Groups]] = {}

    def _dir(self, system: str, partition_id: int) -> Path:
        assert self.root is not None
        return self.root / system / str(partition_id)

    def _rounds(self, system: str, partition_id: int) -> list[int]:
        if self.root is None:
            return sorted(self._memory.get((system, partition_id), {}))
        folder = self._dir(system, partition_id)
        if not folder.is_dir():
            return []
        return sorted(int(f.stem.split("-")[1]) for f in folder.glob("round-*.safetensors"))

    def load(self, system: str, partition_id: int, before_round: int) -> Groups:
        """The local state saved in the newest round < ``before_round`` ({} if none)."""
        rounds = [r for r in self._rounds(system, partition_id) if r < before_round]
        if not rounds:
            return {}
        if self.root is None:
            return self._memory[(system, partition_id)][rounds[-1]]
        from safetensors import safe_open

        path = self._dir(system, partition_id) / f"round-{rounds[-1]:04d}.safetensors"
        groups: Groups = {}
        with safe_open(str(path), framework="np") as f:
            for name in json.loads(f.metadata()["order"]):  # the saved order, not safetensors' sorted one
                group, key = name.split("/", 1)
                groups.setdefault(group, {})[key] = f.get_tensor(name)
        return groups

    def save(self, system: str, partition_id: int, server_round: int, groups: Groups) -> None:
        """Keep ``groups`` as this client's state after ``server_round`` (nothing to keep: no file)."""
        if not groups:
            return
        older = [r for r in self._rounds(system, partition_id) if r < server_round]
        keep = older[-1] if older else None  # what this round started from: a redo reads it
        if self.root is None:
            slot = self._memory.setdefault((system, partition_id), {})
            slot[server_round] = groups
            for r in [r for r in slot if r < server_round and r != keep]:
                del slot[r]
            return
        import os

        from safetensors.numpy import save_file

        folder = self._dir(system, partition_id)
        folder.mkdir(parents=True, exist_ok=True)
        flat = {f"{g}/{k}": contiguous(v) for g, arrays in groups.items() for k, v in arrays.items()}
        tmp = folder / f".round-{server_round:04d}.tmp"
        save_file(flat, str(tmp), metadata={"order": json.dumps(list(flat))})
        os.replace(tmp, folder / f"round-{server_round:04d}.safetensors")
        for r in older:
            if r != keep:
                (folder / f"round-{r:04d}.safetensors").unlink(missing_ok=True)
