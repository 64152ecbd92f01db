"""What the server computes besides aggregation, without Flower: the partition and scoring.

`build_partition` splits the downstream training pools across clients (deterministic from the
seed; saved as ``partition.json`` so clients load only their own slice). `ServerRuntime` scores a
global state on the downstream tests and the upstream sets, and keeps the answers of the last
downstream evaluation: a client whose own model is that state is scored on its local test split
from them (`split_scores`; `generate`'s answers do not depend on the batch a sample is in). The
client side is `fedmllm.federated.client`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from fedmllm.config import Config
from fedmllm.experiment import ExperimentData, score

def build_partition(cfg: Config, data: ExperimentData, num_clients: Optional[int] = None):
    """The client split of the downstream training pools (deterministic from the seed)."""
    from fedmllm.data.partition import make_partition

    fed = cfg.federated
    return make_partition(fed.partitioner, data.train, num_clients or fed.num_clients,
                          seed=cfg.seed, alpha=fed.alpha)


class ServerRuntime:
    """Scores global states on the downstream tests and upstream sets."""

    def __init__(self, cfg: Config, data: ExperimentData, bundle=None):
        from fedmllm.federated.tuned import TunedModels
        from fedmllm.models import build_model
        from fedmllm.training.loop import resolve_device

        self.cfg = cfg
        bundle = bundle or build_model(cfg.model.name, pretrained=cfg.model.pretrained, seed=cfg.seed)
        bundle.model.to(resolve_device(cfg.train.device))  # score where training runs (train.device)
        self.base_model = bundle.model
        self.processor = bundle.processor
        # Copies of the base: `evaluate` loads other states into them, and every system (each
        # strategy, pooled, each local client) must start from the same initial state.
        self.models = TunedModels(cfg, bundle)
        default = self.models.get()
        self.model, self.method = default.model, default.method
        self._initial = dict(default.initial)
        self.data = data
        self._answers = None  # (state, task -> TaskScore) of the last downstream evaluation
        self.upstream_sets = {
            "full": data.upstream,
            "small": {t: s[: cfg.federated.upstream_n] for t, s in data.upstream.items()},
        }

    def initial_state(self) -> dict[str, np.ndarray]:
        """The method's state right after it was applied (a fresh copy each call)."""
        return {k: v.copy() for k, v in self._initial.items()}

    def load(self, state):
        """Load a global ``state`` (method keys, LoRA residuals; any LoRA rank) into the matching
        model; returns that `Tuned` model."""
        return self.models.load({k: np.asarray(v) for k, v in state.items()})

    def evaluate(self, state, upstream: Optional[str]) -> dict[str, dict[str, float]]:
        """Downstream scores and, for ``upstream`` = "small" (the per-round subsample) or "full",
        upstream scores of the global ``state``."""
        return self._scores(self.load(state).model, upstream, state)

    def split_scores(self, state, tests: dict[str, list]) -> Optional[tuple[dict, dict]]:
        """`fedmllm.federated.personal.score_on_splits` of ``state`` on a subset ``tests`` of the
        downstream test sets (task -> samples), from the answers of the last `evaluate`, when that
        evaluated this very ``state`` (the same arrays); else None."""
        last = self._answers
        if last is None or last[0].keys() != state.keys() or any(last[0][k] is not state[k] for k in state):
            return None
        import fedmllm.metrics  # noqa: F401  (registers the metrics)
        from fedmllm.data.registry import TASKS
        from fedmllm.metrics.base import METRICS

        scores = {}
        for task, samples in tests.items():
            result = last[1].get(task)
            where = {uid: i for i, uid in enumerate(result.uids)} if result is not None else {}
            if result is None or len(where) != len(result.uids) or any(s.uid not in where for s in samples):
                return None  # not (uniquely) among the evaluated samples
            parsed = [result.predictions[where[s.uid]] for s in samples]
            scores[task] = float(dict(METRICS.get(TASKS.get(task).metric).compute(parsed, samples))["score"])
        return scores, {t: len(v) for t, v in tests.items()}

    def evaluate_upstream(self, state, upstream: str) -> dict[str, float]:
        """Only the upstream scores of the global ``state`` ("small" or "full" sets)."""
        return score(self.load(state).model, self.processor, self.upstream_sets[upstream], self.cfg.eval.batch_size)

    def zero_shot(self) -> dict[str, dict[str, float]]:
        """The base model's scores on the same sets (E and F are measured against these)."""
        return {"full": self._scores(self.base_model, "full"),
                "small": {"upstream": score(self.base_model, self.processor, self.upstream_sets["small"],
                                            self.cfg.eval.batch_size)}}

    def _scores(self, model, upstream: Optional[str], state=None) -> dict[str, dict[str, float]]:
        from fedmllm.eval import evaluate

        bs = self.cfg.eval.batch_size
        results = evaluate(model, self.processor, self.data.test, batch_size=bs)
        self._answers = None if state is None else (dict(state), results)
        out = {"downstream": {t: float(r.score) for t, r in results.items()}}
        if upstream:
            out["upstream"] = score(model, self.processor, self.upstream_sets[upstream], bs)
        return out
