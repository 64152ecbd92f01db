"""What a federated client and the server compute, without Flower.

`ClientRuntime` holds the base model with the tuning method applied (built once per process, e.g.
once per Ray actor), the downstream training pools and the partition; for each client it loads the
global state, runs the shared training loop with the algorithm's hooks, and returns the new state.
`ServerRuntime` scores a global state on the downstream tests and the upstream sets. The Flower
apps (``clients/``, ``server/``) and the in-process simulator are thin layers over these.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Optional

import torch

from fedmllm.config import Config, method_options
from fedmllm.experiment import ExperimentData, derive_seed, score

_RUNTIMES: dict[str, "ClientRuntime"] = {}


def sampling_seed(seed: int, server_round: int) -> int:
    """The seed of the ``random`` module when the server samples a round's clients (Flower's
    strategies sample with ``random.sample`` over the nodes, listed in partition order)."""
    return seed * 1_000_003 + server_round


def config_key(cfg_toml: str) -> str:
    return hashlib.sha256(cfg_toml.encode()).hexdigest()[:16]


def build_partition(cfg: Config, data: ExperimentData, num_clients: Optional[int] = None):
    """The client split of the downstream training pools (deterministic from the seed)."""
    from fedmllm.data.partition import make_partition

    fed = cfg.federated
    return make_partition(fed.partitioner, data.train, num_clients or fed.num_clients,
                          seed=cfg.seed, alpha=fed.alpha)


@dataclass
class LocalResult:
    """A client's reply: new trainable state and what it cost."""

    state: dict[str, torch.Tensor]
    num_examples: int
    train_loss: float
    steps: int
    seconds: float
    control_delta: Optional[dict[str, torch.Tensor]] = None
    control_new: Optional[dict[str, torch.Tensor]] = None


class ClientRuntime:
    """Base model + method + data + partition, built once and reused for every client."""

    def __init__(self, cfg: Config, bundle=None, data: Optional[ExperimentData] = None):
        """Build from ``cfg``; pass ``bundle`` (its model is copied) and ``data`` to share them."""
        import copy

        from fedmllm.data.collate import encode_train
        from fedmllm.methods import apply_method
        from fedmllm.models import build_model

        self.cfg = cfg
        if bundle is None:  # a fresh process (Ray actor): one torch thread per simulated client
            torch.set_num_threads(1)
            bundle = build_model(cfg.model.name, pretrained=cfg.model.pretrained, seed=cfg.seed)
            model = bundle.model
        else:
            model = copy.deepcopy(bundle.model)
        options, self.base_lr = method_options(cfg, cfg.federated.method)
        self.model, self.method, _ = apply_method(model, cfg.federated.method, options, seed=cfg.seed)
        self.processor = bundle.processor
        self.data = data if data is not None else ExperimentData.load(cfg, parts=("train",))
        self.partition = build_partition(cfg, self.data)
        self.collate = lambda batch: encode_train(self.processor, batch)

    def client_samples(self, partition_id: int):
        """The training samples of one client (`Partition.samples`: task by task, index order)."""
        if not 0 <= partition_id < len(self.partition.clients):
            raise ValueError(f"partition id {partition_id} out of range (0..{len(self.partition.clients) - 1})")
        return self.partition.samples(partition_id, self.data.train)

    def train(self, partition_id: int, global_state: dict[str, torch.Tensor], server_round: int,
              lr: float, steps: int, proximal_mu: float = 0.0,
              control: Optional[tuple[dict, dict]] = None, control_rule: str = "option2") -> LocalResult:
        """Local training of one client from ``global_state``.

        ``control`` = (c_global, c_local) enables the SCAFFOLD correction and returns the client's
        new control variate and its change: ``control_rule`` "option2" is Option II of
        Karimireddy et al. 2020 (eq. 4); "gradient" is the mean local minibatch gradient (see
        `server.strategies.scaffold.CONTROL_RULES` for why AdamW clients need it).
        """
        from fedmllm.pretrain import loop_config
        from fedmllm.training.hooks import ControlVariate, ProximalTerm
        from fedmllm.training.loop import train_local

        samples = self.client_samples(partition_id)
        self.method.set_state(self.model, global_state)
        hooks = []
        if proximal_mu > 0:
            hooks.append(ProximalTerm(proximal_mu, global_state, self.method))
        if control is not None:
            hooks.append(ControlVariate(control[0], control[1], self.method,
                                        record_gradients=control_rule == "gradient"))
        seed = derive_seed(self.cfg.seed, "client", server_round, partition_id)
        t0 = time.perf_counter()
        stats = train_local(self.model, samples, self.collate,
                            loop_config(self.cfg.train, lr=lr, steps=steps, warmup_ratio=0.0, schedule="constant"),
                            seed=seed, hooks=hooks)
        new_state = self.method.get_state(self.model)
        result = LocalResult(new_state, len(samples), float(stats.loss_mean), stats.steps,
                             time.perf_counter() - t0)
        if control is not None:
            from fedmllm.training.hooks import scaffold_control_update

            c_global, c_local = control
            if control_rule == "gradient":
                result.control_new = hooks[-1].mean_gradients()
            else:
                result.control_new = scaffold_control_update(c_local, c_global, global_state, new_state,
                                                             stats.steps, lr)
            result.control_delta = {k: result.control_new[k] - c_local[k].float() for k in new_state}
        return result


def client_runtime(cfg_toml: str) -> ClientRuntime:
    """The process-wide cached runtime for a config (one per Ray actor)."""
    key = config_key(cfg_toml)
    if key not in _RUNTIMES:
        from fedmllm.config import config_from_toml

        cfg = config_from_toml(cfg_toml)
        _RUNTIMES.clear()  # one experiment per process at a time: free the previous model
        _RUNTIMES[key] = ClientRuntime(cfg)
    return _RUNTIMES[key]


class ServerRuntime:
    """Scores global states on the downstream tests and upstream sets."""

    def __init__(self, cfg: Config, data: ExperimentData, bundle=None):
        from fedmllm.methods import apply_method
        from fedmllm.models import build_model

        self.cfg = cfg
        bundle = bundle or build_model(cfg.model.name, pretrained=cfg.model.pretrained, seed=cfg.seed)
        self.base_model = bundle.model
        self.processor = bundle.processor
        options, _ = method_options(cfg, cfg.federated.method)
        import copy

        self.model, self.method, _ = apply_method(copy.deepcopy(bundle.model), cfg.federated.method,
                                                  options, seed=cfg.seed)
        # Kept apart: `evaluate` loads other states into self.model, and every system (each
        # strategy, pooled, each local client) must start from this same state.
        self._initial = self.method.get_state(self.model)
        self.data = data
        self.upstream_sets = {
            "full": data.upstream,
            "small": {t: s[: cfg.federated.upstream_n] for t, s in data.upstream.items()},
        }

    def initial_state(self) -> dict[str, torch.Tensor]:
        """The method's state right after it was applied (a fresh copy each call)."""
        return {k: v.clone() for k, v in self._initial.items()}

    def evaluate(self, state: dict[str, torch.Tensor], upstream: Optional[str]) -> dict[str, dict[str, float]]:
        """Downstream scores and, for ``upstream`` = "small" (the per-round subsample) or "full",
        upstream scores of the global ``state``."""
        self.method.set_state(self.model, state)
        return self._scores(self.model, upstream)

    def zero_shot(self) -> dict[str, dict[str, float]]:
        """The base model's scores on the same sets (E and F are measured against these)."""
        return {"full": self._scores(self.base_model, "full"),
                "small": {"upstream": score(self.base_model, self.processor, self.upstream_sets["small"],
                                            self.cfg.eval.batch_size)}}

    def _scores(self, model, upstream: Optional[str]) -> dict[str, dict[str, float]]:
        bs = self.cfg.eval.batch_size
        out = {"downstream": score(model, self.processor, self.data.test, bs)}
        if upstream:
            out["upstream"] = score(model, self.processor, self.upstream_sets[upstream], bs)
        return out
