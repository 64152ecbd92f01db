"""Where a federated run's Ray comes from: a cluster it attaches to, or a local one on loopback.

Without a cluster address (``federated.ray_address``, else ``$RAY_ADDRESS``) a run starts its own
Ray whose every listening socket (GCS, raylet and object manager, workers, runtime-env and
dashboard agents, metrics export) is bound to 127.0.0.1, with its files and unix sockets inside a
fresh private (0700) temp dir that is removed after the run, also when it fails (Ray makes its
own temp dir world-writable, so it gets a folder inside the private one). With an address
the run only attaches: bind addresses, object store and temp dir are the cluster's own; an address
that does not answer a TCP connect within seconds is a `UserError` (ray.init would retry for half
a minute), and a loopback address attaches with the single-machine switch below (else ray.init
would look for the cluster at the machine's address).

Ray 2.55 binds its servers to 127.0.0.1 only when the node IP is 127.0.0.1, and ``ray.init`` turns
a node IP of 127.0.0.1 into the machine's address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is
0 (Ray's single-machine switch; `ray._private.services.resolve_ip_for_localhost`). The switch is
set for the run only: in the environment (read by the Ray processes the run starts) and, when Ray
was imported earlier in this process, on the constant it was read into.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from typing import Iterator

from fedmllm.config import Config
from fedmllm.errors import UserError

LOOPBACK = "127.0.0.1"
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": node IP 127.0.0.1 stays 127.0.0.1
TEMP_PREFIX = "fedmllm_ray_"
# Ray's deepest unix socket is <root>/fedmllm_ray_XXXXXXXX/ray/session_<date>_<time>_<us>_<pid>/
# sockets/plasma_store, up to 91 characters below <root>; a socket path must stay under 108 bytes.
MAX_TEMP_ROOT = 16
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")  # what Ray's resolve_ip_for_localhost rewrites
CONNECT_TIMEOUT_S = 3.0


def ray_address(cfg: Config) -> str:
    """The cluster a run attaches to: ``federated.ray_address``, else ``$RAY_ADDRESS``; "" (or
    ``"local"``) = start a local Ray."""
    address = cfg.federated.ray_address or os.environ.get("RAY_ADDRESS", "")
    return "" if address == "local" else address


def backend_config(cfg: Config, temp_dir: str = "") -> dict:
    """Flower's Ray backend config: attach to `ray_address`, or start a local Ray on loopback
    with its files under ``temp_dir`` (one CPU-sized actor per client either way)."""
    fed = cfg.federated
    address = ray_address(cfg)
    if address:  # ray.init refuses object store, temp dir and node settings when attaching
        init_args: dict = {"address": address}
    else:  # "local": never attach to $RAY_ADDRESS or a cluster started with `ray start`
        init_args = {"address": "local", "_node_ip_address": LOOPBACK, "_temp_dir": temp_dir,
                     "object_store_memory": fed.object_store_mb * 1024 * 1024, "include_dashboard": False}
    return {"client_resources": {"num_cpus": fed.num_cpus_per_client, "num_gpus": fed.num_gpus_per_client},
            "init_args": init_args}


def split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a ``host:port`` cluster address (IPv6 in brackets); None for ``auto`` and
    other forms Ray resolves itself."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host or "/" in host:
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """`UserError` unless something accepts a TCP connection at the cluster ``address`` (Ray's
    GCS port) within ``timeout`` seconds."""
    parts = split_address(address)
    if parts is None:
        return
    try:
        socket.create_connection(parts, timeout=timeout).close()
    except OSError as err:
        switch = f"{SINGLE_MACHINE_ENV}=0 " if parts[0] in LOOPBACK_HOSTS else ""
        raise UserError(f"no Ray cluster answers at {address} ({err.strerror or err}): start one with "
                        f"`{switch}ray start --head --node-ip-address {parts[0]} --port {parts[1]}` (README.md, "
                        "\"Ray cluster\") or clear federated.ray_address (and $RAY_ADDRESS)") from None


def private_temp_dir() -> str:
    """A new 0700 folder for one run's Ray files, short enough for Ray's unix sockets (a long
    ``$TMPDIR``, as on macOS, gives way to /tmp)."""
    root = tempfile.gettempdir()
    if len(root) > MAX_TEMP_ROOT and os.path.isdir("/tmp"):
        root = "/tmp"
    return tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root)


@contextmanager
def _single_machine_switch() -> Iterator[None]:
    """Ray's single-machine switch on for the block, in the environment and in this process."""
    saved_env = os.environ.get(SINGLE_MACHINE_ENV)
    os.environ[SINGLE_MACHINE_ENV] = "0"
    constants = sys.modules.get("ray._private.ray_constants")  # imported before: the env was read
    saved_flag = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if constants is not None:
            constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = saved_env


def _shutdown_ray() -> None:
    """Disconnect (and, for a local Ray, stop) what a failed run may have left running."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@contextmanager
def ray_session(cfg: Config) -> Iterator[dict]:
    """The backend config of one Ray simulation, valid for the block: a local Ray gets its
    private temp dir (removed at the end) and the loopback switch; Ray is shut down at the end."""
    address = ray_address(cfg)
    if address:
        check_reachable(address)
        print(f"attaching to the Ray cluster at {address}", flush=True)
        loopback = (split_address(address) or ("",))[0] in LOOPBACK_HOSTS
        with _single_machine_switch() if loopback else nullcontext():
            try:
                yield backend_config(cfg)
            finally:
                _shutdown_ray()
        return
    temp = private_temp_dir()
    try:
        with _single_machine_switch():
            try:
                yield backend_config(cfg, os.path.join(temp, "ray"))
            finally:
                _shutdown_ray()  # before its sockets and session files go
    finally:
        _remove(temp)


def _remove(folder: str, tries: int = 5) -> None:
    """Remove ``folder``, retrying while Ray processes that are still exiting write their last logs."""
    for _ in range(tries):
        shutil.rmtree(folder, ignore_errors=True)
        if not os.path.exists(folder):
            return
        time.sleep(0.5)
