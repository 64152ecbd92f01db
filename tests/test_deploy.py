"""The Deployment Engine on loopback: ``fedmllm deploy local`` (one SuperLink + N SuperNodes on
127.0.0.1, TLS and SuperNode authentication on) gives the simulation's result; a SuperNode's
partition id is checked before round 1; bad input is one line, exit 2, nothing left running.
Every process a test starts is found by its FLWR_HOME (a private folder) and stopped by PID."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from flower_procs import BIN, ROOT, base_env, flower_root, marked
from safetensors.numpy import load_file

from fedmllm.errors import UserError
from server.federation import await_federation
from server.inprocess import InProcessGrid
from server.strategy import GridTransport
from simulations.certs import TlsFiles, check_tls, write_node_keys, write_tls

CONFIG = ROOT / "configs" / "federated" / "embedded.toml"
TINY = ["federated.rounds=2", "federated.local_steps=2", 'federated.strategies=["fedavg"]', "data.train_n=8",
        "data.test_n=4", "data.upstream_n=4", "federated.upstream_n=2", "train.batch_size=4",
        "federated.baselines=[]", "tracking=[]", "federated.eval_personalized=false"]
NO_PARTITION = {"num-partitions": 1}


# --- certificates and keys -------------------------------------------------------------------

def test_local_tls_files_check_and_mismatches_are_refused(tmp_path):
    good = write_tls(tmp_path / "a")
    check_tls(good)
    other = write_tls(tmp_path / "b")
    for files, message in [(TlsFiles(good.ca, good.cert, other.key), "does not belong to the certificate"),
                           (TlsFiles(other.ca, good.cert, good.key), "is not issued by the CA"),
                           (TlsFiles(good.ca, tmp_path / "none.pem", good.key), "does not exist"),
                           (TlsFiles(good.ca, good.key, good.key), "is not a PEM certificate")]:
        with pytest.raises(UserError, match=message):
            check_tls(files)
    (private, public), = write_node_keys(tmp_path / "keys", 1)
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ")  # what `flwr supernode register` reads
    assert private.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


# --- the federation check before round 1 (in process) ------------------------------------------

def _grid(node_configs: list[dict]) -> InProcessGrid:
    from clients.app import app

    grid = InProcessGrid(app, len(node_configs))
    for context, node_config in zip(grid.contexts.values(), node_configs):
        context.node_config = node_config
    return grid


@pytest.mark.parametrize("node_configs, num_clients, message", [
    ([NO_PARTITION], 1, "did not give its partition id: .*no partition-id in its node config"),
    ([{"partition-id": 0}, {"partition-id": 2}], 2, "has partition-id 2, outside 0..1"),
    ([{"partition-id": 0}, {"partition-id": 0}], 2, "partition-id 0 is held by SuperNodes"),
    ([{"partition-id": 0}], 2, "federated.num_clients = 2 but 1 SuperNode.*num-supernodes=2"),
])
def test_the_federation_is_checked_before_round_one(task_identity, node_configs, num_clients, message):
    with pytest.raises(UserError, match=message):
        await_federation(GridTransport(_grid(node_configs)), num_clients, wait_s=0.5, poll_s=0.1)


def test_a_complete_federation_passes(task_identity):
    transport = GridTransport(_grid([{"partition-id": 1}, {"partition-id": 0}]))
    await_federation(transport, 2, wait_s=0.5, poll_s=0.1)
    assert sorted(transport.nodes_by_partition()) == [0, 1]


# --- processes ---------------------------------------------------------------------------------

def _start(root, *args: str) -> subprocess.Popen:
    """``fedmllm deploy`` with TMPDIR = ``root`` (its work folder, and so every FLWR_HOME, lies there)."""
    return subprocess.Popen([str(BIN / "fedmllm"), "deploy", *args], env=base_env(TMPDIR=str(root)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:  # timed out or interrupted: SIGTERM makes it stop its processes
            proc.terminate()
            proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_bad_input_is_one_line_exit_2_and_starts_nothing(tmp_path):
    good, other = write_tls(tmp_path / "good"), write_tls(tmp_path / "other")
    other.key.replace(good.key)  # superlink.key of another certificate
    write_tls(tmp_path / "missing").cert.unlink()
    cases = {"--nodes must be >= 1": ["--nodes", "0"],
             "does not belong to the certificate": ["--certs", str(tmp_path / "good")],
             "does not exist": ["--certs", str(tmp_path / "missing")],
             "exclude each other": ["--insecure", "--certs", str(tmp_path / "good")]}
    with flower_root() as root:
        procs = {message: _start(root, "local", "--out", str(tmp_path / "run"), *args, *TINY)
                 for message, args in cases.items()}
        for message, proc in procs.items():
            res = _finish(proc, timeout=120)
            assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
            assert res.stderr.startswith("fedmllm deploy: error: ") and message in res.stderr, res.stderr
            assert "Traceback" not in res.stdout + res.stderr
        assert not (tmp_path / "run").exists() and list(root.iterdir()) == [] and marked(root) == []


@pytest.mark.slow
def test_deploy_local_with_tls_and_node_auth_equals_the_simulation(tmp_path):
    """2 SuperNodes, 2 rounds on loopback = the in-process simulation of the same config and seed:
    the same split, results and (to 1e-6, float32 rounding across process set-ups) final adapter."""
    from fedmllm.config import load_config
    from simulations.federated import run_federated

    out = tmp_path / "deploy"
    with flower_root() as root:
        proc = _start(root, "local", "--nodes", "2", "--config", str(CONFIG), "--out", str(out), *TINY)
        try:  # the reference meanwhile: the deployment mostly waits (process starts, Flower's 3 s polls)
            ref = run_federated(load_config(CONFIG, [*TINY, "federated.num_clients=2", "federated.backend=inprocess"]),
                                str(tmp_path / "ref"))
        finally:
            res = _finish(proc, 420)
        assert marked(root) == []  # it stopped every process it started
    assert res.returncode == 0, (res.stdout[-4000:], res.stderr)
    assert "(TLS, SuperNode authentication)" in res.stdout and f"run directory: {out}" in res.stdout
    assert (out / "partition.json").read_text() == (ref / "partition.json").read_text()
    a, b = (load_file(str(d / "adapters" / "fedavg" / "round-002" / "adapter_model.safetensors")) for d in (out, ref))
    assert sorted(a) == sorted(b)
    diff = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
    assert diff <= 1e-6, diff
    print(f"deploy vs simulation: max |adapter difference| = {diff:g}")

    def results(run):  # all but wall-clock seconds
        return json.loads((run / "results.json").read_text(),
                          object_hook=lambda d: {k: v for k, v in d.items() if k != "seconds"})
    assert results(out) == results(ref)
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["round"] for e in events if e["event"] == "round"] == [1, 2]


@pytest.mark.slow
def test_a_supernode_without_partition_id_and_an_unregistered_one_are_refused(tmp_path):
    """With TLS and SuperNode authentication: the run stops before round 1 with one line naming the
    fix, and a SuperNode whose key was not registered cannot join."""
    from simulations.deploy import PROJECT, Deployment

    with flower_root() as root:
        dep = Deployment(root / "work")
        try:
            dep.tls = write_tls(root / "work" / "tls")
            dep.start_superlink()
            (key, public), (stranger, _) = write_node_keys(root / "work" / "keys", 2)
            dep.register(public)
            dep.start_supernode(0, {**NO_PARTITION, "fedmllm-experiment": str(tmp_path / "run")}, key)
            dep.await_nodes(1)
            status, error = dep.run(PROJECT, {"config": str(CONFIG), "out": str(tmp_path / "run"), "num-clients": 1,
                                              "overrides": " ".join(f"'{o}'" for o in TINY)})
            assert status == "finished:failed" and "no partition-id in its node config" in error, error
            assert "\n" not in error and 'flower-supernode --node-config "partition-id=K' in error
            dep.start_supernode(1, {"partition-id": 0, "num-partitions": 1}, stranger)  # not registered
            assert dep.procs[-1][1].wait(timeout=120) != 0
            assert "Failed to activate SuperNode" in dep.log("supernode-1")
        finally:
            dep.stop()
            assert dep.pids() == [] and marked(root) == []
