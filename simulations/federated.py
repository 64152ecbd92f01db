"""``fedmllm federated``: the Flower ServerApp and ClientApp on Flower's Ray simulation backend
(or, with ``federated.backend = "inprocess"``, the same apps and messages in this process).

One Ray actor per CPU (``federated.num_cpus_per_client``), one torch thread per actor, the Ray
object store capped; a local Ray listens on 127.0.0.1 only, its files in a private temp dir removed
after the run (`simulations.ray_backend`; ``federated.ray_address`` attaches to a cluster instead).
All strategies and baselines of the config run inside one simulation (Ray starts once).
``--resume DIR`` continues a killed run from its last complete round (`fedmllm.federated.experiment`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fedmllm.config import Config, method_options
from fedmllm.errors import UserError
from fedmllm.experiment import check_data, check_methods
from fedmllm.runs import RunDir, check_run_dir

# transformers 5 warns on every peft wrap of a model (the CLI filters it in this process too)
ACTOR_WARNINGS = "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"


def check_federated(cfg: Config) -> None:
    """Everything that can be wrong with a federated config, before any compute."""
    check_resources(cfg)  # first: a cluster address that does not answer fails before seconds of imports
    from fedmllm.data.partition import PARTITIONERS
    from fedmllm.federated.algorithms import ALGORITHMS, build_algorithm
    from fedmllm.methods import METHODS
    from fedmllm.methods.base import base_method
    from fedmllm.models import build_model

    fed = cfg.federated
    check_data(cfg)
    PARTITIONERS.get(fed.partitioner)
    if fed.alpha <= 0:
        raise UserError(f"federated.alpha must be > 0 (Dirichlet concentration), got {fed.alpha}")
    if fed.baseline_placement == "clients" and fed.baseline_schedule != "rounds":
        raise UserError("federated.baseline_placement = \"clients\" needs federated.baseline_schedule = \"rounds\" "
                        "(a single run of all steps is not split into the clients' rounds); valid with "
                        "baseline_schedule = \"single\": server, auto")
    if fed.ray_address and fed.backend != "ray":
        raise UserError(f"federated.ray_address = {fed.ray_address!r} needs federated.backend = \"ray\" "
                        f"(got {fed.backend!r}); clear ray_address or switch the backend")
    method = METHODS.get(base_method(fed.method))
    if not fed.strategies:
        raise UserError(f"federated.strategies is empty; valid: {', '.join(ALGORITHMS.names())}")
    unknown = sorted(set(cfg.strategy_options) - set(ALGORITHMS.names()))
    if unknown:
        raise UserError(f"[strategy_options.{unknown[0]}] names no strategy; valid: {', '.join(ALGORITHMS.names())}")
    for name in fed.strategies:
        algo = build_algorithm(name, dict(cfg.strategy_options.get(name, {})), num_clients=fed.num_clients)
        per_round = fed.clients_per_round or fed.num_clients
        if per_round < algo.min_replies():
            raise UserError(f"strategy {name!r} needs at least {algo.min_replies()} clients per round with "
                            f"its options, the config trains {per_round}; raise federated.num_clients "
                            "(or clients_per_round) or lower num_malicious_nodes")
        if not method.averageable and not ALGORITHMS.get(name).handles_non_averageable:
            raise UserError(f"strategy {name!r} cannot aggregate the state of method {fed.method!r} "
                            "(its state is not averageable); choose another method or strategy")
    check_trust(cfg)
    check_secagg(cfg)
    bad = [c for c in fed.fail_clients
           if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < fed.num_clients]
    if bad:
        raise UserError(f"federated.fail_clients {bad} are not partition ids 0..{fed.num_clients - 1}")
    method_options(cfg, fed.method)
    bundle = build_model(cfg.model.name, pretrained=cfg.model.pretrained, seed=cfg.seed)
    check_methods(bundle.model, cfg, [fed.method])
    from fedmllm.federated.heterogeneity import check_heterogeneity
    from fedmllm.federated.tuned import TunedModels

    check_heterogeneity(cfg, TunedModels(cfg, bundle).get().initial)
    personal = [s for s in fed.strategies if ALGORITHMS.get(s).personalized]
    if personal and not fed.eval_personalized:
        raise UserError(f"strategy {personal[0]!r} is personalized (clients keep part of their model): "
                        "set federated.eval_personalized = true, its global model alone is not the result")


def check_resources(cfg: Config) -> None:
    """The Ray options against this host: a cluster at ray_address (or $RAY_ADDRESS) must answer
    (its resources are its own); a local Ray's CPUs, GPUs and object store must fit this machine."""
    from simulations.ray_backend import check_reachable, ray_address

    fed = cfg.federated
    if fed.backend != "ray":
        return
    gpus, device = fed.num_gpus_per_client, cfg.train.device
    if gpus > 0 and device == "cpu":
        raise UserError(f"federated.num_gpus_per_client = {gpus} with train.device = \"cpu\": the clients would "
                        "hold GPUs they never use; set train.device = \"auto\" or num_gpus_per_client = 0")
    if gpus == 0 and device == "cuda":
        raise UserError("train.device = \"cuda\" needs federated.num_gpus_per_client > 0 (Ray hides the GPUs "
                        "from clients given none), e.g. 0.25 for four clients per GPU")
    if ray_address(cfg):
        check_reachable(ray_address(cfg))
        return
    if gpus > 0:
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"federated.num_gpus_per_client = {gpus} needs a CUDA GPU, and torch sees none here "
                            "(torch.cuda.is_available() is False: no GPU, or a CPU-only torch); set it to 0, "
                            "or attach to a cluster with GPUs (federated.ray_address)")
    cores = os.cpu_count() or 1
    if fed.num_cpus_per_client > cores:
        raise UserError(f"federated.num_cpus_per_client = {fed.num_cpus_per_client} exceeds this machine's "
                        f"{cores} CPUs; valid: > 0 and <= {cores}")
    try:
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError, AttributeError):  # not POSIX: Ray checks it itself
        return
    if fed.object_store_mb > total_mb:
        raise UserError(f"federated.object_store_mb = {fed.object_store_mb} exceeds this machine's memory "
                        f"({total_mb} MB); valid: 75..{total_mb}")


def check_trust(cfg: Config) -> None:
    """Attacks, privacy and robust rules of a config, before any compute: attack names and
    options, a DP wrapper for every strategy (refused where the rule leaks per-client state)."""
    from fedmllm.federated.algorithms import build_algorithm
    from fedmllm.federated.attacks import ATTACKS, build_attack

    for name in cfg.attack.names:
        build_attack(name, cfg.attack.options.get(name, {}))
    unknown = sorted(set(cfg.attack.options) - set(ATTACKS.names()))
    if unknown:
        raise UserError(f"[attack.options] names unknown attack(s) {', '.join(unknown)}; valid: {', '.join(ATTACKS.names())}")
    if cfg.privacy.mode != "off":
        from fedmllm.federated.privacy import private

        for name in cfg.federated.strategies:
            for z in cfg.privacy.noise_multipliers:
                private(build_algorithm(name, dict(cfg.strategy_options.get(name, {})),
                                        num_clients=cfg.federated.num_clients), cfg, float(z))


def check_secagg(cfg: Config) -> None:
    """Under ``federated.secagg`` the server sees only the sum of the clients' states: refuse what
    needs one client's update (a strategy beyond the weighted mean, the update-norm check, DP that
    clips or adapts on the server)."""
    from fedmllm.federated.algorithms import ALGORITHMS

    fed = cfg.federated
    if not fed.secagg:
        return
    valid = [n for n in ALGORITHMS.names() if ALGORITHMS.get(n).secure_aggregatable]
    for name in fed.strategies:
        if not ALGORITHMS.get(name).secure_aggregatable:
            raise UserError(f"strategy {name!r} needs each client's update, federated.secagg reveals only their "
                            f"weighted mean; valid with secagg: {', '.join(valid)}")
    if fed.max_update_norm > 0:
        raise UserError("federated.max_update_norm must be 0 with federated.secagg (a masked update has no "
                        "norm the server can check); valid: 0")
    if cfg.privacy.mode not in ("off", "client-fixed"):
        raise UserError(f"privacy.mode {cfg.privacy.mode!r} needs each client's update on the server, "
                        "federated.secagg hides it; valid with secagg: off, client-fixed")
    if (fed.clients_per_round or fed.num_clients) < 2:
        raise UserError("federated.secagg needs at least 2 clients per round (a sum of one is that client's "
                        "update); raise federated.num_clients or clients_per_round")

def run_federated(cfg: Config, out: str, resume: bool = False, checked: bool = False,
                  kind: str = "federated") -> Path:
    """Validate (unless the caller already ran `check_federated`), create (or resume) the run
    directory, run the simulation, return the run dir. ``kind = "collab"``: the server runs a
    collaboration experiment (`simulations.collab`)."""
    from fedmllm.experiment import use_threads

    use_threads(cfg)
    from clients.app import app as client_app
    from fedmllm.federated.experiment import resolve_strategy_options
    from server.app import make_server_app

    check_run_dir(out, resume, kind=kind)
    if not checked:
        check_federated(cfg)
    cfg = resolve_strategy_options(cfg)
    run = RunDir.create(out, cfg, kind, resume=resume)
    # Ray's workers inherit the driver's environment (Flower owns ray.init's runtime_env); the
    # last two keep each actor's model load as quiet as this process's (simulations.cli).
    for key, value in {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                       "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONWARNINGS": ACTOR_WARNINGS}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("FLWR_HOME", str(Path(tempfile.gettempdir()) / f"fedmllm_flwr_{os.getuid()}"))
    errors: list[BaseException] = []
    server_app = make_server_app(cfg, run.path.resolve(), errors, kind=kind)
    if cfg.federated.backend == "inprocess":
        from server.inprocess import run_inprocess

        run_inprocess(server_app, client_app, cfg.federated.num_clients)
    else:
        from flwr.simulation import run_simulation

        from simulations.dispatch import fast_dispatch
        from simulations.ray_backend import ray_session

        # loopback-only local Ray, or the cluster of ray_address; instructions polled every 0.01 s
        with ray_session(cfg) as backend, fast_dispatch():
            run_simulation(server_app=server_app, client_app=client_app,
                           num_supernodes=cfg.federated.num_clients, backend_config=backend)
    if errors:
        err = errors[0]
        if isinstance(err, UserError):
            raise err
        raise RuntimeError(f"federated run failed: {err}") from err
    if not (run.path / "results.json").is_file():
        raise RuntimeError(f"federated run ended without results; see the log above and {run.path}/metrics.jsonl")
    print(f"report: {run.path / 'report.md'}", flush=True)
    return run.path
