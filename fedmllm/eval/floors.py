"""Floors: what a model that learnt nothing scores on each task, computed from the run's own data.

A run writes them once, before any training, to ``<run>/floors.json`` (`ensure_floors`; a resumed
run reuses the file): ``{task: {"chance": float | None, "majority": float, "majority_answer": str,
"n": int, ...}}``, in the task's own metric and percent, on exactly the samples the run evaluates.

- **majority**: the score of always giving one answer, the most frequent training target
  (`Task.target`) of the task's training split (ties: the alphabetically first). A task without a
  training split in the run (the upstream sets, evaluated only) counts the targets of its evaluated
  samples instead, ``"majority_from": "test"``: the best constant answer there, an upper bound for
  a constant a model could have picked up.
- **chance**: the expected score of a uniform random answer, item by item:

  * an item with options (`Sample.choices`) draws one of its options, in the form its reference
    takes: the option letters A, B, ... when the reference is one of them (synth-scienceqa, scored
    by option-letter accuracy), else the option texts (synth-iconqa's choose-the-text answers with
    the option's text). One correct option of k gives the item 1/k; the task's chance is the mean of
    1/k over its items (an item whose reference is no option gets what the metric gives, 0);
  * an item without options draws one of the distinct (VQA-normalized) targets of the same task and
    question type (``meta["qtype"]``) in the split the majority answer comes from, so a counting
    question draws a count; all the task's targets when its type has fewer than two (a type seen
    with one answer only, e.g. in a small evaluated set standing in for a training split, would
    otherwise give a chance of 100).

  Per-sample metrics ("mean" aggregation: option letter, exact match, VQA accuracy) get the exact
  expectation: every candidate is parsed by the task's parser and scored by its metric on the item,
  and the candidates are averaged. Exact match and VQA accuracy give 0 to an answer that equals no
  reference (`ZERO_UNLESS_REFERENCE`), so only the candidates equal to a reference are scored.
  Corpus metrics have no per-item expectation (CIDEr-D's idf and MME's acc+ over image pairs need
  the whole set): their chance is the mean over `DRAWS` seeded draws of one random candidate per
  item. For a caption task that is a random training caption per image: what a captioner that
  ignores the image scores, meaningful because CIDEr-D rewards the n-grams the references share.
  ``chance`` is None (with ``chance_reason``) only when a task has no candidate answer at all.

Nothing here looks at a model: the floors depend on the data alone.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional, Sequence

from fedmllm.data.record import LETTERS, Sample, Task

FILE = "floors.json"
DRAWS = 32  # seeded draws for corpus metrics: the mean's spread is 1/sqrt(32) ~ 0.18 of one draw's
# Metrics under which an answer equal to no reference (after `normalize_answer`) scores 0.
ZERO_UNLESS_REFERENCE = frozenset({"exact_match", "vqa_accuracy"})


def _norm(text: str) -> str:
    from fedmllm.metrics.normalize import normalize_answer

    return normalize_answer(text)


def majority_answer(task: Task, samples: Sequence[Sample]) -> tuple[str, int]:
    """(the most frequent training target of ``samples``, its count); ties: alphabetically first."""
    counts = Counter(task.target(s).strip() for s in samples)
    answer = min(counts, key=lambda a: (-counts[a], a))
    return answer, counts[answer]


def answer_pools(task: Task, samples: Sequence[Sample]) -> dict[Optional[str], list[str]]:
    """Question type -> its distinct targets (first spelling of each normalized form); key None:
    every target of the task."""
    pools: dict[Optional[str], dict[str, str]] = defaultdict(dict)
    for s in samples:
        answer = task.target(s).strip()
        for key in (s.meta.get("qtype"), None):
            pools[key].setdefault(_norm(answer), answer)
    return {k: list(v.values()) for k, v in pools.items()}


def option_candidates(task: Task, sample: Sample) -> list[str]:
    """An item's options as answers: their letters when its reference is one of them (checked
    first: "C" is a letter even beside an option text "c"), else their texts."""
    letters = list(LETTERS[: len(sample.choices)])
    return letters if task.target(sample).strip() in letters else list(sample.choices)


def candidates(task: Task, sample: Sample, pools: dict[Optional[str], list[str]]) -> list[str]:
    """The answers a uniform guess draws from for ``sample`` (module docstring)."""
    if sample.choices:
        return option_candidates(task, sample)
    own = pools.get(sample.meta.get("qtype")) or []
    return own if len(own) > 1 else pools.get(None, [])  # one answer is no choice: the task's answers


def expected_item_score(task: Task, metric, sample: Sample, cands: Sequence[str]) -> float:
    """Mean score (percent) of ``sample`` over a uniform draw from ``cands`` (per-sample metric)."""
    scored = list(cands)
    if metric.name in ZERO_UNLESS_REFERENCE:  # the others score 0: score only the hits
        refs = {_norm(r) for r in sample.answers}
        scored = [c for c in cands if _norm(c) in refs]
    total = sum(metric.compute([task.parse(c, sample)], [sample])["score"] for c in scored)
    return total / len(cands)


def chance_score(task: Task, metric, samples: Sequence[Sample], pools: dict, seed: int) -> Optional[float]:
    """The task's chance floor (module docstring); None if an item has no candidate answer."""
    per_item = [candidates(task, s, pools) for s in samples]
    if not all(per_item):
        return None
    if metric.aggregation == "mean":
        return sum(expected_item_score(task, metric, s, c) for s, c in zip(samples, per_item)) / len(samples)
    rng = random.Random(f"floors/{task.name}/{seed}")  # str seeds are hashed with SHA-512: stable
    draws = [metric.compute([task.parse(rng.choice(c), s) for s, c in zip(samples, per_item)], list(samples))["score"]
             for _ in range(DRAWS)]
    return sum(draws) / DRAWS


def _span(values: set[int]) -> str:
    return f"{min(values)}" if len(values) == 1 else f"{min(values)}-{max(values)}"


def _how(task: Task, metric, samples: Sequence[Sample], pools: dict) -> str:
    """One line on what the chance floor drew from, for the reader of floors.json."""
    parts = []
    options = [s for s in samples if s.choices]
    if options:
        forms = sorted({"texts" if option_candidates(task, s) == list(s.choices) else "letters" for s in options})
        parts.append(f"{len(options)} items uniform over their {_span({len(s.choices) for s in options})} "
                     f"options ({', '.join(forms)})")
    open_ = [s for s in samples if not s.choices]
    if open_:
        sizes = {len(candidates(task, s, pools)) for s in open_}
        parts.append(f"{len(open_)} items uniform over the {_span(sizes)} distinct answers of their question type")
    how = "exact expectation" if metric.aggregation == "mean" else f"mean of {DRAWS} seeded draws (corpus metric)"
    return "; ".join(parts) + f"; {how}"


def task_floors(task_name: str, evaluated: Sequence[Sample], train: Optional[Sequence[Sample]] = None,
                seed: int = 0) -> dict:
    """The floors of one task on its ``evaluated`` samples; ``train``: its training split in the
    run (None or empty: the evaluated samples stand in, ``majority_from`` says so)."""
    import fedmllm.metrics  # noqa: F401  (registers the metrics)
    from fedmllm.data.registry import TASKS
    from fedmllm.metrics.base import METRICS

    if not evaluated:
        raise ValueError(f"floors: task {task_name!r} has no evaluated samples")
    task = TASKS.get(task_name)
    metric = METRICS.get(task.metric)
    source, source_name = (train, "train") if train else (evaluated, "test")
    answer, count = majority_answer(task, source)
    pools = answer_pools(task, source)
    majority = metric.compute([task.parse(answer, s) for s in evaluated], list(evaluated))["score"]
    chance = chance_score(task, metric, evaluated, pools, seed)
    out = {"chance": chance, "majority": float(majority), "majority_answer": answer, "n": len(evaluated),
           "metric": metric.name, "majority_from": source_name, "majority_share": count / len(source),
           "n_from": len(source)}
    if chance is None:
        out["chance_reason"] = "an evaluated item has no candidate answer (no options, no answers of its type)"
    else:
        out["chance_how"] = _how(task, metric, evaluated, pools)
    return out


def run_floors(data, seed: int) -> dict[str, dict]:
    """Floors of every task ``data`` (an `ExperimentData`) evaluates: the downstream tests (majority
    and answers from their training pools) and the upstream sets (from themselves)."""
    out = {t: {**task_floors(t, s, data.train.get(t), seed), "role": "downstream"} for t, s in data.test.items()}
    out.update({t: {**task_floors(t, s, None, seed), "role": "upstream"} for t, s in data.upstream.items()})
    return out


def ensure_floors(run_dir: Path, data, seed: int) -> dict[str, dict]:
    """``<run_dir>/floors.json``: read back when it exists (a resumed run), else computed from
    ``data`` and written atomically."""
    from fedmllm.runs import read_json, write_json

    path = Path(run_dir) / FILE
    if path.is_file():
        return read_json(path)
    floors = run_floors(data, seed)
    write_json(path, floors)
    return floors
