"""``fedmllm deploy local``: Flower's Deployment Engine on this machine, every address 127.0.0.1.

Flower's own processes only: one ``flower-superlink`` and N ``flower-supernode`` (node i holds
partition i: ``--node-config`` ``partition-id=i num-partitions=N fedmllm-experiment=<run dir>``),
then ``flwr run <project> <connection> --stream`` against that SuperLink. The ServerApp creates the
run directory (config.toml, meta.json, partition.json) before round 1, as in a simulation; the
SuperNodes serve that directory only (`fedmllm.federated.node_policy`). Ports are free ones chosen
at start. TLS and SuperNode authentication are on unless ``insecure``: a local CA and the
SuperLink's certificate (`simulations.certs`), each SuperNode's key registered with
``flwr supernode register`` before it starts. The SuperLink connection lives in a private
``FLWR_HOME`` (a temp folder, also holding the keys and every process's log; removed after a
successful run, kept and named after a failed one): the user's Flower config and pyproject.toml
are not touched. Every process started is stopped by PID at the end, on failure or Ctrl-C too.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import tomli_w

from fedmllm.errors import UserError
from server.run_config import ERROR_MARK
from simulations.certs import TlsFiles, check_tls, write_node_keys, write_tls

CONNECTION = "fedmllm-local"  # the SuperLink connection's name in the private Flower config
PROJECT = Path(__file__).resolve().parent.parent  # the Flower app: this project's pyproject.toml
START_TIMEOUT_S = 120.0
_RUN_ID = re.compile(r"Successfully started run (\d+)")
_QUIET = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "OMP_NUM_THREADS": "1",
          "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}  # one torch thread per process


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def executable(name: str) -> str:
    """A Flower command of this Python environment (else from PATH)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if not found:
        raise UserError(f"`{name}` not found beside {sys.executable} or on PATH; install flwr (pip install -e .)")
    return found


@dataclass
class Deployment:
    """Flower processes on 127.0.0.1 under ``work``; `stop` ends every one by PID."""

    work: Path
    tls: Optional[TlsFiles] = None  # None: insecure (no TLS, no SuperNode authentication)
    port: int = field(default_factory=free_port)
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def env(self, home: str) -> dict:
        """The environment of a Flower process with its own FLWR_HOME under ``work`` (and this
        environment's scripts first on PATH: Flower starts flower-superexec, flwr-serverapp, ... by name)."""
        (self.work / home).mkdir(parents=True, exist_ok=True)
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        return {**os.environ, **_QUIET, "FLWR_HOME": str(self.work / home), "PATH": path}

    def spawn(self, name: str, cmd: list[str], home: str) -> subprocess.Popen:
        """Start a process (its own session: Ctrl-C reaches this one, which stops it), log in ``work``."""
        with open(self.work / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env(home),
                                    start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def flwr(self, *args: str, timeout: float = 60.0) -> str:
        """One ``flwr`` command against this deployment's SuperLink; its stdout."""
        res = subprocess.run([executable("flwr"), *args], capture_output=True, text=True, timeout=timeout,
                             env=self.env("cli"), cwd=self.work)
        if res.returncode != 0:
            raise UserError(f"flwr {args[0]} {args[1] if len(args) > 1 else ''} failed: "
                            f"{_last_line(res.stdout + res.stderr)}")
        return res.stdout

    def start_superlink(self) -> None:
        """``flower-superlink`` on 127.0.0.1 (Fleet, Control and Runtime APIs on one port), and the
        SuperLink connection ``CONNECTION`` in the CLI's private Flower config."""
        cmd = [executable("flower-superlink"), "--host", "127.0.0.1", "--port", str(self.port),
               "--disable-runtime-dependency-installation"]  # this environment already has the app's packages
        conn: dict = {"address": f"127.0.0.1:{self.port}"}
        if self.tls is None:
            cmd.append("--insecure")
            conn["insecure"] = True
        else:
            cmd += ["--ssl-ca-certfile", str(self.tls.ca), "--ssl-certfile", str(self.tls.cert),
                    "--ssl-keyfile", str(self.tls.key), "--enable-supernode-auth"]
            conn["root-certificates"] = str(self.tls.ca)
        (self.work / "cli").mkdir(parents=True, exist_ok=True)
        (self.work / "cli" / "config.toml").write_text(tomli_w.dumps(
            {"superlink": {"default": CONNECTION, CONNECTION: conn}}))
        self.spawn("superlink", cmd, "superlink")
        self._wait(self._superlink_up, "the SuperLink did not start")

    def start_supernode(self, index: int, node_config: dict, private_key: Optional[Path]) -> None:
        """``flower-supernode`` ``index`` with ``node_config`` (written as TOML, flwr reads a file)."""
        cfg_file = self.work / f"node-{index}.toml"
        cfg_file.write_text(tomli_w.dumps(node_config))
        cmd = [executable("flower-supernode"), "--superlink", f"127.0.0.1:{self.port}", "--host", "127.0.0.1",
               "--port", str(free_port()), "--node-config", str(cfg_file)]
        if self.tls is None:
            cmd.append("--insecure")
        else:
            cmd += ["--root-certificates", str(self.tls.ca)]
        if private_key is not None:
            cmd += ["--auth-supernode-private-key", str(private_key)]
        self.spawn(f"supernode-{index}", cmd, f"node-{index}")

    def register(self, public_key: Path) -> None:
        """Register a SuperNode's public key (SuperNode authentication admits only registered nodes)."""
        self.flwr("supernode", "register", str(public_key), CONNECTION)

    def await_nodes(self, count: int) -> None:
        """Wait until ``count`` SuperNodes are online at the SuperLink."""
        def online() -> bool:
            nodes = json.loads(self.flwr("supernode", "ls", CONNECTION, "--format", "json")).get("nodes", [])
            return sum(n.get("status") == "online" for n in nodes) >= count
        self._wait(online, f"not all {count} SuperNodes came online")

    def run(self, app: Path, run_config: dict) -> tuple[str, str]:
        """``flwr run`` with ``run_config`` (a TOML file), its logs streamed to stdout; (status, error line)."""
        cfg_file = self.work / "run_config.toml"
        cfg_file.write_text(tomli_w.dumps(run_config))
        proc = subprocess.Popen([executable("flwr"), "run", str(app), CONNECTION, "--stream", "--run-config",
                                 str(cfg_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=self.env("cli"), cwd=self.work, start_new_session=True)
        self.procs.append(("flwr-run", proc))
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        run_id, error = None, ""
        while proc.poll() is None or not lines.empty():
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                self._check_alive()
                continue
            print(line, end="", flush=True)
            run_id = run_id or (m.group(1) if (m := _RUN_ID.search(line)) else None)
            error = error or (line.split(ERROR_MARK, 1)[1].strip() if ERROR_MARK in line else "")
        if run_id is None:
            raise UserError(f"flwr run did not start a run (exit {proc.returncode}); see {self.work}")
        return self._final_status(run_id), error

    def _final_status(self, run_id: str) -> str:
        for _ in range(60):  # the log stream can end a moment before the run's status does
            runs = json.loads(self.flwr("ls", CONNECTION, "--run-id", run_id, "--format", "json")).get("runs", [])
            status = str(runs[0].get("status", "")) if runs else ""
            if status.startswith("finished"):
                return status
            time.sleep(1.0)
        return status or "unknown"

    def _superlink_up(self) -> bool:
        import httpx

        scheme, verify = ("http", False) if self.tls is None else ("https", str(self.tls.ca))
        try:
            return httpx.get(f"{scheme}://127.0.0.1:{self.port}/health", verify=verify, timeout=1.0).is_success
        except httpx.HTTPError:
            return False

    def _check_alive(self) -> None:
        for name, proc in self.procs:
            if name != "flwr-run" and proc.poll() is not None:
                raise UserError(f"{name} exited (code {proc.returncode}): {_last_line(self.log(name))} "
                                f"(logs in {self.work})")

    def _wait(self, ready, what: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise UserError(f"{what} within {timeout:g} s; logs in {self.work}")
            time.sleep(0.5)

    def log(self, name: str) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def pids(self) -> list[int]:
        """Every live process of this deployment: those started here and whatever they started, found
        by their FLWR_HOME (under ``work``; children inherit it, orphans included)."""
        import psutil

        out = []
        for p in psutil.process_iter():
            try:
                home = p.environ().get("FLWR_HOME", "") if p.status() != psutil.STATUS_ZOMBIE else ""
            except psutil.Error:
                continue
            if home and Path(home).is_relative_to(self.work):
                out.append(p.pid)
        return out

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop every process by PID: the run client, the SuperNodes, the SuperLink (SIGTERM, then
        SIGKILL after ``grace_s``), then whatever they started that outlived them."""
        rank = {"flwr-run": 0, "superlink": 2}
        for _, proc in sorted(self.procs, key=lambda p: rank.get(p[0], 1)):
            if proc.poll() is None:  # not yet reaped, so its PID is still its own
                terminate([proc.pid], grace_s)
            proc.wait()  # reaped: a zombie parent would hide its exit from Flower's parent monitors
        terminate(self.pids(), grace_s)


def terminate(pids: list[int], grace_s: float) -> None:
    """SIGTERM each PID, SIGKILL what is left after ``grace_s``."""
    import psutil

    alive = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            p.terminate()
            alive.append(p)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(alive, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=grace_s)


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


@contextmanager
def _signals(handler, *signums: int):
    """``handler`` for ``signums`` inside the block (main thread only: elsewhere Python cannot set one)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, old in saved.items():
            signal.signal(s, old)


def _interrupt(signum, frame):
    """SIGTERM / SIGHUP end the run like Ctrl-C, so the processes are stopped."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _check_inputs(config: str, overrides: list[str], nodes: Optional[int], out: str, certs: Optional[str],
                  insecure: bool, app: Path) -> tuple[Path, int, Path, Optional[TlsFiles]]:
    """Everything checkable before a process starts: (config path, nodes, run directory, given TLS files)."""
    from fedmllm.config import load_config
    from fedmllm.runs import check_run_dir
    from simulations.federated import check_federated

    if nodes is not None and nodes < 1:
        raise UserError(f"--nodes must be >= 1 (one SuperNode per client), got {nodes}")
    if any(o.split("=", 1)[0].strip() == "federated.num_clients" for o in overrides):
        raise UserError("give the number of clients with --nodes (one SuperNode each), not federated.num_clients")
    if certs and insecure:
        raise UserError("--certs and --insecure exclude each other (insecure: no TLS)")
    tls = TlsFiles.in_folder(Path(certs).expanduser().resolve()) if certs else None
    if tls is not None:
        check_tls(tls)
    if not (app / "pyproject.toml").is_file():
        raise UserError(f"{app} has no pyproject.toml: run from a clone of fedmllm (the Flower app is its project)")
    run_dir = check_run_dir(Path(out).expanduser().resolve())
    cfg_path = Path(config).expanduser().resolve()
    nodes = nodes or load_config(cfg_path, overrides).federated.num_clients
    check_federated(load_config(cfg_path, [*overrides, f"federated.num_clients={nodes}"]))
    return cfg_path, nodes, run_dir, tls


def deploy_local(config: str, overrides: list[str], nodes: Optional[int], out: str, *, insecure: bool = False,
                 certs: Optional[str] = None, app: Path = PROJECT) -> Path:
    """Run the experiment of ``config`` on a SuperLink and ``nodes`` SuperNodes on 127.0.0.1
    (``federated.num_clients = nodes``, None: the config's); return the run directory. ``certs``: a folder with
    ``ca.pem``, ``superlink.pem``, ``superlink.key`` (default: made for this run)."""
    cfg_path, nodes, run_dir, tls = _check_inputs(config, overrides, nodes, out, certs, insecure, app)
    work = Path(tempfile.mkdtemp(prefix="fedmllm-deploy-"))
    dep, done = Deployment(work), False
    try:
        with _signals(_interrupt, signal.SIGTERM, signal.SIGHUP):
            if insecure:
                print("fedmllm deploy: --insecure: no TLS and no SuperNode authentication", flush=True)
            else:
                dep.tls = tls or write_tls(work / "tls")
            dep.start_superlink()
            print(f"SuperLink {'http' if insecure else 'https'}://127.0.0.1:{dep.port} "
                  f"({'insecure' if insecure else 'TLS, SuperNode authentication'}); work folder {work}", flush=True)
            keys = write_node_keys(work / "keys", nodes) if not insecure else [(None, None)] * nodes
            for i, (private, public) in enumerate(keys):
                if public is not None:
                    dep.register(public)
                dep.start_supernode(i, {"partition-id": i, "num-partitions": nodes,
                                        "fedmllm-experiment": str(run_dir)}, private)
            dep.await_nodes(nodes)
            print(f"{nodes} SuperNode(s) online; starting the run", flush=True)
            status, error = dep.run(app, {"config": str(cfg_path), "out": str(run_dir), "num-clients": nodes,
                                          "overrides": shlex.join(overrides)})
            if error:
                raise UserError(error)
            if not status.endswith("completed") or not (run_dir / "results.json").is_file():
                raise UserError(f"the run ended {status} without results.json in {run_dir}; logs in {work}")
            done = True
    finally:
        with _signals(signal.SIG_IGN, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a 2nd Ctrl-C must not cut it short
            dep.stop()
        if done:
            shutil.rmtree(work, ignore_errors=True)
    print(f"run directory: {run_dir}\nreport: {run_dir / 'report.md'}", flush=True)
    return run_dir


def write_certs(out: str, nodes: int) -> list[Path]:
    """TLS files and ``nodes`` SuperNode key pairs in ``out`` for a hand-started deployment."""
    if nodes < 0:
        raise UserError(f"--nodes must be >= 0, got {nodes}")
    folder = Path(out).expanduser()
    tls = write_tls(folder)
    keys = write_node_keys(folder, nodes)
    return [tls.ca, tls.cert, tls.key] + [p for pair in keys for p in pair]
