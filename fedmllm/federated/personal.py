"""Personalized evaluation: every client's own model scored on its local test split.

A client's own model is what it would start its next round from: the global shared part plus
its local part (personalized rules such as FedSA-LoRA), or simply the global model. Each client
holds a test split of the downstream test sets in its training mix (`fedmllm.data.partition.
holdout.split_test`, saved as ``partition_test.json``). The fairness view (FederatedScope-LLM's
monitor; the LoRA papers' weighted vs unweighted client means) summarizes the clients' scores.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

SCORE, COUNT = "score/", "count/"  # metric-key prefixes of a client's evaluate reply


def client_score(scores: Mapping[str, float], counts: Mapping[str, int]) -> tuple[float, int]:
    """(the client's score: the mean over its tasks weighted by its test samples, its samples)."""
    n = sum(int(counts[t]) for t in scores)
    if n == 0:
        return float("nan"), 0
    return sum(float(scores[t]) * int(counts[t]) for t in scores) / n, n


def summarize(per_client: Mapping[int, tuple[float, int]]) -> dict:
    """Mean weighted by clients' test samples, unweighted mean over clients, worst client, spread.

    ``per_client``: client -> (score, test samples); clients without test samples are left out.
    """
    items = sorted((k, s, n) for k, (s, n) in per_client.items() if n > 0)
    if not items:
        return {}
    scores = np.array([s for _, s, _ in items])
    sizes = np.array([n for _, _, n in items], dtype=float)
    worst = int(np.argmin(scores))
    return {
        "clients": {int(k): {"score": float(s), "n": int(n)} for k, s, n in items},
        "mean_weighted": float(scores @ sizes / sizes.sum()),  # each test sample counts once
        "mean_unweighted": float(scores.mean()),  # each client counts once
        "worst": float(scores[worst]), "worst_client": int(items[worst][0]),
        "std": float(scores.std()),
        "p10": float(np.percentile(scores, 10)),  # the bottom decile's upper edge
    }


def split_for_clients(partition, test_pool):
    """Each client's test split, in proportion to its training mix (deterministic)."""
    from fedmllm.data.partition.holdout import split_test

    return split_test(partition, test_pool)


def load_client_tests(cfg, test_partition, partition_id: int) -> dict[str, list]:
    """Only client ``partition_id``'s test samples, by task (synthetic twins build just those)."""
    from fedmllm.data.suite import load_task
    from fedmllm.experiment import TEST_SEED_OFFSET

    own = test_partition.clients[partition_id]
    return {t: load_task(t, "test", cfg.data.test_n, cfg.seed + TEST_SEED_OFFSET, cfg.data, indices=own[t])
            for t in test_partition.tasks if own[t]}


def score_on_splits(model, processor, tests: Mapping[str, list], batch_size: int) -> tuple[dict, dict]:
    """(task -> score, task -> test samples) of ``model`` on one client's split."""
    from fedmllm.experiment import score

    return score(model, processor, dict(tests), batch_size), {t: len(v) for t, v in tests.items()}
