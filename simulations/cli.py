"""The ``fedmllm`` command line.

Every experiment subcommand takes ``--config FILE`` (TOML under ``configs/``), ``key=value``
overrides and ``--out DIR``. User errors print one line and exit 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Optional

from fedmllm.errors import UserError
from server.flower_log import flower_log

DEFAULT_CONFIGS = {
    "pretrain": "configs/pretrain.toml",
    "centralized": "configs/centralized/embedded.toml",
    "federated": "configs/federated/embedded.toml",
    "demo": "configs/demo.toml",
    "collab": "configs/collab/embedded.toml",
}


def _default_out(kind: str) -> str:
    return f"runs/{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def _add_experiment(sub: argparse._SubParsersAction, name: str, help: str, resume: bool = True,
                    seeds: bool = True, verbose: bool = True) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--config", help=f"TOML config (default: {DEFAULT_CONFIGS.get(name, 'built-in defaults')})")
    p.add_argument("--out", help="run directory to create (default: runs/<kind>-<timestamp>)")
    if resume:
        p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run in RUN_DIR (same config)")
    if seeds:
        p.add_argument("--seeds", metavar="S,S,...", help="run every seed into its own sub-run <out>/seed-<s>/ "
                       "and report mean, std and 95%% CI over them (same as the override seeds=S,S,...)")
    if verbose:
        p.add_argument("--verbose", action="store_true", help="show Flower's own INFO log lines too "
                       "(default: only its warnings and errors; fedmllm's round summaries show either way)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=1e-3")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedmllm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_experiment(sub, "pretrain", "train the embedded tiny base models on the upstream twins", resume=False,
                    seeds=False, verbose=False)
    _add_experiment(sub, "centralized", "centralized benchmark grid: models x methods x downstream tasks -> E/F/O")
    _add_experiment(sub, "federated", "federated simulation (Flower + Ray) with pooled/local baselines")
    _add_experiment(sub, "collab", "large-small (edge) collaboration: a large server MLLM and small client MLLMs "
                    "(FedCoLLM, FedMKT, offsite-tuning, proxy-tuning, representation alignment) on Flower + Ray")
    _add_experiment(sub, "demo", "the embedded centralized benchmark + a federated comparison, one report")
    p = sub.add_parser("report", help="rebuild report and plots from run directories (several: side by side)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="where a multi-run comparison is written (default: the first run's compare/)")
    p = sub.add_parser("eval", help="evaluate a model (or a tuned adapter on its base) on tasks: score table, "
                       "scores.json and per-sample predictions.jsonl")
    p.add_argument("--adapter", metavar="DIR", help="a tuned adapter a run wrote (<run>/adapters/...): applied to "
                   "the base model its run names; the run's config, test-set size and seed and the tasks it "
                   "scored the adapter on are the defaults of the options below")
    p.add_argument("--model", help="registry name, hub id or local checkpoint dir (default: tiny-llava-ov; "
                   "with --adapter: the adapter's base)")
    p.add_argument("--tasks", help="comma-separated task names (default: synth-scienceqa,synth-okvqa)")
    p.add_argument("--n", type=int, help="test samples per task (default: 64)")
    p.add_argument("--batch-size", type=int, help="generation batch size (default: 32)")
    p.add_argument("--seed", type=int, help="test-sample seed, as a run's seed (default: 0)")
    p.add_argument("--out", help="directory for scores.json and predictions.jsonl (default: runs/eval-<timestamp>)")
    p.add_argument("--config", help="TOML config for data sources / hub org")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    _add_deploy(sub)
    sub.add_parser("config", help="list every config key with its default and meaning")
    sub.add_parser("list", help="list registered models, tasks, metrics, methods, strategies, partitioners")
    return parser


def _add_deploy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="Flower's Deployment Engine on this machine (SuperLink + SuperNodes on 127.0.0.1)")
    what = p.add_subparsers(dest="deploy_command", required=True, metavar="WHAT")
    d = what.add_parser("local", help="a federated run on a SuperLink and N SuperNodes on 127.0.0.1 (TLS, node auth)",
                        description="Start flower-superlink and N flower-supernode on 127.0.0.1 (free ports), run "
                        "the experiment with `flwr run`, stop them all. TLS and SuperNode authentication are on.")
    d.add_argument("--nodes", type=int, help="SuperNodes, one per client: sets federated.num_clients "
                   "(default: the config's federated.num_clients)")
    d.add_argument("--config", default=DEFAULT_CONFIGS["federated"], help="TOML config (default: %(default)s)")
    d.add_argument("--out", help="run directory to create (default: runs/deploy-<timestamp>)")
    d.add_argument("--certs", metavar="DIR", help="use ca.pem, superlink.pem, superlink.key from DIR "
                   "(default: a local CA made for this run)")
    d.add_argument("--insecure", action="store_true", help="no TLS and no SuperNode authentication")
    d.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=1e-3")
    c = what.add_parser("certs", help="write a local CA, the SuperLink's certificate for 127.0.0.1 and SuperNode "
                        "keys, for starting flower-superlink / flower-supernode by hand")
    c.add_argument("--out", required=True, help="folder to write into")
    c.add_argument("--nodes", type=int, default=2, help="SuperNode key pairs to write (default: %(default)s)")


def _config(args: argparse.Namespace, kind: Optional[str]):
    from fedmllm.config import check_unique_overrides, load_config

    overrides = list(args.overrides)
    if getattr(args, "seeds", None) is not None:
        seeds = [x.strip() for x in args.seeds.split(",") if x.strip()]
        if not seeds or not all(x.isdigit() for x in seeds):
            raise UserError(f"--seeds {args.seeds!r}: give comma-separated non-negative integers, e.g. --seeds 0,1,2")
        overrides.append(f"seeds=[{', '.join(seeds)}]")
    check_unique_overrides(overrides)
    path = args.config
    resumed = Path(args.resume) / "config.toml" if getattr(args, "resume", None) else None
    if path is None and resumed is not None and resumed.is_file():
        path = str(resumed)  # --resume DIR alone continues DIR's own experiment
    elif path is None and kind in DEFAULT_CONFIGS and Path(DEFAULT_CONFIGS[kind]).is_file():
        path = DEFAULT_CONFIGS[kind]
    return load_config(path, overrides)


def _run_dir_args(args: argparse.Namespace, kind: str) -> tuple[str, bool]:
    if getattr(args, "resume", None):
        if args.out and Path(args.out) != Path(args.resume):
            raise UserError("give either --out or --resume, not both with different directories")
        return args.resume, True
    return args.out or _default_out(kind), False


def cmd_pretrain(args: argparse.Namespace) -> None:
    from fedmllm.pretrain import run_pretrain

    run_pretrain(_config(args, "pretrain"), out=args.out)


def _experiment(kind: str) -> Callable[[argparse.Namespace], None]:
    """The command of one experiment kind: one run, or one sub-run per seed (`simulations.seeds`)."""

    def command(args: argparse.Namespace) -> None:
        from simulations.seeds import run_experiment

        out, resume = _run_dir_args(args, kind)
        run_experiment(kind, _config(args, kind), out, resume=resume)

    return command


cmd_centralized, cmd_federated, cmd_collab, cmd_demo = (
    _experiment(k) for k in ("centralized", "federated", "collab", "demo"))


def cmd_report(args: argparse.Namespace) -> None:
    from fedmllm.report import build_reports

    for path in build_reports([Path(p) for p in args.run_dirs], out=args.out):
        print(f"wrote {path}")


def cmd_eval(args: argparse.Namespace) -> None:
    from fedmllm.config import check_unique_overrides, load_config
    from simulations.evaluate import DEFAULTS, check_base, find_adapter, run_eval

    if args.n is not None and args.n <= 0:
        raise UserError(f"--n must be > 0, got {args.n}")
    adapter = find_adapter(args.adapter) if args.adapter else None
    if adapter is not None and adapter.run is not None and args.config is None:
        check_unique_overrides(args.overrides)
        cfg = load_config(adapter.run / "config.toml", list(args.overrides))  # the run's data, base and seed
    else:
        cfg = _config(args, None)
    default = adapter.defaults() if adapter is not None else DEFAULTS
    model = check_base(adapter, args.model) if adapter is not None else args.model or default["model"]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks is not None else default["tasks"]
    given = {"n": args.n, "batch_size": args.batch_size, "seed": args.seed}
    run_eval(cfg, model=model, tasks=tasks, out=args.out or _default_out("eval"), adapter=adapter,
             **{k: default[k] if v is None else v for k, v in given.items()})


def cmd_deploy(args: argparse.Namespace) -> None:
    from simulations.deploy import deploy_local, write_certs

    if args.deploy_command == "certs":
        for path in write_certs(args.out, args.nodes):
            print(f"wrote {path}")
        return
    from fedmllm.config import check_unique_overrides

    check_unique_overrides(args.overrides)
    deploy_local(args.config, args.overrides, args.nodes, args.out or _default_out("deploy"),
                 insecure=args.insecure, certs=args.certs)


def cmd_config(args: argparse.Namespace) -> None:
    from fedmllm.config import describe
    from fedmllm.federated.algorithms import ALGORITHMS, build_algorithm

    print(describe())
    print("# strategy options (effective defaults; set under [strategy_options.<name>]):")
    for name in ALGORITHMS.names():
        algo = build_algorithm(name, num_clients=8)
        options = algo.resolved_options()
        shown = ", ".join(f"{k} = {v!r}" for k, v in options.items()) or "(no options)"
        note = "  (num_clients defaults to federated.num_clients)" if "num_clients" in options else ""
        print(f"  [strategy_options.{name}] {shown}  # {algo.description}{note}")


def cmd_list(args: argparse.Namespace) -> None:
    from simulations.catalog import catalog

    for kind, names in catalog().items():
        print(f"{kind}: {', '.join(names)}")


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "pretrain": cmd_pretrain, "centralized": cmd_centralized, "federated": cmd_federated, "collab": cmd_collab,
    "demo": cmd_demo, "report": cmd_report, "eval": cmd_eval, "config": cmd_config, "list": cmd_list,
    "deploy": cmd_deploy,
}


def _quiet_libraries() -> None:
    """Progress bars of our own only: datasets' and transformers' per-load bars are noise here."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    # transformers 5 warns on every peft wrap of a model; not actionable for a user of the CLI.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    # Ray's tip about a future default for clients given no GPU (ours are CPU clients on purpose)
    warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)
    try:
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - both are dependencies
        pass


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    # the experiment commands: Flower's INFO lines only with --verbose (server.flower_log)
    flower = flower_log(args.verbose) if hasattr(args, "verbose") else nullcontext()
    try:
        with flower:
            COMMANDS[args.command](args)
    except UserError as e:
        print(f"fedmllm {args.command}: error: {e}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print(f"fedmllm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
