"""Partitioners: exact cover, reproducibility, the skew each one promises, clear errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from fedmllm.data.partition import PARTITIONERS, Partition, make_partition, partition, split_test
from fedmllm.data.record import Sample
from fedmllm.errors import UserError

TASKS = {"scienceqa": 120, "iconqa": 90, "rsvqa": 80, "pathvqa": 70, "flickr30k": 60, "chd": 40}


def make_pool(sizes=TASKS, seed=0, answers=("yes", "no", "A", "B", "two", "red")):
    rng = random.Random(seed)
    return {t: [Sample(f"{t}/train/{i}", t, [], "q?", [rng.choice(answers)]) for i in range(n)]
            for t, n in sizes.items()}


POOL = make_pool()


@pytest.mark.parametrize("name", PARTITIONERS.names())
def test_every_index_exactly_once_and_reproducible(name):
    p = partition(name, POOL, 7, seed=3)
    for t, samples in POOL.items():
        held = sorted(i for c in p.clients for i in c[t])
        assert held == list(range(len(samples)))
    assert sum(p.sizes()) == sum(TASKS.values())
    assert min(p.sizes()) >= 1
    assert partition(name, POOL, 7, seed=3).to_json() == p.to_json()
    assert Partition.from_json(p.to_json()) == p
    text = json.dumps(p.to_json())
    assert Partition.from_json(text) == p and json.loads(text)["counts"] == p.counts()
    table = p.counts_table()
    assert "total" in table and str(sum(TASKS.values())) in table


@pytest.mark.parametrize("name", ["iid", "task_dirichlet", "label_dirichlet", "quantity"])
def test_seed_changes_random_partitions(name):
    assert partition(name, POOL, 5, seed=0).clients != partition(name, POOL, 5, seed=1).clients


def test_iid_sizes_equal_within_one():
    sizes = partition("iid", POOL, 6, seed=0).sizes()
    assert max(sizes) - min(sizes) <= 1


def test_one_task_gives_one_task_per_client_round_robin():
    p = partition("one_task", POOL, 8, seed=0)
    tasks = list(TASKS)
    for cid, counts in enumerate(p.counts()):
        held = [t for t, n in counts.items() if n]
        assert held == [tasks[cid % len(tasks)]]
    # scienceqa is held by clients 0 and 6: split evenly
    assert p.counts()[0]["scienceqa"] == p.counts()[6]["scienceqa"] == 60
    with pytest.raises(UserError, match="num_clients >= number of tasks"):
        partition("one_task", POOL, 4)


def test_task_dirichlet_small_alpha_is_more_skewed():
    # Mean TV distance between a client's task mix and the pool's, averaged over 5 seeds.
    skew = {a: np.mean([partition("task_dirichlet", POOL, 6, seed=s,
                                  options={"alpha": a}).task_skew() for s in range(5)])
            for a in (0.2, 100.0)}
    assert skew[0.2] > 0.4 > 0.1 > skew[100.0]


def label_skew(p: Partition, pool) -> float:
    """Mean TV distance between a client's answer mix within a task and the task's."""
    out = []
    for t, samples in pool.items():
        labels = sorted({s.label for s in samples})
        ref = np.array([sum(s.label == lab for s in samples) for lab in labels]) / len(samples)
        for c in p.clients:
            if c[t]:
                mix = np.array([sum(samples[i].label == lab for i in c[t]) for lab in labels])
                out.append(0.5 * np.abs(mix / mix.sum() - ref).sum())
    return float(np.mean(out))


def test_label_dirichlet_skews_answers_more_than_iid():
    small = partition("label_dirichlet", POOL, 4, seed=0, options={"alpha": 0.1})
    iid = partition("iid", POOL, 4, seed=0)
    assert label_skew(small, POOL) > 2 * label_skew(iid, POOL)


def test_quantity_modes():
    sizes = partition("quantity", POOL, 5, seed=0, options={"alpha": 0.3}).sizes()
    assert max(sizes) > 3 * min(sizes)
    lin = partition("quantity", POOL, 4, seed=0, options={"mode": "linear"}).sizes()
    assert lin == sorted(lin) and lin[-1] > 3 * lin[0]  # sizes ~ 1:2:3:4
    exp = partition("quantity", POOL, 4, seed=0, options={"mode": "exponential"}).sizes()
    assert exp == sorted(exp) and exp[-1] > 10 * exp[0]


@pytest.mark.parametrize("name", ["task_dirichlet", "label_dirichlet"])
@pytest.mark.parametrize("alpha", [0, -1.0])
def test_non_positive_alpha_is_a_user_error(name, alpha):
    with pytest.raises(UserError, match="alpha must be > 0"):
        partition(name, POOL, 3, options={"alpha": alpha})


def test_input_errors_are_user_errors():
    with pytest.raises(UserError, match="num_clients"):
        partition("iid", POOL, 0)
    with pytest.raises(UserError, match="valid: alpha, min_size, self_balancing"):
        partition("task_dirichlet", POOL, 3, options={"beta": 1})
    with pytest.raises(UserError, match="Valid choices"):
        partition("dirichlet", POOL, 3)
    with pytest.raises(UserError, match="empty"):
        partition("iid", {"a": []}, 2)
    with pytest.raises(UserError, match="mode"):
        partition("quantity", POOL, 3, options={"mode": "zipf"})
    # Flower's own failure (too many clients for the samples) arrives as a UserError
    with pytest.raises(UserError, match="task_dirichlet"):
        partition("task_dirichlet", make_pool({"a": 5, "b": 5}), 20, options={"alpha": 0.05})


def test_split_test_follows_training_shares():
    train = partition("task_dirichlet", POOL, 5, seed=2, options={"alpha": 0.3})
    test_pool = make_pool({t: n // 2 for t, n in TASKS.items()}, seed=9)
    for by_label in (False, True):
        test = split_test(train, test_pool, train_pool=POOL if by_label else None)
        assert test.split == "test"
        for t, samples in test_pool.items():
            assert sorted(i for c in test.clients for i in c[t]) == list(range(len(samples)))
            for tr, te in zip(train.clients, test.clients):
                if not tr[t]:
                    assert not te[t]  # no test data of a task the client never trains on
        if not by_label:  # task-level shares: within one sample of the training share
            for t in TASKS:
                for tr, te in zip(train.counts(), test.counts()):
                    assert abs(te[t] - tr[t] * len(test_pool[t]) / TASKS[t]) < 1
    assert split_test(train, test_pool).to_json() == split_test(train, test_pool).to_json()


def test_make_partition_applies_alpha_only_where_it_exists():
    a = make_partition("task_dirichlet", POOL, 4, seed=1, alpha=0.3)
    assert a.options["alpha"] == 0.3
    assert a.clients == partition("task_dirichlet", POOL, 4, 1, {"alpha": 0.3}).clients
    assert make_partition("iid", POOL, 4, seed=1, alpha=0.3).options == {}
    with pytest.raises(UserError, match="valid"):
        make_partition("iid", POOL, 4, beta=2)
