"""``fedmllm eval``: score a model, or a tuned adapter on its base (``--adapter DIR``), on tasks;
print a table, write ``scores.json`` and, beside it, ``predictions.jsonl``: one line per sample
(task, uid, question, raw and parsed prediction, references, the sample's score where the metric
is a per-sample mean), as lmms-eval's ``--log_samples``.

An adapter directory is what a run writes under ``<run>/adapters/`` (a method's ``save``:
``fedmllm_method.json`` beside the state). The run around it (the nearest folder above with
``config.toml`` and ``meta.json``) names the base model and gives the defaults: its config (data
sources, base seed, batch size), its test-set size and seed, and the tasks it scored the adapter
on, so that ``fedmllm eval --adapter DIR`` reproduces the run's tuned scores on the same samples.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Optional

from fedmllm.config import SEED_LIMIT, Config, load_config
from fedmllm.data.record import Sample
from fedmllm.data.suite import check_request, check_tasks, load_task
from fedmllm.errors import UserError
from fedmllm.experiment import TEST_SEED_OFFSET
from fedmllm.runs import atomic_write, check_writable, read_json, write_json

MAX_N = 10**6  # test samples per task, as config key data.test_n
SCORES, PREDICTIONS = "scores.json", "predictions.jsonl"
# without --adapter (or a run around it): the command line's defaults
DEFAULTS = {"model": "tiny-llava-ov", "tasks": ["synth-scienceqa", "synth-okvqa"], "n": 64, "batch_size": 32,
            "seed": 0}


@dataclass
class Adapter:
    """A saved tuning state (``path``) and what the run that wrote it says about it.

    Attributes:
        path: the adapter directory.
        method: the tuning method of its ``fedmllm_method.json``.
        run: the run directory around it (None: a folder on its own).
        config: that run's config.
        model: the base model the run tuned (None without a run).
        tasks: the tasks the run scored it on (a centralized cell's task; else data.downstream).
    """

    path: Path
    method: str
    run: Optional[Path] = None
    config: Optional[Config] = None
    model: Optional[str] = None
    tasks: list[str] = field(default_factory=list)

    def defaults(self) -> dict:
        """`DEFAULTS` as the run had them (test-set size and seed, batch size, model, tasks)."""
        if self.config is None:
            return {**DEFAULTS, "model": None}
        c = self.config
        return {"model": self.model, "tasks": self.tasks, "n": c.data.test_n, "batch_size": c.eval.batch_size,
                "seed": c.seed}


def find_adapter(path: str) -> Adapter:
    """The adapter directory ``path`` and its run; a `UserError` if it is not one."""
    from fedmllm.methods.base import METHOD_FILE

    p = Path(path)
    if not p.exists():
        raise UserError(f"--adapter {path}: no such directory")
    if not (p / METHOD_FILE).is_file():
        what = "a file" if p.is_file() else f"a folder without {METHOD_FILE}"
        raise UserError(f"--adapter {path} is {what}, not an adapter directory (runs write them under "
                        "<run>/adapters/)")
    info = read_json(p / METHOD_FILE)
    if not isinstance(info, dict) or not isinstance(info.get("method"), str):
        raise UserError(f"--adapter {path}: {METHOD_FILE} names no tuning method")
    adapter = Adapter(p, info["method"])
    for run in p.resolve().parents:
        if (run / "config.toml").is_file() and (run / "meta.json").is_file():
            _from_run(adapter, run)
            break
    return adapter


def _from_run(adapter: Adapter, run: Path) -> None:
    """Base model and tasks of ``adapter`` from its run: ``adapters/<model>/<method>/<task>``
    (centralized), ``adapters/<system>/large`` (collab: the large model), ``adapters/<system>/
    round-<r>`` (the run's model)."""
    parts = adapter.path.resolve().relative_to(run).parts
    if not parts or parts[0] != "adapters":
        return  # a folder inside a run, not one the run wrote
    cfg = load_config(run / "config.toml")
    kind = read_json(run / "meta.json").get("kind")
    adapter.run, adapter.config, adapter.tasks = run, cfg, list(cfg.data.downstream)
    if kind == "centralized" and len(parts) == 4:
        adapter.model = next((m for m in cfg.centralized.models if m.replace("/", "__") == parts[1]),
                             parts[1].replace("__", "/"))
        adapter.tasks = [parts[3]]
    elif kind == "collab" and parts[-1] == "large":
        adapter.model = cfg.collab.large
    else:
        adapter.model = cfg.model.name


def check_base(adapter: Adapter, model: Optional[str]) -> str:
    """The base model to load ``adapter`` on: ``model`` (--model), which must be its run's."""
    if adapter.model is None and model is None:
        raise UserError(f"--adapter {adapter.path} is not inside a run directory that names its base model; "
                        "give the base with --model")
    if model is not None and adapter.model is not None and not _same_model(model, adapter.model):
        raise UserError(f"--adapter {adapter.path} was tuned on {adapter.model!r} (its run {adapter.run}), "
                        f"not on --model {model!r}; drop --model or give {adapter.model!r}")
    return model or adapter.model


def _same_model(a: str, b: str) -> bool:
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


def load_adapter(model, adapter: Adapter, base: str):
    """``model`` (a freshly built ``base``) with the adapter applied and its state loaded
    (strict: `fedmllm.methods.load_method`), merged LoRA residuals added to the base weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from fedmllm.federated import lora
    from fedmllm.methods import METHODS
    from fedmllm.methods.base import base_method, load_method

    METHODS.get(base_method(adapter.method))  # an unknown method: the registry's message
    try:
        tuned, _, _ = load_method(model, adapter.path)
        residual = adapter.path / lora.RESIDUAL_FILE
        if residual.is_file():
            _add_residuals(tuned, load_file(str(residual)))
    except (ValueError, RuntimeError, OSError, SafetensorError) as e:
        why = " ".join(str(e).split())[:300]
        raise UserError(f"--adapter {adapter.path} does not load on {base!r}: {why}") from None
    return tuned


def _add_residuals(model, residuals: Mapping) -> None:
    """W = W0 + R for each LoRA layer a residual names (`fedmllm.federated.tuned`'s merge)."""
    import torch

    from fedmllm.federated.lora import RESIDUAL_SUFFIX
    from fedmllm.federated.tuned import base_weight

    with torch.no_grad():
        for key, r in residuals.items():
            weight = base_weight(model, key[: -len(RESIDUAL_SUFFIX)])
            if tuple(r.shape) != tuple(weight.shape):
                raise ValueError(f"residual {key!r} has shape {tuple(r.shape)}, the base weight {tuple(weight.shape)}")
            weight.add_(r.to(weight.device, weight.dtype))


def run_eval(cfg: Config, model: str, tasks: list[str], n: int, batch_size: int, seed: int, out: str,
             adapter: Optional[Adapter] = None) -> dict:
    """Score ``model`` (with ``adapter`` applied, if given) on ``n`` test samples of each task;
    writes ``scores.json`` and ``predictions.jsonl`` in ``out`` (only after everything loaded)."""
    from fedmllm.eval import evaluate
    from fedmllm.experiment import use_threads
    from fedmllm.models import build_model

    use_threads(cfg)
    if not tasks:
        raise UserError("--tasks is empty; name at least one task (fedmllm list shows them)")
    for flag, value, lo, hi in (("--n", n, 1, MAX_N), ("--batch-size", batch_size, 1, MAX_N),
                                ("--seed", seed, 0, SEED_LIMIT - 1)):
        if not lo <= value <= hi:
            raise UserError(f"{flag} must be in [{lo}, {hi:,}], got {value:,}")
    for name in (SCORES, PREDICTIONS):
        if (Path(out) / name).exists():
            raise UserError(f"{Path(out) / name} already exists; choose another --out (eval never overwrites scores)")
    check_writable(out)
    check_tasks(tasks)
    for t in tasks:
        check_request(t, "test", n, cfg.data, "--n")
    # an adapter's base is built as its run built it (the seed of a random init is the run's)
    base_seed = adapter.config.seed if adapter is not None and adapter.config is not None else seed
    bundle = build_model(model, pretrained=cfg.model.pretrained, seed=base_seed)
    net = bundle.model if adapter is None else load_adapter(bundle.model, adapter, model)
    sets = {t: load_task(t, "test", n, seed + TEST_SEED_OFFSET, cfg.data) for t in tasks}
    t0 = time.perf_counter()
    scores = evaluate(net, bundle.processor, sets, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    if adapter is not None:
        print(f"adapter {adapter.path}: {adapter.method} on {model}")
    _print_table(scores, seconds)
    result = {"model": model, "adapter": str(adapter.path) if adapter else None,
              "method": adapter.method if adapter else None, "n": n, "seed": seed, "seconds": round(seconds, 2),
              "scores": {t: {"metric": s.metric, "score": s.score, "n": s.n, "sub": s.scores} for t, s in scores.items()}}
    atomic_write(Path(out) / PREDICTIONS, "".join(json.dumps(r) + "\n" for r in sample_records(scores, sets)))
    write_json(Path(out) / SCORES, result)
    print(f"wrote {Path(out) / SCORES} and {PREDICTIONS} beside it")
    return result


def _print_table(scores: Mapping, seconds: float) -> None:
    width = max(len(t) for t in scores)
    print(f"{'task':<{width}}  {'metric':<13} {'n':>5}  score")
    for t, s in scores.items():
        print(f"{t:<{width}}  {s.metric:<13} {s.n:>5}  {s.score:6.2f}")
    print(f"{'mean':<{width}}  {'':<13} {'':>5}  {sum(s.score for s in scores.values()) / len(scores):6.2f}"
          f"   ({seconds:.1f} s)")


def sample_records(scores: Mapping, sets: Mapping[str, list[Sample]]) -> Iterator[dict]:
    """One record per scored sample: task, uid, question (and choices), raw and parsed prediction,
    references, and the sample's own score where the metric is a per-sample mean (the task's
    score is then the mean of these); corpus metrics (CIDEr-D, MME) score only whole sets."""
    import fedmllm.metrics  # noqa: F401  (registers the metrics)
    from fedmllm.data.registry import TASKS
    from fedmllm.metrics.base import METRICS

    for name, s in scores.items():
        metric = METRICS.get(TASKS.get(name).metric)
        for sample, raw, parsed in zip(sets[name], s.raw, s.predictions):
            record = {"task": name, "uid": sample.uid, "question": sample.question, "choices": sample.choices,
                      "raw": raw, "prediction": parsed, "references": sample.answers}
            if metric.aggregation == "mean":
                record["score"] = float(metric.compute([parsed], [sample])["score"])
            yield record
