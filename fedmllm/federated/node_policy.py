"""What a client node accepts from the server: its checks of every instruction before it loads anything.

A train or evaluate message names an experiment directory (`protocol.EXPERIMENT_DIR`) and a client
store (`protocol.CLIENT_STORE`); the experiment's ``config.toml`` then decides which model the client
builds and which local folders it reads. The node does not take that on trust. Its own settings
(Flower ``node_config``, e.g. ``flower-supernode --node-config "fedmllm-experiment='/runs/a'"``):

- ``fedmllm-experiment``: the one experiment directory this node serves; a message naming another
  directory is refused. Unset (simulation): the message's directory, if it passes the checks below.
- ``fedmllm-state-dir``: the node's client store (the message's is not used). Unset: the message's
  store must lie inside the experiment directory ("" = in memory).
- ``fedmllm-models``: comma-separated models the node may build (registry names, hub ids, local
  folders); a config asking for another is refused. Unset: any.
- ``fedmllm-data-root``: the folder every local data source of the config (``data.sources`` values
  that are paths) must lie in; a config reading a folder elsewhere is refused. Unset: anywhere.

Always: the experiment directory is a federated fedmllm run directory (``meta.json`` of kind
``federated``, see `fedmllm.runs`) whose ``config.toml`` hashes to the message's experiment id
(checked by `fedmllm.federated.client.client_runtime`). Paths are compared after resolving ``..``
and symbolic links. A refusal raises `InstructionRefusedError`; the ClientApp answers it with an
error reply whose reason is the message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from fedmllm.config import Config

EXPERIMENT = "fedmllm-experiment"
STATE_DIR = "fedmllm-state-dir"
MODELS = "fedmllm-models"
DATA_ROOT = "fedmllm-data-root"
PARTITION_ID = "partition-id"  # Flower's node-config key
RUN_KINDS = ("federated", "collab")  # meta.json "kind" of run directories clients may serve


class InstructionRefusedError(ValueError):
    """The node refuses an instruction: it asks for a directory, model or data the node does not serve."""


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _inside(path: str | Path, root: str | Path) -> bool:
    return _resolved(path).is_relative_to(_resolved(root))


def _same_model(a: str, b: str) -> bool:
    """Same name, or the same existing local folder however it is spelt."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


@dataclass(frozen=True)
class NodePolicy:
    """A node's settings that instructions are checked against (see the module docstring)."""

    experiment: str = ""
    state_dir: str = ""
    models: tuple[str, ...] = ()
    data_root: str = ""

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> "NodePolicy":
        models = str(node_config.get(MODELS, ""))
        return cls(experiment=str(node_config.get(EXPERIMENT, "")), state_dir=str(node_config.get(STATE_DIR, "")),
                   models=tuple(m.strip() for m in models.split(",") if m.strip()),
                   data_root=str(node_config.get(DATA_ROOT, "")))

    def experiment_dir(self, requested: Optional[str]) -> str:
        """The experiment directory to serve for a message naming ``requested`` (None: names none)."""
        if self.experiment:
            if requested and _resolved(requested) != _resolved(self.experiment):
                raise InstructionRefusedError(
                    f"experiment directory {requested!r} is not the one this node serves "
                    f"({EXPERIMENT} = {self.experiment!r})")
            chosen = self.experiment
        elif requested:
            chosen = requested
        else:
            raise InstructionRefusedError(f"the message names no experiment directory and the node has no {EXPERIMENT}")
        check_run_dir(chosen)
        return str(_resolved(chosen))

    def client_store(self, requested: str, experiment_dir: str) -> str:
        """The client store to use ("" = in memory): the node's own, else the message's if it lies
        inside ``experiment_dir``."""
        if self.state_dir:
            return self.state_dir
        if not requested:
            return ""
        if not _inside(requested, experiment_dir):
            raise InstructionRefusedError(f"client store {requested!r} is outside the experiment directory "
                                          f"{experiment_dir!r} (set {STATE_DIR} to keep client state elsewhere)")
        return str(_resolved(requested))

    def check_job(self, config: Mapping[str, Any]) -> None:
        """Refuse a pooled-baseline job (training on every partition's data) on a node configured
        for a deployment: such a node holds its own data; the pooled baseline trains on simulated
        nodes, or in the server."""
        from fedmllm.federated import protocol as P

        if config.get(P.POOLED) and self != NodePolicy():
            raise InstructionRefusedError("this node serves its own partition only (it has a node config of its "
                                          "own), not the pooled baseline's union of every partition; set "
                                          "federated.baseline_placement = \"server\"")

    def check_config(self, cfg: Config) -> None:
        """Refuse an experiment whose model or local data folders this node was not configured with."""
        if self.models and not any(_same_model(cfg.model.name, m) for m in self.models):
            raise InstructionRefusedError(f"model {cfg.model.name!r} is not one this node may build "
                                          f"({MODELS} = {', '.join(self.models)})")
        if self.data_root:
            from fedmllm.data.real.common import is_local

            for task, source in sorted(cfg.data.sources.items()):
                if is_local(str(source)) and not _inside(str(source), self.data_root):
                    raise InstructionRefusedError(f"data source {source!r} of task {task!r} is outside this node's "
                                                  f"data ({DATA_ROOT} = {self.data_root!r})")


def partition_id(node_config: Mapping[str, Any]) -> int:
    """The node's ``partition-id`` (Flower node config; a simulation sets it, a deployed SuperNode
    is given it with ``--node-config "partition-id=K num-partitions=N"``)."""
    raw = node_config.get(PARTITION_ID)
    if raw is None:
        raise InstructionRefusedError(f"this SuperNode has no {PARTITION_ID} in its node config: start it with "
                                      f'flower-supernode --node-config "{PARTITION_ID}=K num-partitions=N"')
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise InstructionRefusedError(f"this SuperNode's {PARTITION_ID} = {raw!r} is not an integer >= 0")
    return raw


def check_run_dir(path: str | Path) -> None:
    """Refuse anything but a federated fedmllm run directory (``config.toml`` and a ``meta.json``
    of kind ``federated``)."""
    root = Path(path)
    meta = root / "meta.json"
    if not (root / "config.toml").is_file() or not meta.is_file():
        raise InstructionRefusedError(f"{str(root)!r} is not a fedmllm run directory (no config.toml and meta.json)")
    try:
        kind = json.loads(meta.read_text()).get("kind")
    except (ValueError, AttributeError):
        kind = None
    if kind not in RUN_KINDS:
        raise InstructionRefusedError(f"{str(root)!r} is not a federated or collab run directory (meta.json kind {kind!r})")
