"""The baselines of a federated experiment, on the identical split: ``pooled`` (one model on the
union of the clients' data) and ``local`` (each client alone), in the `BASELINES` registry.

Both train with the clients' schedule by default (`train_baseline`): a pooled model differs from
a FedAvg model only in the data each step sees, so pooled vs FedAvg measures federation, not a
different learning-rate schedule. Both resume: between rounds and inside one (loop checkpoints).
They train in this process, or (``federated.baseline_placement``) round by round as jobs on the
clients, all baselines' jobs of a round in one exchange so that the simulation's actors train them
in parallel (`train_on_clients`): the same segments, the same result.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from fedmllm.config import method_options
from fedmllm.experiment import derive_seed
from fedmllm.faults import crash_point
from fedmllm.federated.aggregate import contiguous
from fedmllm.federated.algorithms.base import Arrays, as_tensors
from fedmllm.federated.results import system_result
from fedmllm.registry import Registry
from fedmllm.runs import write_json

if TYPE_CHECKING:
    from fedmllm.federated.experiment import FederatedExperiment

# name -> run(experiment) -> result dict; strategies are every registered algorithm.
BASELINES: Registry[Callable[["FederatedExperiment"], dict]] = Registry("baseline")


def train_baseline(exp: "FederatedExperiment", samples: list, name: str, steps_per_round: int,
                   seed_client: int, rank: Optional[int] = None) -> Arrays:
    """Train a baseline (pooled or local) from the method's initial state at LoRA ``rank``.

    ``federated.baseline_schedule = "rounds"`` (default): ``rounds`` segments of
    ``steps_per_round`` steps, each a fresh optimizer at the round's constant learning rate
    with the seed client ``seed_client`` would use in that round: the clients' schedule and
    per-step semantics, so a pooled model differs from FedAvg's only by the data it sees
    (one client holding the union is FedAvg exactly). ``"single"``: one run of all the steps
    with warm-up + cosine (``train``). Resumable between segments and, every
    ``federated.baseline_checkpoint_every`` steps, within one (``checkpoints/<name>*``)."""
    from fedmllm.federated.algorithms.base import as_arrays
    from fedmllm.training.loop import LoopCheckpoint, loop_config, train_local

    fed = exp.cfg.federated
    rt = exp.clients.models.get(rank)
    exp.clients.models.set_residuals(rt, {})
    _, lr = method_options(exp.cfg, fed.method)
    folder = exp.run.path / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    every = fed.baseline_checkpoint_every
    ckpt = LoopCheckpoint(folder / f"{name}.pt", every) if every else None
    if fed.baseline_schedule == "single":
        parts = ("pooled",) if name == "pooled" else ("local", seed_client)  # the seeds it always had
        segments = [(1, fed.rounds * steps_per_round, lr, derive_seed(exp.cfg.seed, *parts),
                     loop_config(exp.cfg.train, lr=lr, steps=fed.rounds * steps_per_round))]
    else:
        segments = [(r, steps_per_round, lr * fed.lr_decay ** (r - 1),
                     derive_seed(exp.cfg.seed, "client", r, seed_client), None) for r in range(1, fed.rounds + 1)]
    state, first = _load_segment(folder / f"{name}.segment.safetensors", rt.initial)
    for r, steps, round_lr, seed, loop in segments:
        if r < first:
            continue
        rt.method.set_state(rt.model, as_tensors(state))
        loop = loop or loop_config(exp.cfg.train, lr=round_lr, steps=steps, warmup_ratio=0.0, schedule="constant")
        train_local(rt.model, samples, exp.clients.collate, loop, seed=seed, checkpoint=ckpt)
        state = as_arrays(rt.method.get_state(rt.model))
        _save_segment(folder / f"{name}.segment.safetensors", state, r + 1)
        if ckpt is not None:
            ckpt.path.unlink(missing_ok=True)
        crash_point(name, "segment", r)
    (folder / f"{name}.segment.safetensors").unlink(missing_ok=True)  # the caller records it next
    return state


@dataclass
class _Job:
    """One baseline's training as per-round jobs on a client: the pooled one, or a local client's."""

    name: str  # its segment file's name: pooled, local-<pid>
    partition_id: int  # the node it trains on (pooled: partition 0's, with client 0's seeds)
    steps: int  # per round
    examples: int  # what its reply must claim
    rank: Optional[int]  # its LoRA rank (None: the configured one)
    state: Arrays
    next_round: int


def train_on_clients(exp: "FederatedExperiment") -> None:
    """Train every pending baseline segment on the clients (``federated.baseline_placement``):
    each round one job per baseline, the pooled one (the longest: as many steps as the round's
    clients together) first and every local client's beside it, in one exchange, so the
    simulation's actors train them in parallel (one takes pooled, the others the local clients)
    instead of this process training them one after the other while the actors idle.

    A job is `train_baseline`'s segment exactly: the client half of FedAvg trains the state sent
    (the baseline's own) for the round's steps at its lr with the seeds ``("client", round,
    partition)``, partition 0 for pooled, on the node's partition or, for pooled, every
    partition's samples in partition order. Every round's state lands in the baseline's segment
    file, so `train_baseline` then finds it trained (and a killed run resumes from the last
    round); a job that fails or answers out of shape stays where it is and `train_baseline`
    finishes it in this process."""
    from fedmllm.federated import protocol as P
    from fedmllm.federated.algorithms import GLOBAL, STATE, Payload
    from fedmllm.federated.experiment import common_config

    fed = exp.cfg.federated
    if trained_on(exp) != "clients":
        return
    jobs = [j for j in _pending_jobs(exp) if j.next_round <= fed.rounds]
    if not jobs:
        return
    _, lr = method_options(exp.cfg, fed.method)
    folder = exp.run.path / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    common = common_config(exp.cfg, exp.run.path)
    t0 = time.perf_counter()
    print(f"[baselines] {', '.join(j.name for j in jobs)}: on the clients, {fed.rounds} rounds", flush=True)
    for r in range(min(j.next_round for j in jobs), fed.rounds + 1):
        now = [j for j in jobs if j.next_round == r]
        config = {**common, P.SERVER_ROUND: r, P.LR: lr * fed.lr_decay ** (r - 1), P.ALGORITHM: "fedavg",
                  P.BASELINE: 1}
        payloads = {j.name: (j.partition_id, Payload({GLOBAL: j.state}, {
            **config, P.SYSTEM: j.name.split("-")[0], P.LOCAL_STEPS: j.steps,
            **({P.POOLED: 1} if j.name == "pooled" else {}),
            **({P.LORA_RANK: j.rank} if j.rank is not None else {})})) for j in now}
        raw, failures = exp.baseline_transport.exchange_jobs(r, payloads)
        for j in now:
            reply, why = raw.get(j.name), failures.get(j.name)
            if reply is not None:
                try:
                    checked = P.validate_reply(j.partition_id, reply.arrays, reply.metrics,
                                               {STATE: P.shapes_of(j.state)}, who=f"baseline {j.name}'s client")
                    if checked.num_examples != j.examples:
                        raise P.ReplyError(f"baseline {j.name}'s client claims {checked.num_examples} "
                                           f"examples, it has {j.examples}")
                except P.ReplyError as e:
                    why = f"invalid reply: {e}"
                else:
                    j.state, j.next_round = checked.arrays[STATE], r + 1
                    _save_segment(folder / f"{j.name}.segment.safetensors", j.state, r + 1)
                    continue
            print(f"[baselines] {j.name} round {r} failed on its client ({why}); it finishes in this process",
                  flush=True)
            exp.run.log({"event": "baseline_job_failed", "baseline": j.name, "round": r, "error": why})
            jobs.remove(j)
        crash_point("baselines", r)
    print(f"[baselines] trained on the clients in {time.perf_counter() - t0:.0f} s", flush=True)


def trained_on(exp: "FederatedExperiment") -> str:
    """Where the baselines train: ``clients`` (`train_on_clients`) or ``server`` (this process)."""
    on_clients = exp.baseline_transport is not None and exp.cfg.federated.baseline_schedule == "rounds"
    return "clients" if on_clients else "server"


def _pending_jobs(exp: "FederatedExperiment") -> list[_Job]:
    """The baselines still to train (pooled first), each from its last segment file."""
    from fedmllm.federated.heterogeneity import client_ranks, client_steps

    fed = exp.cfg.federated
    folder = exp.run.path / "checkpoints"
    sizes = exp.partition.sizes()
    todo: list[tuple[str, int, int, int, Optional[int]]] = []  # name, partition, steps, examples, rank
    if "pooled" in fed.baselines and exp.progress.get("pooled") is None and exp.pooled_state is None:
        todo.append(("pooled", 0, pooled_round_steps(exp.cfg), sum(sizes), None))
    if "local" in fed.baselines and exp.progress.get("local") is None:
        budgets, ranks = client_steps(exp.cfg), client_ranks(exp.cfg)
        todo += [(f"local-{pid}", pid, budgets[pid] if budgets else fed.local_steps, sizes[pid],
                  ranks[pid] if ranks else None)
                 for pid in range(len(exp.partition.clients))
                 if sizes[pid] and not (folder / "local" / f"client-{pid}.json").is_file()]
    jobs = []
    for name, pid, steps, examples, rank in todo:
        state, first = _load_segment(folder / f"{name}.segment.safetensors", exp.clients.models.get(rank).initial)
        jobs.append(_Job(name, pid, steps, examples, rank, state, first))
    return jobs


def pooled_round_steps(cfg) -> int:
    """The pooled baseline's steps per round: as many as the round's clients take together."""
    from fedmllm.federated.heterogeneity import client_steps

    fed = cfg.federated
    per_round = fed.clients_per_round or fed.num_clients
    budgets = client_steps(cfg)  # per-client budgets: the same expected total of steps
    return round(sum(budgets) * per_round / fed.num_clients) if budgets else per_round * fed.local_steps


def _save_segment(path: Path, state: Arrays, next_round: int) -> None:
    """A baseline's state after a segment (atomic), with the round to continue from."""
    import os

    from safetensors.numpy import save_file

    tmp = path.with_suffix(".tmp")
    save_file({k: contiguous(v) for k, v in state.items()}, str(tmp),
              metadata={"next_round": str(next_round), "order": json.dumps(list(state))})
    os.replace(tmp, path)


def _load_segment(path: Path, initial: Arrays) -> tuple[Arrays, int]:
    """(state, the first round still to train): the last finished segment, or the initial state."""
    if not path.is_file():
        return dict(initial), 1
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
        return {k: f.get_tensor(k) for k in json.loads(meta["order"])}, int(meta["next_round"])


def run_pooled(exp: "FederatedExperiment") -> dict:
    """Centralized training on the union of the clients' data: per round as many steps as the
    round's clients take together (`train_baseline` for the schedule)."""
    fed = exp.cfg.federated
    round_steps = pooled_round_steps(exp.cfg)
    steps = fed.rounds * round_steps
    t0 = time.perf_counter()
    train_on_clients(exp)  # with the local baseline's jobs beside it (its seconds are counted here)
    state = exp.pooled_state  # trained by a killed attempt that did not finish evaluating
    if state is None:
        from safetensors.numpy import save_file

        state = train_baseline(exp, exp.clients.pooled_samples(), "pooled", round_steps, seed_client=0)
        path = exp.run.path / "checkpoints" / "pooled" / "final.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: contiguous(v) for k, v in state.items()}, str(path))
        exp.pooled_state = state
    if exp.test_partition is not None:  # after the final evaluation: the clients' splits from its answers
        exp.final_scores("pooled", state)
        exp.personal["pooled"] = exp.personal_baseline(lambda pid: exp.server.load(state).model, state)
    return exp.finish("pooled", "baseline", state, {"steps": steps, "seconds": time.perf_counter() - t0,
                                                    "trained_on": trained_on(exp)})


def run_local(exp: "FederatedExperiment") -> dict:
    """Each client alone for all rounds' steps; scores averaged over clients (each client's
    scores are kept under ``checkpoints/local/``, so a resumed run skips finished clients)."""
    from fedmllm.federated.heterogeneity import client_ranks, client_steps

    fed = exp.cfg.federated
    budgets, ranks = client_steps(exp.cfg), client_ranks(exp.cfg)  # each client's own budget and rank
    folder = exp.run.path / "checkpoints" / "local"
    per_client = []
    t0 = time.perf_counter()
    train_on_clients(exp)
    for pid in range(len(exp.partition.clients)):
        path = folder / f"client-{pid}.json"
        if path.is_file():
            per_client.append(json.loads(path.read_text()))
            continue
        samples = exp.clients.client_samples(pid)
        if not samples:
            continue
        budget = budgets[pid] if budgets else fed.local_steps
        state = train_baseline(exp, samples, f"local-{pid}", budget, seed_client=pid,
                                   rank=ranks[pid] if ranks else None)
        scores = exp.server.evaluate(state, upstream="full")
        if exp.test_partition is not None:  # its own model on its own test split
            own, counts = exp.own_split_scores(pid, state, lambda p: exp.server.load(state).model)
            scores["own"] = {"scores": own, "counts": counts}
        write_json(path, scores)
        per_client.append(scores)
        print(f"[local] client {pid} done", flush=True)
    avg = {part: {t: sum(c[part][t] for c in per_client) / len(per_client) for t in per_client[0][part]}
           for part in ("downstream", "upstream")}
    result = system_result("local", "baseline", exp.cfg.model.name, avg, exp.zero["full"])
    result.update({"clients": len(per_client), "seconds": time.perf_counter() - t0, "trained_on": trained_on(exp)})
    if exp.test_partition is not None:
        from fedmllm.federated.personal import client_score, summarize

        result["personalized"] = summarize({pid: client_score(c["own"]["scores"], c["own"]["counts"])
                                            for pid, c in enumerate(per_client) if "own" in c})
    return exp.done("local", result)


BASELINES.register("pooled", run_pooled)
BASELINES.register("local", run_local)
