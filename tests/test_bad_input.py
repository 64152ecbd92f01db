"""Bad input, one suite: every user-facing mistake is one line on stderr naming the problem, exit
code 2, no traceback, and nothing created or overwritten.

Each case runs the CLI in-process (``simulations.cli.main``) and fails before any training or Ray
start. Arguments may hold ``@tmp`` (the test's tmp dir), ``@out`` (``@tmp/out``, which must not
appear) and ``@ck`` (a damaged copy of the shipped ``tiny-vila`` checkpoint, made by the case's
``prep``). Every file under ``@tmp`` is compared before and after the call.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from simulations.cli import main

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "fedmllm" / "assets" / "checkpoints" / "tiny-vila"
CENT = ("centralized", "--out", "@out", "centralized.methods=lora")  # one method: quick pre-checks
FED = ("federated", "--out", "@out")
EVAL = ("eval", "--model", "tiny-vila", "--tasks", "synth-chd", "--n", "4", "--out", "@out")


# --- set-ups: files a case needs under tmp -----------------------------------------------------
def write(name: str, data: bytes | str):
    def prep(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return prep


def ck(damage):
    """A copy of the shipped checkpoint at tmp/ck, then ``damage(folder)``."""
    def prep(tmp: Path) -> None:
        shutil.copytree(SHIPPED, tmp / "ck")
        damage(tmp / "ck")
    return prep


def _garble(name: str, data: bytes):
    return lambda d: (d / name).write_bytes(data)


def _truncate(d: Path) -> None:
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100_000])


def _edit_weights(edit):
    def damage(d: Path) -> None:
        from safetensors.torch import load_file, save_file

        sd = load_file(d / "model.safetensors")
        edit(sd)
        save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
    return damage


def _poison(value: float):
    def edit(sd: dict) -> None:
        sd["language_model.lm_head.weight"][0, 0] = value
    return edit


def _edit_config(edit):
    def damage(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        edit(cfg)
        (d / "config.json").write_text(json.dumps(cfg))
    return damage


def _wider_mlp(cfg: dict) -> None:
    cfg["text_config"]["intermediate_size"] *= 2


def _rm(*names: str):
    return lambda d: [(d / n).unlink() for n in names]


def run_dir(kind: str = "centralized", config: str = "configs/centralized/embedded.toml", meta: str | None = None):
    """A finished-looking run directory at tmp/run (config.toml + meta.json)."""
    def prep(tmp: Path) -> None:
        from fedmllm.config import dumps, load_config

        (tmp / "run").mkdir()
        (tmp / "run" / "config.toml").write_text(dumps(load_config(ROOT / config)))
        (tmp / "run" / "meta.json").write_text(meta if meta is not None else json.dumps({"kind": kind}))
    return prep


def both(*preps):
    def prep(tmp: Path) -> None:
        for p in preps:
            p(tmp)
    return prep


def case(id, argv, keyword, prep=None):
    return pytest.param(argv, keyword, prep, id=id)


CASES = [
    # --- config files -------------------------------------------------------------------------
    case("config-missing", (*CENT, "--config", "@tmp/nope.toml"), "config file not found"),
    case("config-is-a-folder", (*CENT, "--config", "@tmp"), "is a folder; give a TOML file"),
    case("config-not-toml", (*CENT, "--config", "@tmp/c.toml"), "not valid TOML", write("c.toml", "[train\nlr=1")),
    case("config-not-utf8", (*CENT, "--config", "@tmp/c.toml"), "not UTF-8", write("c.toml", b"\xff\xfe[train]\n")),
    case("config-empty", (*CENT, "--config", "@tmp/c.toml"), "holds no settings", write("c.toml", "")),
    case("config-only-comments", (*CENT, "--config", "@tmp/c.toml"), "holds no settings",
         write("c.toml", "# nothing here\n")),
    case("config-unknown-key", (*CENT, "--config", "@tmp/c.toml"), "unknown config key 'train.learning_rate'",
         write("c.toml", "[train]\nlearning_rate = 1e-3\n")),
    case("config-section-not-a-table", (*CENT, "--config", "@tmp/c.toml"), "'train' must be a table",
         write("c.toml", "train = 1\n")),
    case("config-nan-in-file", (*CENT, "--config", "@tmp/c.toml"), "'train.lr' must be a finite number",
         write("c.toml", "[train]\nlr = nan\n")),
    # --- overrides ----------------------------------------------------------------------------
    case("override-without-equals", (*CENT, "lr"), "must look like key=value"),
    case("override-twice", (*CENT, "train.lr=1", "train.lr=2"), "'train.lr' is given twice"),
    case("override-table-and-key", (*CENT, "train.lr=1", "train={lr=2}"), "given twice"),
    case("override-misspelt-key", (*CENT, "train.lrr=1"), "Did you mean 'train.lr'"),
    case("override-unknown-section", (*CENT, "trian.lr=1"), "unknown config key 'trian'"),
    case("override-int-not-a-number", (*CENT, "train.steps=abc"), "'train.steps' must be int"),
    case("override-float-for-int", (*CENT, "train.steps=1.5"), "'train.steps' must be int"),
    case("override-not-a-bool", (*CENT, "model.pretrained=yes"), "'model.pretrained' must be bool"),
    case("override-invalid-choice", (*CENT, "train.precision=fp16"), "valid: auto, fp32, bf16"),
    # --- numbers: NaN / Inf, ranges, bounds -----------------------------------------------------
    case("lr-nan", (*CENT, "train.lr=nan"), "'train.lr' must be a finite number"),
    case("lr-inf", (*CENT, "train.lr=inf"), "'train.lr' must be a finite number"),
    case("lr-zero", (*CENT, "train.lr=0"), "'train.lr' must be > 0"),
    case("lr-negative", (*CENT, "train.lr=-1e-3"), "'train.lr' must be > 0"),
    case("max-grad-norm-nan", (*CENT, "train.max_grad_norm=nan"), "'train.max_grad_norm' must be a finite"),
    case("weight-decay-negative", (*CENT, "train.weight_decay=-1"), "'train.weight_decay' must be >= 0"),
    case("warmup-ratio-5", (*CENT, "train.warmup_ratio=5"), "'train.warmup_ratio' must be in [0, 1)"),
    case("epochs-below-one", (*CENT, "train.steps=0", "train.epochs=0.5"), "train.epochs >= 1"),
    case("batch-size-zero", (*CENT, "train.batch_size=0"), "'train.batch_size' must be > 0"),
    case("grad-accum-huge", (*CENT, "train.grad_accum=100000"), "'train.grad_accum' must be <= 1,024"),
    case("seed-2**70", (*CENT, f"seed={2 ** 70}"), "'seed' must be in [0, 2**32)"),
    case("seed-negative", (*CENT, "seed=-1"), "'seed' must be in [0, 2**32)"),
    case("train-n-10**9", (*CENT, "data.train_n=1000000000"), "'data.train_n' must be <= 1,000,000"),
    case("test-n-zero", (*CENT, "data.test_n=0"), "'data.test_n' must be > 0"),
    # --- data -----------------------------------------------------------------------------------
    case("train-n-0-synthetic", (*CENT, "data.train_n=0"), "not possible for synthetic task"),
    case("source-for-synthetic", (*CENT, "data.sources={synth-chd='/x'}"), "is synthetic and takes no source"),
    case("source-unknown-task", (*CENT, "data.sources={nosuchtask='/x'}"), "unknown task 'nosuchtask'"),
    case("source-not-a-string", (*CENT, "data.sources={synth-chd=1}"), "data.sources.synth-chd must be"),
    case("source-folder-missing", (*CENT, "data.downstream=scienceqa", "data.sources={scienceqa='@tmp/no_such'}"),
         "no_such' does not exist"),
    case("downstream-empty", (*CENT, "data.downstream=[]"), "data.downstream is empty"),
    case("downstream-unknown-task", (*CENT, "data.downstream=synth-chd,synth-chdd"), "unknown task 'synth-chdd'"),
    case("downstream-wrong-role", (*CENT, "data.downstream=synth-okvqa"), "has role 'upstream'"),
    case("downstream-duplicate", (*CENT, "data.downstream=synth-chd,synth-chd"), "more than once"),
    # --- centralized grid, methods, models ------------------------------------------------------
    case("method-unknown", ("centralized", "--out", "@out", "centralized.methods=lora,loar"), "unknown method 'loar'"),
    case("methods-empty", ("centralized", "--out", "@out", "centralized.methods=[]"), "centralized.methods is empty"),
    case("grid-task-not-downstream", (*CENT, "centralized.tasks=synth-okvqa"), "are not in data.downstream"),
    case("method-table-unknown", (*CENT, "methods.lroa.r=8"), "[methods.lroa]: unknown method"),
    case("method-option-unknown", (*CENT, "methods.lora.rank=8"), "unknown option 'rank'"),
    case("method-option-nan", (*CENT, "methods.lora.alpha=nan"), "option 'alpha' must be a finite number"),
    case("method-option-int-nan", (*CENT, "methods.lora.r=nan"), "option 'r' must be int"),
    case("method-lr-zero", (*CENT, "methods.lora.lr=0"), "methods.lora.lr must be > 0"),
    case("method-option-too-big", ("centralized", "--out", "@out", "centralized.methods=top_layers",
                                   "methods.top_layers.k=99"), "99"),
    case("tracker-unknown", (*CENT, "tracking=wandb"), "unknown tracker 'wandb'"),
    case("model-unknown-name", (*CENT, "centralized.models=tiny-vilaa"), "unknown model 'tiny-vilaa'"),
    case("model-hub-id-offline", (*CENT, "centralized.models=no-such-org/no-such-mllm"), "not found locally"),
    # --- federated ------------------------------------------------------------------------------
    case("fed-alpha-nan", (*FED, "federated.alpha=nan"), "'federated.alpha' must be a finite number"),
    case("fed-alpha-zero", (*FED, "federated.alpha=0"), "'federated.alpha' must be > 0"),
    case("fed-lr-decay-negative", (*FED, "federated.lr_decay=-1"), "'federated.lr_decay' must be > 0"),
    case("fed-lr-decay-nan", (*FED, "federated.lr_decay=nan"), "'federated.lr_decay' must be a finite"),
    case("fed-num-clients-10**9", (*FED, "federated.num_clients=1000000000"), "must be <= 10,000"),
    case("fed-num-clients-zero", (*FED, "federated.num_clients=0"), "'federated.num_clients' must be > 0"),
    case("fed-clients-per-round", (*FED, "federated.clients_per_round=100"), "exceeds federated.num_clients"),
    case("fed-cpus-per-client-zero", (*FED, "federated.num_cpus_per_client=0"), "num_cpus_per_client' must be > 0"),
    case("fed-cpus-per-client-too-many", (*FED, "federated.num_cpus_per_client=100000"), "exceeds this machine's"),
    case("fed-object-store-negative", (*FED, "federated.object_store_mb=-1"), "must be >= 75"),
    case("fed-object-store-too-big", (*FED, "federated.object_store_mb=1000000000"), "exceeds this machine's memory"),
    case("fed-failure-fraction", (*FED, "federated.max_failure_fraction=1"), "max_failure_fraction must be in [0, 1)"),
    case("fed-strategy-unknown", (*FED, "federated.strategies=fedavgg"), "unknown strategy 'fedavgg'"),
    case("fed-strategies-empty", (*FED, "federated.strategies=[]"), "federated.strategies is empty"),
    case("fed-strategy-option-nan", (*FED, "strategy_options.fedprox.proximal_mu=nan"),
         "option 'proximal_mu' must be a finite number"),
    case("fed-strategy-option-unknown", (*FED, "strategy_options.fedprox.mu=1"), "unknown option 'mu'"),
    case("fed-strategy-table-unknown", (*FED, "strategy_options.fedporx.proximal_mu=1"),
         "[strategy_options.fedporx] names no strategy"),
    case("fed-partitioner-unknown", (*FED, "federated.partitioner=nope"), "unknown partitioner 'nope'"),
    case("fed-method-unknown", (*FED, "federated.method=nope"), "unknown method 'nope'"),
    case("fed-fail-client-out-of-range", (*FED, "federated.fail_clients=[99]"), "are not partition ids"),
    case("fed-fail-client-not-int", (*FED, "federated.fail_clients=['a']"), "are not partition ids"),
    case("fed-baseline-unknown", (*FED, "federated.baselines=pooled,global"), "unknown baseline 'global'"),
    case("fed-backend-unknown", (*FED, "federated.backend=mpi"), "valid: ray, inprocess"),
    case("fed-baseline-placement-unknown", (*FED, "federated.baseline_placement=gpu"), "valid: auto, clients, server"),
    case("fed-baseline-placement-single", (*FED, "federated.baseline_placement=clients",
                                           "federated.baseline_schedule=single"),
         'needs federated.baseline_schedule = "rounds"'),
    case("fed-train-n-0-synthetic", (*FED, "data.train_n=0"), "not possible for synthetic task"),
    case("fed-model-unknown", (*FED, "model.name=nosuch"), "unknown model 'nosuch'"),
    # --- run directories ------------------------------------------------------------------------
    case("out-is-a-file", ("centralized", "--out", "@tmp/f", "centralized.methods=lora"), "is a file",
         write("f", "x")),
    case("out-under-a-file", ("centralized", "--out", "@tmp/f/sub", "centralized.methods=lora"),
         "is a file, not a folder", write("f", "x")),
    case("out-unwritable", ("centralized", "--out", "/proc/fedmllm-bad-input/run"), "cannot create a folder"),
    case("out-not-empty", ("centralized", "--out", "@tmp/old", "centralized.methods=lora"), "already exists",
         write("old/keep.txt", "mine")),
    case("fed-out-is-a-file", ("federated", "--out", "@tmp/f"), "is a file", write("f", "x")),
    case("demo-out-is-a-file", ("demo", "--out", "@tmp/f"), "is a file", write("f", "x")),
    case("demo-grid-option-too-big", ("demo", "--out", "@out", "centralized.methods=top_layers",
                                      "methods.top_layers.k=99"), "k=99 exceeds"),
    case("pretrain-out-is-a-file", ("pretrain", "--out", "@tmp/f"), "is a file", write("f", "x")),
    case("pretrain-model-unknown", ("pretrain", "--out", "@out", "pretrain.models=tiny-vilaa"),
         "unknown model 'tiny-vilaa'"),
    case("pretrain-steps-nan", ("pretrain", "--out", "@out", "pretrain.steps={tiny-vila=nan}"),
         "pretrain.steps.tiny-vila must be an int >= 1"),
    case("pretrain-steps-unknown-model", ("pretrain", "--out", "@out", "pretrain.steps={tiny-vilaa=5}"),
         "unknown model 'tiny-vilaa'"),
    case("pretrain-warmup-lr-negative", ("pretrain", "--out", "@out", "pretrain.vision_warmup_lr=-1"),
         "'pretrain.vision_warmup_lr' must be > 0"),
    case("pretrain-init-missing", ("pretrain", "--out", "@out", "pretrain.models=tiny-vila", "pretrain.init=@tmp/nope"),
         "is not a pretrained checkpoint (needs config.json and card.json)"),
    case("pretrain-init-other-model", ("pretrain", "--out", "@out", "pretrain.models=tiny-vila",
                                       "pretrain.init=tiny-llava-ov"), "holds 'tiny-llava-ov', but pretrain.models is"),
    case("pretrain-init-corrupt-card", ("pretrain", "--out", "@out", "pretrain.models=tiny-vila", "pretrain.init=@tmp/ck"),
         "is unreadable or not a JSON card", ck(lambda f: (f / "card.json").write_text("{not json"))),
    case("pretrain-init-two-models", ("pretrain", "--out", "@out", "pretrain.init=tiny-vila"),
         "pretrain.init continues one model, but pretrain.models lists 2"),
    case("resume-not-a-run", ("centralized", "--resume", "@tmp"), "no config.toml"),
    case("resume-and-other-out", ("centralized", "--resume", "@tmp/run", "--out", "@out"), "give either --out or"),
    case("resume-changed-config", ("centralized", "--resume", "@tmp/run", "train.lr=5e-3"),
         "config differs in train.lr", run_dir()),
    case("resume-other-kind", ("centralized", "--resume", "@tmp/run"), "it is a 'federated' run",
         run_dir("federated")),
    case("resume-corrupt-meta", ("centralized", "--resume", "@tmp/run"), "meta.json is unreadable or corrupt",
         run_dir(meta="{not json")),
    # --- eval -----------------------------------------------------------------------------------
    case("eval-batch-size-zero", (*EVAL, "--batch-size", "0"), "--batch-size must be in [1, "),
    case("eval-n-10**9", (*EVAL, "--n", str(10 ** 9)), "--n must be in [1, 1,000,000]"),
    case("eval-n-zero", (*EVAL, "--n", "0"), "--n must be > 0"),
    case("eval-seed-2**70", (*EVAL, "--seed", str(2 ** 70)), "--seed must be in [0, "),
    case("eval-tasks-empty", (*EVAL, "--tasks", ","), "--tasks is empty"),
    case("eval-task-unknown", (*EVAL, "--tasks", "synth-chdd"), "unknown task 'synth-chdd'"),
    case("eval-scores-exist", (*EVAL, "--out", "@tmp/old"), "scores.json already exists",
         write("old/scores.json", "{}")),
    case("eval-out-is-a-file", (*EVAL, "--out", "@tmp/f"), "is a file", write("f", "x")),
    case("eval-model-unknown", (*EVAL, "--model", "tiny-vilaa"), "Did you mean 'tiny-vila'"),
    case("eval-model-is-a-file", (*EVAL, "--model", "@tmp/f"), "is a file", write("f", "x")),
    # --- checkpoints (damaged copies of the shipped tiny-vila) ----------------------------------
    case("ckpt-no-config", (*EVAL, "--model", "@ck"), "has no config.json", ck(_rm("config.json"))),
    case("ckpt-config-corrupt", (*EVAL, "--model", "@ck"), "config.json is corrupt",
         ck(_garble("config.json", b'{"model_type": '))),
    case("ckpt-config-not-an-object", (*EVAL, "--model", "@ck"), "config.json is corrupt",
         ck(_garble("config.json", b"[]"))),
    case("ckpt-config-unknown-type", (*EVAL, "--model", "@ck"), "nosuchtype",
         ck(_edit_config(lambda c: c.update(model_type="nosuchtype")))),
    case("ckpt-weights-garbage", (*EVAL, "--model", "@ck"), "model.safetensors) cannot be loaded",
         ck(_garble("model.safetensors", os.urandom(1000)))),
    case("ckpt-weights-truncated", (*EVAL, "--model", "@ck"), "model.safetensors) cannot be loaded", ck(_truncate)),
    case("ckpt-weights-missing", (*EVAL, "--model", "@ck"), "no *.safetensors file", ck(_rm("model.safetensors"))),
    case("ckpt-weight-nan", (*EVAL, "--model", "@ck"), "holds NaN or Inf", ck(_edit_weights(_poison(float("nan"))))),
    case("ckpt-weight-inf", (*EVAL, "--model", "@ck"), "holds NaN or Inf", ck(_edit_weights(_poison(float("inf"))))),
    case("ckpt-weight-key-missing", (*EVAL, "--model", "@ck"), "lacks weights",
         ck(_edit_weights(lambda sd: sd.pop("vision_tower.post_layernorm.weight")))),
    case("ckpt-weights-misshaped", (*EVAL, "--model", "@ck"), "mis-shaped weights", ck(_edit_config(_wider_mlp))),
    case("ckpt-no-tokenizer", (*EVAL, "--model", "@ck"), "tokenizer.json missing", ck(_rm("tokenizer.json"))),
    case("ckpt-tokenizer-corrupt", (*EVAL, "--model", "@ck"), "corrupt tokenizer",
         ck(_garble("tokenizer.json", b"{garbage"))),
    case("ckpt-processor-corrupt", (*EVAL, "--model", "@ck"), "processor_config.json",
         ck(_garble("processor_config.json", b"{bad"))),
    case("ckpt-in-centralized-grid", ("centralized", "--out", "@out", "centralized.methods=lora",
                                      "centralized.models=@ck"), "cannot be loaded",
         ck(_garble("model.safetensors", b"\0" * 64))),
    case("ckpt-in-federated", (*FED, "model.name=@ck"), "holds NaN or Inf", ck(_edit_weights(_poison(float("nan"))))),
    # --- report ---------------------------------------------------------------------------------
    case("report-dir-missing", ("report", "@tmp/nope"), "run directory not found"),
    case("report-no-meta", ("report", "@tmp"), "no meta.json"),
    case("report-meta-corrupt", ("report", "@tmp/run"), "meta.json is unreadable or corrupt",
         write("run/meta.json", "{bad")),
    case("report-meta-no-kind", ("report", "@tmp/run"), "names no run kind", write("run/meta.json", "{}")),
    case("report-kind-unknown", ("report", "@tmp/run"), "no report for runs of kind 'nope'",
         write("run/meta.json", '{"kind": "nope"}')),
    case("report-cell-corrupt", ("report", "@tmp/run"), "x.json is unreadable or corrupt",
         both(write("run/meta.json", '{"kind": "centralized"}'), write("run/cells/x.json", "{"))),
    # --- DP / secure aggregation / attack options (added with those features) ---
    case("attack-unknown", (*FED, 'attack.names=["poison"]'), "unknown attack 'poison'"),
    case("attack-options-unknown-attack", (*FED, "attack.options.poison.x=1"), "unknown attack(s) poison"),
    case("attack-option-unknown", (*FED, 'attack.names=["scale"]', "attack.options.scale.boost=2.0"),
         "unknown option 'boost' for attack 'scale'"),
    case("attack-option-nan", (*FED, 'attack.names=["scale"]', "attack.options.scale.factor=nan"), "must be a finite number"),
    case("attack-factor-negative", (*FED, 'attack.names=["sign_flip"]', "attack.options.sign_flip.factor=-2.0"),
         "'factor' must be > 0"),
    case("attack-backdoor-patch", (*FED, 'attack.names=["backdoor"]', "attack.options.backdoor.patch=0.9"),
         "'patch' must be in"),
    case("attack-fraction-range", (*FED, "attack.fraction=1.5"), "attack.fraction"),
    case("attack-fraction-nan", (*FED, "attack.fraction=nan"), "attack.fraction"),
    case("attack-clean-off-no-attacks", (*FED, "attack.clean=false"), "needs attack.names"),
    case("attack-listed-twice", (*FED, 'attack.names=["scale","scale"]'), "more than once"),
    case("dp-mode-unknown", (*FED, "privacy.mode=laplace"), "valid: off"),
    case("dp-noise-negative", (*FED, "privacy.mode=server-fixed", "privacy.noise_multipliers=[-1]"),
         "noise_multipliers must be >= 0"),
    case("dp-noise-nan", (*FED, "privacy.mode=server-fixed", "privacy.noise_multipliers=[nan]"), "must be a finite number"),
    case("dp-noise-empty", (*FED, "privacy.mode=server-fixed", "privacy.noise_multipliers=[]"), "is empty"),
    case("dp-clip-zero", (*FED, "privacy.mode=server-fixed", "privacy.clipping_norm=0"), "clipping_norm"),
    case("dp-delta-range", (*FED, "privacy.mode=server-fixed", "privacy.delta=1.5"), "privacy.delta"),
    case("dp-quantile-range", (*FED, "privacy.mode=server-adaptive", "privacy.target_quantile=2"), "target_quantile"),
    case("dp-leaky-strategy", (*FED, "privacy.mode=server-fixed", "federated.strategies=scaffold"), "scaffold"),
    case("secagg-robust-rule", (*FED, "federated.secagg=true", "federated.strategies=krum"), "krum"),
    case("secagg-update-norm", (*FED, "federated.secagg=true", "federated.strategies=fedavg",
                                     "federated.max_update_norm=5"), "max_update_norm"),
    case("secagg-server-dp", (*FED, "federated.secagg=true", "federated.strategies=fedavg",
                                  "privacy.mode=server-fixed"), "client-fixed"),
    case("update-norm-negative", (*FED, "federated.max_update_norm=-1"), "max_update_norm"),
    case("timeout-negative", (*FED, "federated.round_timeout_s=-5"), "round_timeout_s"),
    case("straggler-slowdown", (*FED, "federated.straggler_slowdown=0.5"), "straggler_slowdown"),
    case("straggler-fraction", (*FED, "federated.straggler_fraction=2"), "straggler_fraction"),
    case("threads-negative", (*FED, "threads=-1"), "'threads' must be in 0"),
]


def _snapshot(root: Path) -> dict:
    """Every path under ``root`` with, for files, size, mtime and content hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p)] = None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns, hash(p.read_bytes()))
    return out


@pytest.mark.parametrize("argv, keyword, prep", CASES)
def test_bad_input_is_one_line_exit_2_and_creates_nothing(capsys, tmp_path, argv, keyword, prep):
    if prep is not None:
        prep(tmp_path)
    args = [a.replace("@out", str(tmp_path / "out")).replace("@tmp", str(tmp_path)).replace("@ck", str(tmp_path / "ck"))
            for a in argv]
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = main(args)
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fedmllm {args[0]}: error: "), lines[0]
    assert keyword in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
    assert _snapshot(tmp_path) == before, "the failed command created or changed files"


def test_the_suite_covers_sixty_kinds():
    assert len({p.id for p in CASES}) == len(CASES) >= 60


# --- the training loop stops at the first non-finite loss ---------------------------------------
class _Diverging(torch.nn.Module):
    """Loss w * x: finite until forward call ``bad`` (1-based), then NaN."""

    def __init__(self, bad: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.calls, self.bad = 0, bad

    def forward(self, x, labels):
        self.calls += 1
        loss = (self.w * x).mean()
        return SimpleNamespace(loss=loss * float("nan") if self.calls == self.bad else loss)


@pytest.mark.parametrize("grad_accum, bad, where", [(1, 3, "at step 3 of 10 (batch 3, samples"),
                                                    (2, 5, "at step 3 of 10 (batches 5-6, samples")])
def test_training_stops_at_the_first_non_finite_loss(grad_accum, bad, where):
    from fedmllm.errors import UserError
    from fedmllm.training.loop import TrainConfig, TrainingDiverged, train_local

    model = _Diverging(bad)
    collate = lambda b: {"x": torch.tensor(b, dtype=torch.float32), "labels": torch.ones(len(b), 1)}  # noqa: E731
    cfg = TrainConfig(lr=0.1, steps=10, batch_size=2, grad_accum=grad_accum)
    with pytest.raises(TrainingDiverged) as err:
        train_local(model, list(range(8)), collate, cfg, seed=0)
    msg = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in msg
    assert msg.startswith("training diverged: loss is nan ") and where in msg and "lower the learning rate" in msg
    assert model.calls == bad + (grad_accum - 1 if bad % grad_accum else 0)  # stopped at once
    assert torch.isfinite(model.w).all()  # the NaN never reached the weights


# --- the real console script: one line, no traceback (a subprocess each: a few seconds) ---------
@pytest.mark.parametrize("argv, keyword", [
    (["centralized", "--config", "@tmp/c.toml", "--out", "@out"], "not UTF-8"),
    (["eval", "--model", "no-such-org/no-such-mllm", "--tasks", "synth-chd", "--out", "@out"], "cannot be reached"),
])
def test_console_script(tmp_path, argv, keyword):
    (tmp_path / "c.toml").write_bytes(b"\xff\xfe[train]\n")
    args = [a.replace("@out", str(tmp_path / "out")).replace("@tmp", str(tmp_path)) for a in argv]
    env = {**os.environ, "HF_HUB_OFFLINE": "0"}  # the hub id case: no network here, or a proxy-free probe
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(proxy, None)
    env["HF_ENDPOINT"] = "http://fedmllm-no-such-host.invalid"  # never reachable, even with a network
    script = Path(sys.executable).parent / "fedmllm"
    proc = subprocess.run([str(script), *args], capture_output=True, text=True, env=env, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert keyword in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
