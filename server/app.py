"""The fedmllm ServerApp (Flower Message API): thin glue over `fedmllm.federated.experiment`.

``fedmllm federated`` builds the app with the experiment's config and run directory
(`make_server_app`) and runs it on Flower's Ray simulation backend (or in process). ``flwr run .``
loads the module-level ``app``, which reads the experiment from the run config
(``[tool.flwr.app.config]`` in pyproject.toml or ``--run-config``; `server.run_config`), waits for
the federation's SuperNodes and checks their partition ids (`server.federation`) before round 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedmllm.config import Config
from fedmllm.errors import UserError
from server.run_config import ERROR_MARK


# Flower's InMemoryGrid (the simulation's) sleeps 0.1 s between polls for replies: up to 0.1 s idle
# per round after the last client answered. It now sleeps until a reply is stored (server.wakeup),
# REPLY_WAIT_S at most (a poll's wait, should a store go unnoticed).
REPLY_WAIT_S = 0.1


def _poll_faster(grid: Grid) -> None:
    from server.wakeup import wake_on_replies

    wake_on_replies(grid, REPLY_WAIT_S)  # InMemoryGrid only; flwr run's HttpGrid has a fixed 3 s


def run_experiment(grid: Grid, cfg: Config, run_dir: Path, await_nodes: bool = False,
                   kind: str = "federated") -> dict:
    """Everything the ServerApp does: every system of the experiment over ``grid``
    (``await_nodes``: first wait for and check the federation's SuperNodes); ``kind = "collab"``:
    the paradigms of a large-small collaboration experiment (`fedmllm.collab.experiment`)."""
    from fedmllm.federated.experiment import FederatedExperiment
    from fedmllm.runs import RunDir
    from server.federation import await_federation
    from server.instrument import Instrument
    from server.strategy import GridTransport

    with RunDir(Path(run_dir), cfg) as run:  # closes the live trackers (tb/, mlruns/) at the end
        transport = GridTransport(grid, log=run.log, round_timeout=cfg.federated.round_timeout_s)
        if await_nodes:
            await_federation(transport, cfg.federated.num_clients)
        if kind == "collab":
            from fedmllm.collab.experiment import CollabExperiment

            return CollabExperiment(cfg, run, transport).run_all()
        exp = FederatedExperiment(cfg, run, transport,
                                  baseline_transport=transport if baselines_on_clients(cfg, await_nodes) else None)
        if cfg.federated.secagg:  # the server learns only each round's weighted mean (server/secagg.py)
            from server.secagg import SecAggTransport

            exp.transport = SecAggTransport.from_config(grid, cfg, sizes=exp.partition.sizes(), log=run.log)
        if cfg.federated.instrument and cfg.federated.secagg:
            why = ("federated.instrument is off under federated.secagg: the server sees only the aggregate, "
                   "no client's update to measure drift on")
            print(why, flush=True)
            run.log({"event": "notice", "message": why})
        elif cfg.federated.instrument:
            from fedmllm.federated.algorithms import ALGORITHMS
            from fedmllm.federated.tuned import rank_scaling

            factors = exp.server.method.lora_factors(exp.server.initial_state())
            scaling = rank_scaling(cfg)[1]
            from fedmllm.federated.systems import system_spec

            exp.observer = lambda system: Instrument(
                system, run.log, factors, scaling,
                personalized=ALGORITHMS.get(system_spec(cfg, system).strategy).personalized)
        return exp.run_all()


def baselines_on_clients(cfg: Config, deployed: bool) -> bool:
    """Whether the pooled / local baselines train as jobs on the clients (`fedmllm.federated.
    baselines.train_on_clients`): ``federated.baseline_placement``; ``auto``: on the Ray backend
    of ``fedmllm federated`` (its actors would idle while this process trains them), not under
    ``flwr run`` (``deployed``: a real SuperNode holds only its own partition)."""
    fed = cfg.federated
    if fed.baseline_placement == "auto":
        return fed.backend == "ray" and not deployed and fed.baseline_schedule == "rounds"
    return fed.baseline_placement == "clients"


def make_server_app(cfg: Optional[Config] = None, run_dir: Optional[Path] = None,
                    errors: Optional[list] = None, kind: str = "federated") -> ServerApp:
    """A ServerApp running one experiment; ``errors`` collects an exception for the caller
    (Flower's simulation logs ServerApp exceptions instead of raising them)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if cfg is None:  # flwr run: the run config names the experiment
            _flwr_run(grid, dict(context.run_config))
            return
        _poll_faster(grid)
        try:
            run_experiment(grid, cfg, run_dir, kind=kind)
        except BaseException as e:  # noqa: BLE001 - handed to the caller, re-raised there
            if errors is None:
                raise
            errors.append(e)

    return app


def _flwr_run(grid: Grid, run_config: dict) -> None:
    """The ServerApp under ``flwr run``; a user error is also logged as one line (`ERROR_MARK`)."""
    from server.run_config import from_run_config, run_mode

    try:
        cfg, out = from_run_config(run_config)
        print(f"fedmllm: run directory {out}", flush=True)
        _poll_faster(grid)
        run_experiment(grid, cfg, out, await_nodes=True, kind=run_mode(run_config))
    except UserError as e:
        print(f"{ERROR_MARK}{e}", flush=True)
        raise


app = make_server_app()
