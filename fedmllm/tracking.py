"""Live tracking: every event of a run, as scalars, to TensorBoard and (optionally) MLflow.

`fedmllm.runs.RunDir.log` writes each event to ``metrics.jsonl`` (the record) and hands it to the
run's trackers, chosen by the top-level config key ``tracking`` (default ``["tensorboard"]``,
``[]``: off). A tracker is one `TRACKERS` entry: ``tensorboard`` writes event files under
``<run>/tb/`` (`torch.utils.tensorboard.SummaryWriter`), ``mlflow`` logs to a local MLflow file
store ``file://<run>/mlruns`` (the ``mlflow`` extra). Trackers are opened at a run directory's
first event, flushed after every event (a live ``tensorboard --logdir runs/`` sees each round as
it ends) and closed with `RunDir.close` (or, as a fallback, when the `RunDir` is collected or the
process exits). A resumed run appends to the same ``tb/`` folder and the same MLflow run.

`EventScalars` maps an event to `Scalar` (tag, value, step) with stable tags; numbers only (lists
and matrices are skipped), step = the event's ``round`` (0 where it has none):

* ``<system>/downstream/<task>``, ``<system>/downstream_mean``, ``<system>/upstream/<task>``,
  ``<system>/upstream_mean``, ``<system>/E/<task>``, ``<system>/E_mean``, ``<system>/F``,
  ``<system>/divergence_from_pooled`` ... (``global_eval``);
* ``<system>/bytes_up``, ``<system>/bytes_down``, ``<system>/clients``, ``<system>/failed``,
  ``<system>/seconds``, ``<system>/lora_aggregation_error_rel``, ``<system>/drift/<measure>``
  (``round``), and ``<system>/train_loss``: the mean over the round's clients of their
  ``client_train`` losses, logged with the round event;
* ``<system>/client_<k>/train_loss`` (``client_train``), ``<system>/client_<k>/failed``
  (``client_failed``);
* ``<system>/personalized/{mean_weighted,mean_unweighted,worst,std,p10}`` and
  ``<system>/personalized/client_<k>/score`` (``personalized_eval``);
* ``<system>/final/{E,F,O}`` at step 0 (``system_done``);
* ``zeroshot/downstream/<task>``, ``zeroshot/upstream/<task>``, ``zeroshot/downstream_mean``
  (federated ``zeroshot``); ``<model>/zeroshot/<task>`` (centralized ``zeroshot``);
* ``<model>/<method>/<task>/{tuned_score,E,F,O}`` at step 0 (centralized ``cell``);
* an event of any other kind: its numbers under ``<system>/`` (or ``<event>/``).

Differential privacy hook: any numeric field named ``epsilon``, at any depth of any event, is
logged (``<system>/epsilon``, ``<system>/client_<k>/epsilon``, ``<system>/<path>/epsilon``), so an
accountant only has to put ``epsilon`` into the events it already logs.

Tag components are sanitized for both backends (characters outside ``[A-Za-z0-9_.-]`` become
``_``; a hub model id ``org/name`` becomes ``org__name``). This module imports neither torch's
TensorBoard writer nor mlflow until a tracker is opened.
"""

from __future__ import annotations

import importlib.util
import numbers
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

from fedmllm.errors import UserError
from fedmllm.registry import Registry

if TYPE_CHECKING:
    from fedmllm.config import Config


@dataclass(frozen=True)
class Scalar:
    """One value of one tag at one step."""

    tag: str
    value: float
    step: int


class Tracker:
    """A backend: receives each event's scalars, flushed after each event, closed once."""

    def log(self, scalars: Sequence[Scalar]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def close(self, status: Optional[str] = None) -> None:
        """``status``: FINISHED or FAILED when the run ended so, None when unknown (fallback)."""


@dataclass(frozen=True)
class TrackerSpec:
    """A registered backend: the module it needs, how to install it, and how to open it."""

    name: str
    module: str
    install: str
    open: Callable[[Path, "Config"], Tracker]

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


TRACKERS: Registry[TrackerSpec] = Registry("tracker")


# --- event -> scalars ----------------------------------------------------------------------------
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_META = {"event", "system", "round", "client", "end_time"}  # identify an event, not measure it


def part(name: Any) -> str:
    """One tag component: ``org/model`` -> ``org__model``, other unsafe characters -> ``_``."""
    return _UNSAFE.sub("_", str(name).replace("/", "__")) or "_"


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _numbers(obj: dict, prefix: str, skip: Iterable[str] = ()) -> Iterable[tuple[str, float]]:
    """(tag, value) of every number in ``obj``, nested dicts as ``prefix/key/subkey``."""
    skip = set(skip)
    for key, value in obj.items():
        if key in skip:
            continue
        tag = f"{prefix}/{part(key)}" if prefix else part(key)
        if _number(value):
            yield tag, float(value)
        elif isinstance(value, dict):
            yield from _numbers(value, tag)


def _epsilons(obj: Any, prefix: str) -> Iterable[tuple[str, float]]:
    """The differential-privacy hook: every numeric ``epsilon`` field at any depth."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            tag = f"{prefix}/{part(key)}" if prefix else part(key)
            if key == "epsilon" and _number(value):
                yield tag, float(value)
            elif isinstance(value, (dict, list)):
                yield from _epsilons(value, tag)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _epsilons(value, f"{prefix}/{i}")


def _mean(values: Iterable[Any]) -> Optional[float]:
    nums = [float(v) for v in values if _number(v)]
    return sum(nums) / len(nums) if nums else None


class EventScalars:
    """Maps events to scalars (see the module docstring for the tags). Keeps the ``client_train``
    losses of a round until its ``round`` event, which carries their mean."""

    def __init__(self) -> None:
        self._losses: dict[tuple[str, int], list[float]] = {}

    def __call__(self, event: dict) -> list[Scalar]:
        kind = str(event.get("event", "event"))
        step = int(event["round"]) if _number(event.get("round")) else 0
        system = part(event["system"]) if event.get("system") is not None else None
        ns = system or part(kind)
        out: dict[str, Scalar] = {}

        def put(tag: str, value: Optional[float], at: int = step) -> None:
            if value is not None:
                out[tag] = Scalar(tag, float(value), at)

        base = ns
        if kind == "client_train":
            base = f"{ns}/client_{part(event.get('client'))}"
            if _number(event.get("train_loss")):
                put(f"{base}/train_loss", event["train_loss"])
                self._losses.setdefault((ns, step), []).append(float(event["train_loss"]))
        elif kind == "client_failed":
            base = f"{ns}/client_{part(event.get('client'))}"
            put(f"{base}/failed", 1.0)
        elif kind == "round":
            for tag, value in _numbers(event, ns, skip=_META):
                put(tag, value)
            losses = self._losses.pop((ns, step), None)
            if losses:
                put(f"{ns}/train_loss", sum(losses) / len(losses))
        elif kind == "global_eval":
            for tag, value in _numbers(event, ns, skip=_META):
                put(tag, value)
            for key in ("downstream", "upstream", "E"):
                if isinstance(event.get(key), dict):
                    put(f"{ns}/{key}_mean", _mean(event[key].values()))
        elif kind == "personalized_eval":
            base = f"{ns}/personalized"
            for tag, value in _numbers(event, base, skip=_META | {"clients", "worst_client", "failed"}):
                put(tag, value)
            for k, c in (event.get("clients") or {}).items():
                if isinstance(c, dict) and _number(c.get("score")):
                    put(f"{base}/client_{part(k)}/score", c["score"])
        elif kind == "system_done":
            base = f"{ns}/final"
            for tag, value in _numbers(event, base, skip=_META):
                put(tag, value, 0)
        elif kind == "cell":
            base = "/".join(part(event.get(k)) for k in ("model", "method", "task"))
            for tag, value in _numbers(event, base, skip=_META | {"model", "method", "task"}):
                put(tag, value, 0)
        elif kind == "zeroshot":
            if "model" in event:  # centralized: {model, scores}
                base = f"{part(event['model'])}/zeroshot"
                for tag, value in _numbers(event.get("scores") or {}, base):
                    put(tag, value, 0)
            else:  # federated: {downstream, upstream}
                base = "zeroshot"
                for tag, value in _numbers(event, base, skip=_META):
                    put(tag, value, 0)
                if isinstance(event.get("downstream"), dict):
                    put(f"{base}/downstream_mean", _mean(event["downstream"].values()), 0)
        elif kind in ("partition", "node_partitions"):
            pass  # describe the set-up or the process, not the experiment's progress
        else:
            for tag, value in _numbers(event, ns, skip=_META):
                put(tag, value)
        for tag, value in _epsilons({k: v for k, v in event.items() if k not in _META}, base):
            if tag not in out:
                put(tag, value)
        return list(out.values())


# --- backends ------------------------------------------------------------------------------------
class TensorBoardTracker(Tracker):
    """Event files under ``<run>/tb/`` (``tensorboard --logdir``); the resolved config as text."""

    def __init__(self, run_path: Path, cfg: "Config"):
        from torch.utils.tensorboard import SummaryWriter

        from fedmllm.config import dumps

        folder = run_path / "tb"
        new = not folder.exists()
        self.writer = SummaryWriter(log_dir=str(folder), max_queue=1000, flush_secs=30)
        if new:
            self.writer.add_text("config", "```toml\n" + dumps(cfg) + "```", global_step=0)

    def log(self, scalars: Sequence[Scalar]) -> None:
        for s in scalars:
            self.writer.add_scalar(s.tag, s.value, global_step=s.step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, status: Optional[str] = None) -> None:
        self.writer.close()


class MlflowTracker(Tracker):
    """One MLflow run in the local file store ``file://<run>/mlruns`` (experiment ``fedmllm``);
    a resumed run directory continues its MLflow run. Params: the flattened resolved config."""

    EXPERIMENT = "fedmllm"

    def __init__(self, run_path: Path, cfg: "Config"):
        # recent MLflow (3.17) refuses a file store unless asked; and no usage telemetry from a simulator
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=(run_path / "mlruns").resolve().as_uri())
        exp = self.client.get_experiment_by_name(self.EXPERIMENT)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(self.EXPERIMENT)
        runs = self.client.search_runs([exp_id], max_results=1, order_by=["attributes.start_time ASC"])
        if runs:
            self.run_id = runs[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(exp_id, run_name=run_path.name,
                                         tags={"fedmllm.run_dir": str(run_path.resolve())})
            self.run_id = run.info.run_id
            self._log_params(cfg)

    def _log_params(self, cfg: "Config") -> None:
        from mlflow.entities import Param

        from fedmllm.config import to_dict

        def flat(d: dict, prefix: str = "") -> Iterable[tuple[str, Any]]:
            for k, v in d.items():
                if isinstance(v, dict) and v and k not in ("methods", "strategy_options", "sources", "steps"):
                    yield from flat(v, f"{prefix}{k}.")
                else:
                    yield f"{prefix}{k}", v

        params = [Param(part(k), str(v)[:500]) for k, v in flat(to_dict(cfg))]
        for i in range(0, len(params), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, scalars: Sequence[Scalar]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(s.tag, s.value, now, s.step) for s in scalars]
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def close(self, status: Optional[str] = None) -> None:
        if status is not None:
            self.client.set_terminated(self.run_id, status)


TRACKERS.register("tensorboard", TrackerSpec("tensorboard", "tensorboard", "pip install tensorboard",
                                             TensorBoardTracker))
TRACKERS.register("mlflow", TrackerSpec("mlflow", "mlflow", "pip install -e '.[mlflow]' (or pip install mlflow)",
                                        MlflowTracker))


# --- config checks and the run's set of trackers ---------------------------------------------------
def check_names(names: Sequence[Any]) -> None:
    """Every name is a registered tracker (the config's validation): one-line `UserError`."""
    for name in names:
        if not isinstance(name, str) or name not in TRACKERS:
            raise UserError(f"config key 'tracking': {TRACKERS.unknown_message(name)}")


def check_available(names: Sequence[str]) -> None:
    """Every requested tracker's package is installed (before a run directory is created)."""
    check_names(names)
    for name in names:
        spec = TRACKERS.get(name)
        if not spec.available():
            raise UserError(f"tracking = {list(names)!r} needs the {spec.module!r} package, which is not "
                            f"installed: {spec.install}, or drop {name!r} from tracking")


class Tracking:
    """The trackers of one run directory: each event mapped once, sent to every backend, flushed.
    A backend that fails is reported once on stderr and dropped; ``metrics.jsonl`` stays the record."""

    def __init__(self, run_path: Path, cfg: "Config"):
        self.map = EventScalars()
        self.trackers: dict[str, Tracker] = {}
        for name in cfg.tracking:
            try:
                self.trackers[name] = TRACKERS.get(name).open(run_path, cfg)
            except Exception as e:  # noqa: BLE001 - tracking is a view; the run goes on
                self._drop(name, "could not be opened", e)

    def _drop(self, name: str, what: str, err: BaseException) -> None:
        print(f"fedmllm: tracker {name!r} {what} and is off for this run: {type(err).__name__}: {err}",
              file=sys.stderr, flush=True)
        self.trackers.pop(name, None)

    def log(self, event: dict) -> None:
        scalars = self.map(event)
        for name, tracker in list(self.trackers.items()):
            try:
                if scalars:
                    tracker.log(scalars)
                tracker.flush()
            except Exception as e:  # noqa: BLE001
                self._drop(name, "failed", e)
                _close_quietly(tracker, None)

    def close(self, status: Optional[str] = None) -> None:
        trackers, self.trackers = self.trackers, {}
        for tracker in trackers.values():
            _close_quietly(tracker, status)


def _close_quietly(tracker: Tracker, status: Optional[str]) -> None:
    try:
        tracker.close(status)
    except Exception:  # noqa: BLE001 - closing at exit must not raise
        pass


__all__ = ["Scalar", "Tracker", "TrackerSpec", "TRACKERS", "EventScalars", "Tracking", "check_names",
           "check_available", "part"]
