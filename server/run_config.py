"""``flwr run`` settings: Flower's run config (``[tool.flwr.app.config]``) mapped onto a fedmllm config.

The experiment is the TOML file ``config``; the typed keys override it where set (0 / "" keep the
file's value); ``overrides`` takes any other ``key=value`` pairs, as on the ``fedmllm`` command
line (space-separated, shell quoting), applied after the typed keys. Change them with ``flwr run . --run-config "k=v ..."``.

| run config | fedmllm config | type |
|---|---|---|
| ``num-server-rounds`` | ``federated.rounds`` | int |
| ``local-steps`` | ``federated.local_steps`` | int |
| ``num-clients`` | ``federated.num_clients`` (= the federation's SuperNodes) | int |
| ``strategies`` | ``federated.strategies`` (comma-separated) | str |
| ``lr`` | ``train.lr`` | float |
| ``mode`` | ``federated`` (strategies) or ``collab`` (large-small collaboration, ``[collab]``) | str |

A relative ``config`` is read from the app's folder (the project root, or the copy of it Flower
installs from the app bundle), not from the working directory, which is whatever folder the
SuperLink was started in. ``out`` (the run directory; "" = ``runs/flwr-<timestamp>``) is relative to
that working directory: give an absolute path.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any, Mapping

from fedmllm.config import Config, load_config
from fedmllm.errors import UserError

APP_DIR = Path(__file__).resolve().parent.parent
ERROR_MARK = "fedmllm: error: "  # starts the one line a failed `flwr run` logs (simulations.deploy reads it)
DEFAULT_CONFIG = "configs/federated/embedded.toml"
TYPED: dict[str, tuple[str, type]] = {
    "num-server-rounds": ("federated.rounds", int),
    "local-steps": ("federated.local_steps", int),
    "num-clients": ("federated.num_clients", int),
    "strategies": ("federated.strategies", str),
    "lr": ("train.lr", float),
}


def typed_overrides(run_config: Mapping[str, Any]) -> list[str]:
    """``key=value`` overrides of the typed keys that are set (not 0 / "")."""
    out = []
    for key, (target, kind) in TYPED.items():
        raw = run_config.get(key, kind())
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            raise UserError(f"run config {key} = {raw!r} is not {'an' if kind is int else 'a'} {kind.__name__} "
                            f"(it sets {target}; 0 or \"\" keeps the config file's value)") from None
        if not value:
            continue
        if kind is str:
            names = [s.strip() for s in value.split(",") if s.strip()]
            out.append(f"{target}={json.dumps(names)}")  # a TOML list of strings
        else:
            out.append(f"{target}={value!r}")
    return out


def config_path(run_config: Mapping[str, Any]) -> Path:
    """The experiment TOML: absolute, or relative to the app's folder."""
    path = Path(str(run_config.get("config", "") or DEFAULT_CONFIG)).expanduser()
    return path if path.is_absolute() else APP_DIR / path


MODES = ("federated", "collab")


def run_mode(run_config: Mapping[str, Any]) -> str:
    """``federated`` (default) or ``collab``: which experiment the ServerApp runs."""
    mode = str(run_config.get("mode", "") or "federated")
    if mode not in MODES:
        raise UserError(f"run config mode = {mode!r}; valid: {', '.join(MODES)}")
    return mode


def from_run_config(run_config: Mapping[str, Any]) -> tuple[Config, Path]:
    """The resolved config and the run directory (created here, or reopened to resume it); in
    ``mode = "collab"`` the collaboration config is validated first (`simulations.collab`)."""
    from fedmllm.federated.experiment import resolve_strategy_options
    from fedmllm.runs import RunDir

    try:
        extra = shlex.split(str(run_config.get("overrides", "")))
    except ValueError as e:
        raise UserError(f"run config overrides: {e} (space-separated key=value pairs)") from None
    mode = run_mode(run_config)
    cfg = load_config(config_path(run_config), typed_overrides(run_config) + extra)
    if mode == "collab":
        from simulations.collab import check_collab

        check_collab(cfg)
    cfg = resolve_strategy_options(cfg)
    out = Path(str(run_config.get("out", "")) or f"runs/flwr-{time.strftime('%Y%m%d-%H%M%S')}").expanduser().resolve()
    resume = (out / "config.toml").is_file()
    return cfg, RunDir.create(out, cfg, mode, resume=resume).path
