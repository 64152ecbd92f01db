"""A federated run attached to a Ray cluster (``federated.ray_address``): two raylets on this
machine's loopback, as README.md's "Ray cluster" section starts them.

The head is ``ray start --head --node-ip-address 127.0.0.1`` under Ray's single-machine switch, the
second node ``python -m simulations.ray_loopback start --address ...`` (`ray start` refuses it
under the switch), one CPU each, each with its own short temp dir; both run with ``--block``, so
every process of the cluster descends from this test and is stopped by PID (``ray stop`` would
stop every Ray of this user on the machine), also when the test fails. While the attached run
trains, a thread records the cluster's listening sockets (loopback only), the nodes the driver
sees alive (two) and which raylet each client actor runs under (one per node, both ran a client).
The result must equal the in-process engine's on the same config and seed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from fedmllm.config import load_config
from simulations.cli import main
from simulations.federated import run_federated
from simulations.ray_backend import SINGLE_MACHINE_ENV
from test_federated_ray import TINY, Poller, is_loopback

ROOT = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).with_name("ray")
OBJECT_STORE = 100 * 1024 * 1024  # bytes per node; Ray's default is 30% of the machine's memory
# Cluster vs in-process: the same float32 arithmetic on the same CPU with one torch thread, the
# same seeded init and data, the float64 mean in partition order; what may differ is only the
# order of float32 accumulations inside kernels, far below the ~1e-2 size of the adapter values.
ATOL = 1e-6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCluster:
    """A head and one worker node on 127.0.0.1, each ``--num-cpus 1`` with its own temp dir."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="frc_", dir="/tmp"))  # short: Ray's unix sockets
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.starters: list[subprocess.Popen] = []
        self.seen: dict[int, psutil.Process] = {}  # every process of the cluster, by pid

    def _start(self, name: str, argv: list[str], env: dict) -> None:
        log = open(self.root / f"{name}.log", "wb")
        common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                  "--temp-dir", str(self.root / name), "--object-store-memory", str(OBJECT_STORE),
                  "--disable-usage-stats"]
        proc = subprocess.Popen([*argv, *common], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        self.starters.append(proc)
        deadline = time.monotonic() + 90
        while b"Ray runtime started" not in (self.root / f"{name}.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`{' '.join(argv)}` did not start:\n"
                                   + (self.root / f"{name}.log").read_text(errors="replace")[-3000:])
            time.sleep(0.2)
        self.processes()

    def start(self) -> "LoopbackCluster":
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", SINGLE_MACHINE_ENV)}
        self._start("head", [str(RAY), "start", "--head", "--port", str(self.port), "--include-dashboard",
                             "false", "--ray-client-server-port", str(free_port())],
                    {**env, SINGLE_MACHINE_ENV: "0"})  # 127.0.0.1 stays the head's address
        self._start("node", [sys.executable, "-m", "simulations.ray_loopback", "start", "--address",
                             self.address, "--min-worker-port", "20002", "--max-worker-port", "29999"],
                    env)  # `ray start` gives every node 10002-19999 for its workers: disjoint ranges here
        return self

    def processes(self) -> list[psutil.Process]:
        """The live processes of the cluster (recorded in `seen` too)."""
        live = []
        for starter in self.starters:
            try:
                root = psutil.Process(starter.pid)
                live += [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
        for p in live:
            self.seen.setdefault(p.pid, p)
        return live

    def left(self) -> list[str]:
        """Processes of the cluster still running (zombies are gone)."""
        out = []
        for p in self.seen.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(f"{p.pid} {p.name()}")
            except psutil.Error:
                continue
        return out

    def stop(self) -> list[str]:
        """SIGTERM every process of the cluster, SIGKILL what is left after 5 s (the raylet and
        ``ray start --block`` may take longer); returns what survived both."""
        procs = list({p.pid: p for p in [*self.seen.values(), *self.processes()]}.values())
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        for starter in self.starters:
            starter.wait(timeout=5)
        left = self.left()
        shutil.rmtree(self.root, ignore_errors=True)
        return left


class Watch(Poller):
    """While the block runs: the listening sockets of the cluster and the new ones of this process
    (the driver), the most nodes the driver saw alive, and for each client actor the raylet it
    runs under and whether it ran a client (its title ends in ``.run`` while it does)."""

    def __init__(self, cluster: LoopbackCluster, interval: float = 0.25):
        super().__init__(interval)
        self.cluster = cluster
        self.listening: dict[tuple[str, int], str] = {}
        self.alive_nodes = 0
        self.actors: dict[int, tuple[int, bool]] = {}  # actor pid -> (raylet pid, ran a client)

    def poll(self) -> None:
        import ray

        for p in [psutil.Process(), *self.cluster.processes()]:
            try:
                name = p.name()
                for c in p.net_connections(kind="inet"):
                    addr = (c.laddr.ip, c.laddr.port)
                    if c.status == psutil.CONN_LISTEN and addr not in self._before:
                        self.listening.setdefault(addr, name)
                if name.startswith("ray::ClientAppActor"):
                    raylet = next(a.pid for a in p.parents() if a.name() == "raylet")
                    ran = self.actors.get(p.pid, (0, False))[1] or name.endswith(".run")
                    self.actors[p.pid] = (raylet, ran)
            except (psutil.Error, StopIteration):
                continue
        try:
            if ray.is_initialized():
                self.alive_nodes = max(self.alive_nodes, sum(n["Alive"] for n in ray.nodes()))
        except Exception:  # noqa: BLE001 - the driver connecting or shutting down
            pass


@pytest.fixture
def cluster():
    c = LoopbackCluster()
    try:
        start = time.perf_counter()
        c.start()
        print(f"cluster start: {time.perf_counter() - start:.1f} s")
        yield c
    finally:
        start = time.perf_counter()
        left = c.stop()
        print(f"cluster stop: {time.perf_counter() - start:.1f} s")
        assert not left, f"processes of the test's Ray cluster still running: {left}"


def adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapters" / "fedavg" / "round-002" / "adapter_model.safetensors"))


@pytest.mark.slow
def test_a_run_attached_to_a_two_node_loopback_cluster_equals_the_in_process_run(cluster, tmp_path, monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(SINGLE_MACHINE_ENV, raising=False)
    cfg = [*TINY, "federated.baselines=[]", "tracking=[]", "federated.eval_every=2", "federated.upstream_every=2",
           "federated.eval_personalized=false"]  # the training rounds, less evaluation
    start = time.perf_counter()
    with Watch(cluster) as watch:
        attached = run_federated(load_config(None, [*cfg, f"federated.ray_address={cluster.address}"]),
                                 str(tmp_path / "attached"))
    print(f"attached run: {time.perf_counter() - start:.1f} s")
    assert not ray.is_initialized() and SINGLE_MACHINE_ENV not in os.environ
    names = set(watch.listening.values())
    assert {"gcs_server", "raylet"} <= names, watch.listening  # the check saw the cluster
    assert not {a: n for a, n in watch.listening.items() if not is_loopback(a[0])}, watch.listening
    assert watch.alive_nodes == 2
    raylets = {raylet for raylet, _ in watch.actors.values()}
    assert len(raylets) == 2 and all(ran for _, ran in watch.actors.values()), watch.actors
    start = time.perf_counter()
    local = run_federated(load_config(None, [*cfg, "federated.backend=inprocess"]), str(tmp_path / "local"))
    print(f"in-process run: {time.perf_counter() - start:.1f} s")
    a, b = adapter(attached), adapter(local)
    assert set(a) == set(b)
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"max |attached - in-process| over the round-2 adapter: {diff:.3g}")
    assert diff <= ATOL


def test_an_address_without_a_cluster_is_one_line_exit_2_fast_and_starts_nothing(capsys, tmp_path, monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    port = free_port()  # nothing listens there
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    start = time.perf_counter()
    code = main(["federated", "--out", str(tmp_path / "out"), *TINY, f"federated.ray_address=127.0.0.1:{port}"])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in lines[0] and "ray start --head" in lines[0], lines[0]
    assert "clear federated.ray_address" in lines[0]
    assert seconds < 15, seconds
    assert not (tmp_path / "out").exists()
    assert not ray.is_initialized()
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children
