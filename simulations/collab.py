"""``fedmllm collab``: large-small (edge) collaboration on Flower's Ray simulation backend.

The same ServerApp and ClientApp as ``fedmllm federated`` (one Ray actor per CPU, one torch thread
each; `simulations.federated`), the server running a `fedmllm.collab.experiment.CollabExperiment`:
every paradigm and baseline of ``[collab]`` on the federated split. ``--resume DIR`` continues a
killed run (finished paradigms skipped, a paradigm from its last complete round).
"""

from __future__ import annotations

from pathlib import Path

from fedmllm.config import Config
from fedmllm.errors import UserError


def check_collab(cfg: Config) -> None:
    """Everything that can be wrong with a collaboration config, before the run directory exists:
    the federated part, paradigm and baseline names, the large model (it must load), the public
    set (it must not overlap client data), pairings the paradigm cannot join."""
    from fedmllm.collab.base import PARADIGMS
    from fedmllm.collab.public import check_public
    from fedmllm.models import build_model
    from simulations.federated import check_federated

    c = cfg.collab
    valid = {"collab.paradigms": [n for n in PARADIGMS.names() if PARADIGMS.get(n).family != "baseline"],
             "collab.baselines": [n for n in PARADIGMS.names() if PARADIGMS.get(n).family == "baseline"]}
    for key, names in (("collab.paradigms", c.paradigms), ("collab.baselines", c.baselines)):
        for name in names:
            if name not in valid[key]:
                raise UserError(f"{key}: unknown name {name!r}; valid: {', '.join(valid[key])}")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UserError(f"{key} lists {', '.join(dup)} more than once")
    if not c.paradigms and not c.baselines:
        raise UserError("collab.paradigms and collab.baselines are both empty: nothing to run")
    if "proxy" in c.paradigms and "small_fedavg" not in c.baselines:
        raise UserError("collab.paradigms has proxy, which steers the large model with small_fedavg's federated "
                        "adapter: add small_fedavg to collab.baselines")
    if not 0 <= c.kd_weight <= 1:
        raise UserError(f"collab.kd_weight must be in [0, 1], got {c.kd_weight}")
    if not 0 < c.emulator_keep <= 1:
        raise UserError(f"collab.emulator_keep must be in (0, 1] (fraction of middle layers kept), got {c.emulator_keep}")
    if cfg.federated.method != "lora":
        raise UserError(f"collab runs tune LoRA on both sides; federated.method = {cfg.federated.method!r}, valid: lora")
    cfg.federated.strategies = cfg.federated.strategies or ["fedavg"]
    check_federated(cfg)  # the small side: data, Ray resources, method, small model
    check_public(cfg)
    try:
        large = build_model(c.large, seed=cfg.seed)
    except UserError as e:
        raise UserError(f"collab.large: {e}") from None
    if "offsite" in c.paradigms:
        from fedmllm.collab.emulator import plan_emulator

        layers = int(large.model.config.text_config.num_hidden_layers)
        plan_emulator(layers, c.emulator_bottom, c.emulator_top, c.emulator_keep)


def run_collab(cfg: Config, out: str, resume: bool = False) -> Path:
    """Validate, create (or resume) the run directory, run every paradigm, return the run dir."""
    from simulations.federated import run_federated

    check_collab(cfg)
    return run_federated(cfg, out, resume=resume, checked=True, kind="collab")
