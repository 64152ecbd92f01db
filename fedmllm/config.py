"""Typed, documented, validated experiment configuration.

A config is a TOML file (see ``configs/``) plus ``key=value`` overrides with dotted keys
(``train.lr=1e-3``). Every field is documented by its ``help`` metadata; unknown keys, wrong types
and invalid values raise a one-line `UserError` that names the key and the valid choices. The
resolved config is saved with every run (``config.toml``) before any compute.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin, get_type_hints

import tomli_w

from fedmllm.errors import UserError
from fedmllm.options import check_type

SYNTH_DOWNSTREAM = ["synth-scienceqa", "synth-iconqa", "synth-rsvqa", "synth-pathvqa",
                    "synth-flickr30k", "synth-chd"]
SYNTH_UPSTREAM = ["synth-okvqa", "synth-gqa", "synth-textvqa", "synth-ocrvqa",
                  "synth-coco-caption", "synth-mme"]


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ModelConfig:
    name: str = _f("tiny-llava-ov", "model registry name (tiny-llava-ov, tiny-vila), hub id or local dir")
    pretrained: bool = _f(True, "load the shipped/pretrained weights (False: fresh random init)")


@dataclass
class DataConfig:
    downstream: list = _f(SYNTH_DOWNSTREAM, "downstream (target) tasks")
    upstream: list = _f(SYNTH_UPSTREAM, "upstream (general-knowledge) tasks used to measure forgetting")
    train_n: int = _f(512, "training samples per downstream task (0 = all, real datasets only)")
    test_n: int = _f(128, "test samples per downstream task")
    upstream_n: int = _f(128, "evaluation samples per upstream task")
    hub_org: str = _f("lmms-lab", "hub organisation of the lmms-eval datasets (moved to lmms-lab-encoder in 2026)")
    sources: dict = _f({}, "task -> hub id or local folder overriding the task's default source")


@dataclass
class TrainConfig:
    lr: float = _f(1e-3, "peak learning rate (AdamW)")
    steps: int = _f(300, "optimizer steps per training run (0: use epochs)")
    epochs: float = _f(3.0, "epochs over the training data when steps = 0 (paper: 3)")
    batch_size: int = _f(32, "examples per optimizer step before accumulation (paper: 16)")
    grad_accum: int = _f(1, "gradient accumulation micro-steps per optimizer step")
    warmup_ratio: float = _f(0.03, "fraction of steps of linear warm-up before cosine decay")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 = off)")
    precision: str = _f("auto", "auto (bf16 on CUDA, else fp32) | fp32 | bf16", choices=("auto", "fp32", "bf16"))
    device: str = _f("auto", "where training and evaluation run: auto (CUDA when torch sees a GPU; a Ray client "
                     "sees one only when federated.num_gpus_per_client > 0) | cpu | cuda",
                     choices=("auto", "cpu", "cuda"))


@dataclass
class EvalConfig:
    batch_size: int = _f(32, "generation batch size")


@dataclass
class CentralizedConfig:
    models: list = _f(["tiny-llava-ov"], "models of the grid")
    methods: list = _f(["lora"], "tuning methods of the grid")
    tasks: list = _f([], "downstream tasks of the grid (empty: all of data.downstream)")


@dataclass
class FederatedConfig:
    num_clients: int = _f(8, "number of simulated clients (partitions)")
    clients_per_round: int = _f(0, "clients sampled per round (0 = all)")
    rounds: int = _f(10, "federated rounds")
    local_steps: int = _f(30, "local optimizer steps per client per round")
    method: str = _f("lora", "tuning method whose state is communicated")
    strategies: list = _f(["fedavg"], "aggregation strategies to run (one federated run each)")
    partitioner: str = _f("task_dirichlet", "how the downstream data is split across clients")
    alpha: float = _f(0.5, "Dirichlet concentration for task/label skew (> 0; small = skewed)")
    baselines: list = _f(["pooled", "local"], "baselines on identical splits: pooled, local")
    eval_every: int = _f(1, "evaluate the global model on downstream tests every n rounds")
    upstream_every: int = _f(2, "evaluate forgetting on the upstream sets every n rounds")
    upstream_n: int = _f(48, "upstream samples per task for per-round forgetting")
    save_every: int = _f(5, "save the global adapter every n rounds (and at the end)")
    max_failure_fraction: float = _f(0.5, "round fails if more than this fraction of clients fail")
    lr_decay: float = _f(1.0, "multiply the client lr by this each round")
    fail_clients: list = _f([], "fault injection: partition ids whose training raises every round")
    num_cpus_per_client: float = _f(1.0, "Ray CPUs per simulated client (actors = cores / this)")
    num_gpus_per_client: float = _f(0.0, "Ray GPUs per simulated client, fractions share one (0.25: four clients "
                                    "per GPU; 0 = clients see no GPU); needs CUDA on the machine")
    object_store_mb: int = _f(256, "Ray object store cap in MB")
    ray_address: str = _f("", "Ray cluster to attach to (host:port or auto; its own settings apply). Empty: "
                          "$RAY_ADDRESS if set, else a fresh local Ray listening on 127.0.0.1 only, with "
                          "a private temp dir removed after the run; local: always that, ignoring "
                          "$RAY_ADDRESS")
    backend: str = _f("ray", "simulation engine: ray (Flower's Ray backend) | inprocess (the same apps "
                      "and Flower messages in this process, no Ray: debugging, small runs)",
                      choices=("ray", "inprocess"))
    baseline_schedule: str = _f("rounds", "pooled/local training schedule: rounds (as the clients: per round "
                                "a fresh optimizer at the round's constant lr and the clients' seeds, so "
                                "pooled = one-client FedAvg on the union) | single (one run of all steps "
                                "with train.warmup_ratio and cosine decay)", choices=("rounds", "single"))
    baseline_placement: str = _f("auto", "where the pooled/local baselines train (schedule rounds): clients (each "
                                 "round one job per baseline on the simulation's clients, pooled beside the "
                                 "local ones: the Ray actors train them in parallel) | server (this process, "
                                 "one after the other) | auto (clients on the Ray backend of `fedmllm "
                                 "federated`, else server)", choices=("auto", "clients", "server"))
    baseline_checkpoint_every: int = _f(50, "pooled/local baselines: save a resumable loop checkpoint "
                                        "every n steps (0 = off)")
    instrument: bool = _f(True, "measure per-client metrics and drift every round (off: only aggregates)")
    client_ranks: list = _f([], "per-client LoRA ranks r_k <= methods.lora.r, one per client (empty: all "
                            "methods.lora.r); only strategies that allow heterogeneous ranks")
    rank_profile: str = _f("", "named per-client rank mix instead of client_ranks: edge-mix = r in "
                           "(2, 4, 8, 16) for clients 0, 1, 2, 3, 4, ... in turn")
    rank_scope: str = _f("all", "which strategies get the mixed client ranks: all (a strategy that needs "
                         "equal ranks is an error) | where-allowed (those run every client at "
                         "methods.lora.r)", choices=("all", "where-allowed"))
    client_local_steps: list = _f([], "per-client local steps per round, one per client (empty: all local_steps)")
    eval_personalized: bool = _f(True, "score every client's own model on its local test split every "
                                 "eval_every rounds (required by personalized strategies)")
    max_update_norm: float = _f(0.0, "reject a reply whose update (trained minus global state) has an L2 norm "
                                "above this (0 = off; NaN/Inf values and wrong example counts are always rejected)")
    round_timeout_s: float = _f(0.0, "aggregate the replies that arrived within this many seconds of a round's "
                                "start, the late ones count as failed (0 = wait for every client)")
    straggler_fraction: float = _f(0.0, "fraction of clients (chosen reproducibly from the seed) that are stragglers")
    straggler_slowdown: float = _f(1.0, "a straggler's round takes this many times its compute time (simulated: "
                                   "it sleeps the difference before replying)")
    secagg: bool = _f(False, "secure aggregation through Flower's SecAgg+: the server sees only the sum of the "
                      "clients' updates (FedAvg-family strategies; per-client measures off)")
    secagg_num_shares: float = _f(1.0, "SecAgg+: fraction of the round's clients each client secret-shares its "
                                  "keys with, itself included (1 = all: SecAgg's complete graph; Flower makes "
                                  "a partial count odd)")
    secagg_reconstruction_threshold: float = _f(0.67, "SecAgg+: fraction of those shares that rebuilds a secret "
                                                "(at least 2): higher resists more colluding clients, lower "
                                                "tolerates more dropouts")
    secagg_clipping_range: float = _f(8.0, "SecAgg+: each weighted state value (n / max_weight) x must lie in "
                                      "[-c, c] (a client refuses to send one outside: it would be clipped)")
    secagg_quantization_range: int = _f(4194304, "SecAgg+: values are quantized to integers 0..T, a step of "
                                        "2 c / T (T = 2**22; clients per round x T must stay below 2**32)")
    secagg_max_weight: float = _f(0.0, "SecAgg+: the largest example count a client may weigh in with; weights "
                                  "are n / max_weight, so a tight value keeps precision (0 = the largest partition)")


@dataclass
class AttackConfig:
    names: list = _f([], "attacks: every strategy also runs with attackers, as system '<strategy>+<attack>' "
                     "(sign_flip, scale, gaussian, label_flip, backdoor; `fedmllm config` lists them)")
    clean: bool = _f(True, "also run every strategy without attackers (its clean reference)")
    fraction: float = _f(0.2, "fraction of clients that are malicious, chosen reproducibly from the seed")
    options: dict = _f({}, "per-attack options, e.g. [attack.options.scale] factor = 10")


@dataclass
class PrivacyConfig:
    mode: str = _f("off", "user-level differential privacy: off | server-fixed | client-fixed | server-adaptive | "
                   "client-adaptive (who clips the update; adaptive = clipping norm follows a quantile, "
                   "Andrew et al. 2021)",
                   choices=("off", "server-fixed", "client-fixed", "server-adaptive", "client-adaptive"))
    noise_multipliers: list = _f([1.0], "noise multipliers z (noise std = z x clipping norm); one system per "
                                 "value, named '<strategy>+dp<z>'")
    clipping_norm: float = _f(1.0, "L2 bound of each client's update (the initial bound when adaptive)")
    delta: float = _f(1e-5, "delta of the (epsilon, delta) guarantee the accountant reports")
    target_quantile: float = _f(0.5, "adaptive: fraction of updates the clipping norm should leave unclipped")
    clip_lr: float = _f(0.2, "adaptive: geometric learning rate of the clipping norm")
    clipped_count_stddev: float = _f(0.0, "adaptive: noise std of the unclipped count (0: clients per round / 20, "
                                     "as Andrew et al. 2021 recommend)")


@dataclass
class CollabConfig:
    large: str = _f("tiny-llava-ov-large", "the server's large model (registry name, checkpoint folder or hub id); "
                    "the clients' small model is model.name")
    paradigms: list = _f(["fedcollm", "fedmkt", "offsite", "proxy", "repr_align"],
                         "collaboration paradigms to run (`fedmllm config` lists them)")
    baselines: list = _f(["large_zero", "large_pooled", "small_fedavg"], "baselines on the identical split: "
                         "large_zero, large_pooled, small_fedavg")
    public_tasks: list = _f([], "tasks of the server's public set (empty: data.upstream)")
    public_n: int = _f(16, "public samples per public task")
    public_offset: int = _f(3000, "first training index of the public split in each public task (3000: beyond "
                            "the embedded bases' pretraining pool); a downstream task needs >= data.train_n, "
                            "else the public set would overlap the clients' data")
    kd_steps: int = _f(8, "server-side training steps per side per round on the public set")
    kd_lr: float = _f(1e-3, "learning rate of the server-side training")
    kd_batch_size: int = _f(16, "batch size of the server-side training")
    kd_weight: float = _f(0.5, "weight of the KD term against the public CE (loss = (1-w) CE + w KD; "
                             "repr_align: (1-w) CE + align term); 1 = no public labels in the loss")
    temperature: float = _f(2.0, "KD temperature")
    top_k: int = _f(8, "teacher logits kept per answer position (what travels)")
    max_answer_tokens: int = _f(24, "answer positions of the logits that travel (longer answers are cut)")
    align_loss: str = _f("mse", "repr_align's alignment loss: mse | contrastive", choices=("mse", "contrastive"))
    align_weight: float = _f(0.05, "repr_align: weight of the alignment term (1.0 let the MSE, ~40x the public CE, wreck the "
                             "large model: F -65 on configs/collab/embedded.toml; 0.05: -3.7)")
    emulator_bottom: int = _f(1, "offsite: first layers of the large LLM kept as the trainable adapter")
    emulator_top: int = _f(1, "offsite: last layers kept as the trainable adapter")
    emulator_keep: float = _f(0.5, "offsite: fraction of the middle layers the emulator keeps (uniform layer drop)")
    proxy_alpha: float = _f(1.0, "proxy: weight of the small tuned-minus-base logit offset")
    large_steps: int = _f(0, "large_pooled: training steps of the large model on the pooled client data "
                          "(0: rounds x local_steps x num_clients, the small pooled budget)")
    large_lr: float = _f(0.0, "large_pooled: learning rate (0: the method's lr)")


@dataclass
class PretrainConfig:
    models: list = _f(["tiny-llava-ov", "tiny-vila"], "embedded models to pretrain")
    vision_warmup_steps: int = _f(300, "vision-tower-only classification warm-up steps (shape needs it)")
    vision_warmup_lr: float = _f(3e-3, "learning rate of the vision warm-up")
    out: str = _f("", "checkpoint root (empty: the package's fedmllm/assets/checkpoints)")
    steps: dict = _f({}, "per-model training steps overriding train.steps, e.g. { tiny-llava-ov = 4500 }")
    init: str = _f("", "continue from a pretrained checkpoint instead of a seeded random init: a registered "
                   "model's name (its shipped checkpoint) or a checkpoint folder holding card.json; its card "
                   "is kept in the new card as the first stage (empty: random init + vision warm-up)")


@dataclass
class Config:
    seed: int = _f(0, "base seed; every client/round seed is derived from it")
    seeds: list = _f([], "run the experiment once per seed, each into its own sub-run <run>/seed-<s>/ (seed "
                     "replaced), and report mean, std and 95% t-interval over them; [] = one run at `seed`")
    threads: int = _f(1, "torch intra-op threads of this process: centralized cells, baselines, evaluation "
                      "(Ray clients always use 1); 0 = torch's default (one per core). 1 by default: on "
                      "these small models a second thread gains nothing alone and collapses under a "
                      "competing job (benchmarks/contention.py)")
    tracking: list = _f(["tensorboard"], "live trackers every event is also logged to: tensorboard "
                        "(event files in <run>/tb/), mlflow (local file store <run>/mlruns, the mlflow "
                        "extra); [] = off (metrics.jsonl is always written)")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    centralized: CentralizedConfig = field(default_factory=CentralizedConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    collab: CollabConfig = field(default_factory=CollabConfig)
    methods: dict = _f({}, "per-method options, e.g. [methods.lora] r = 8; a method table may set lr")
    strategy_options: dict = _f({}, "per-strategy options, e.g. [strategy_options.fedprox] proximal_mu = 0.01")


_POSITIVE = {"train.lr", "train.batch_size", "train.grad_accum", "eval.batch_size", "data.test_n",
             "data.upstream_n", "federated.num_clients", "federated.rounds", "federated.local_steps",
             "federated.alpha", "federated.eval_every", "federated.upstream_every", "federated.save_every",
             "pretrain.vision_warmup_lr", "collab.public_n", "collab.kd_batch_size", "collab.temperature",
             "collab.top_k", "collab.max_answer_tokens", "collab.kd_lr", "collab.emulator_keep"}
_NON_NEGATIVE = {"train.steps", "train.epochs", "train.weight_decay", "train.max_grad_norm",
                 "train.warmup_ratio", "data.train_n", "federated.clients_per_round", "federated.upstream_n",
                 "federated.baseline_checkpoint_every", "federated.num_gpus_per_client", "pretrain.vision_warmup_steps",
                 "collab.public_offset", "collab.kd_steps", "collab.kd_weight", "collab.align_weight",
                 "collab.proxy_alpha", "collab.large_steps", "collab.large_lr"}
# Upper bounds: what one host can hold (a typo such as 10**9 would be killed for memory or hang).
_AT_MOST = {"data.train_n": 10**6, "data.test_n": 10**6, "data.upstream_n": 10**6, "federated.upstream_n": 10**6,
            "federated.num_clients": 10_000, "train.grad_accum": 1024}
SEED_LIMIT = 2**32  # numpy's legacy seeding takes [0, 2**32); torch takes more
RAY_MIN_OBJECT_STORE_MB = 75  # ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES


def _check_type(key: str, value: Any, typ: Any) -> Any:
    """``value`` against the type hint ``typ``: scalars by `fedmllm.options.check_type` (ints
    become floats where a float is expected; NaN and ±Inf are rejected); a comma-separated string
    is split where a list is expected; anything else of the wrong type raises `UserError`."""
    if typ in (bool, int, float, str):
        return check_type("config key", key, value, typ)
    base = get_origin(typ) or typ
    if base is list and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise UserError(f"config key {key!r} must be {base.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            raise UserError(f"unknown config key {full!r}.{hint} Valid keys here: {', '.join(prefix + n for n in names)}")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, dict):
                raise UserError(f"config key {full!r} must be a table")
            kwargs[key] = _build(typ, value, f"{full}.")
        else:
            kwargs[key] = _check_type(full, value, typ)
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices")
        if choices and getattr(obj, f.name) not in choices:
            raise UserError(f"config key '{prefix}{f.name}' = {getattr(obj, f.name)!r} is invalid; valid: {', '.join(choices)}")
    return obj


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # a bare string such as model.name=tiny-vila


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` overrides (TOML values; bare words are strings) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} must look like key=value (e.g. train.lr=1e-3)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"override {key!r}: {p!r} is not a table")
        node[parts[-1]] = _parse_value(raw.strip())
    return data


def check_seeds(seeds: list) -> None:
    """``seeds``: distinct integers in the seed range; one alone is allowed (a sub-run layout)."""
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < SEED_LIMIT:
            raise UserError(f"config key 'seeds' holds {s!r}: every seed must be an integer in [0, 2**32), "
                            "e.g. seeds = [0, 1, 2] or --seeds 0,1,2")
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise UserError(f"config key 'seeds' lists {', '.join(map(str, dup))} more than once; give each seed once")


def check_unique_overrides(overrides: list[str]) -> None:
    """Refuse a key given twice on the command line (``train.lr=1 train.lr=2``), or a table and a
    key inside it; `apply_overrides` itself lets a later override win (code builds on that)."""
    seen: dict[str, str] = {}
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        for other, given in seen.items():
            if other == key or other.startswith(f"{key}.") or key.startswith(f"{other}."):
                raise UserError(f"override {key!r} is given twice ({given!r} and {item!r}); give each key once")
        seen[key] = item


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a TOML config (or defaults), apply overrides, validate, return a `Config`."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if p.is_dir():
            raise UserError(f"config file {p} is a folder; give a TOML file (configs live under configs/)")
        if not p.is_file():
            raise UserError(f"config file not found: {p} (configs live under configs/)")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise UserError(f"config file {p} is not UTF-8 text (byte {e.start}): save it as UTF-8 TOML") from None
        except OSError as e:
            raise UserError(f"config file {p} cannot be read: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"config file {p} is not valid TOML: {e}") from None
        if not data:  # a truncated or wrong file would otherwise silently run the defaults
            raise UserError(f"config file {p} holds no settings (empty or only comments); give a config "
                            "from configs/, or omit --config for the command's default")
    data = apply_overrides(data, overrides or [])
    cfg = _build(Config, data)
    validate(cfg)
    return cfg


def config_from_toml(text: str) -> Config:
    """A validated `Config` from resolved TOML text (what ``dumps`` writes; clients get it this way)."""
    cfg = _build(Config, tomllib.loads(text))
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field and range checks; raises `UserError` with an actionable message."""
    flat = to_dict(cfg)
    for key in _POSITIVE | _NON_NEGATIVE:
        section, name = key.split(".")
        value = flat[section][name]
        if key in _POSITIVE and not value > 0:  # `not >`: a NaN fails too
            raise UserError(f"config key {key!r} must be > 0, got {value}")
        if key in _NON_NEGATIVE and not value >= 0:
            raise UserError(f"config key {key!r} must be >= 0, got {value}")
    for key, bound in _AT_MOST.items():
        section, name = key.split(".")
        if flat[section][name] > bound:
            raise UserError(f"config key {key!r} must be <= {bound:,}, got {flat[section][name]:,}")
    if not 0 <= cfg.seed < SEED_LIMIT:
        raise UserError(f"config key 'seed' must be in [0, 2**32) (the numpy/torch seed range), got {cfg.seed}")
    cfg.seeds = [int(s) if isinstance(s, str) and s.strip().isdigit() else s for s in cfg.seeds]  # --seeds 0,1
    check_seeds(cfg.seeds)
    if not cfg.train.warmup_ratio < 1:
        raise UserError(f"config key 'train.warmup_ratio' must be in [0, 1) (a fraction of the steps), "
                        f"got {cfg.train.warmup_ratio}")
    if cfg.train.steps == 0 and cfg.train.epochs < 1:
        raise UserError(f"set train.steps > 0, or train.epochs >= 1 with train.steps = 0 (got epochs "
                        f"{cfg.train.epochs})")
    for name, steps in cfg.pretrain.steps.items():  # names are checked against the model registry in pretrain
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise UserError(f"pretrain.steps.{name} must be an int >= 1, got {steps!r}")
    fed = cfg.federated
    if fed.clients_per_round > fed.num_clients:
        raise UserError(f"federated.clients_per_round ({fed.clients_per_round}) exceeds "
                        f"federated.num_clients ({fed.num_clients})")
    if not 0 <= fed.max_failure_fraction < 1:
        raise UserError("federated.max_failure_fraction must be in [0, 1)")
    if not fed.num_cpus_per_client > 0:
        raise UserError(f"config key 'federated.num_cpus_per_client' must be > 0 (Ray CPUs per client; "
                        f"fractions share a core), got {fed.num_cpus_per_client}")
    if fed.object_store_mb < RAY_MIN_OBJECT_STORE_MB:
        raise UserError(f"config key 'federated.object_store_mb' must be >= {RAY_MIN_OBJECT_STORE_MB} "
                        f"(Ray's minimum object store), got {fed.object_store_mb}")
    from fedmllm.tracking import check_names

    check_names(cfg.tracking)
    for key, values in (("data.downstream", cfg.data.downstream), ("data.upstream", cfg.data.upstream),
                        ("centralized.models", cfg.centralized.models), ("centralized.methods", cfg.centralized.methods),
                        ("federated.strategies", fed.strategies), ("tracking", cfg.tracking),
                        ("attack.names", cfg.attack.names)):
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            raise UserError(f"{key} lists {', '.join(map(str, dup))} more than once")
    extra = [t for t in cfg.centralized.tasks if t not in cfg.data.downstream]
    if extra:
        raise UserError(f"centralized.tasks {extra} are not in data.downstream ({', '.join(cfg.data.downstream)})")
    for b in fed.baselines:
        if b not in ("pooled", "local"):
            raise UserError(f"unknown baseline {b!r}; valid: pooled, local")
    _check_trust(cfg)
    for name, table in cfg.methods.items():
        if not isinstance(table, dict):
            raise UserError(f"[methods.{name}] must be a table of options")
        if "lr" in table:
            lr = check_type("config key", f"methods.{name}.lr", table["lr"], float)
            if lr <= 0:
                raise UserError(f"methods.{name}.lr must be > 0, got {table['lr']!r}")


def _check_trust(cfg: Config) -> None:
    """Ranges of the robustness, privacy and straggler options (names are checked against their
    registries in `simulations.federated.check_federated`)."""
    fed, atk, dp = cfg.federated, cfg.attack, cfg.privacy
    for key, value, lo, hi in (("federated.straggler_fraction", fed.straggler_fraction, 0.0, 1.0),
                               ("attack.fraction", atk.fraction, 0.0, 1.0),
                               ("privacy.target_quantile", dp.target_quantile, 0.0, 1.0)):
        if not lo <= value <= hi:
            raise UserError(f"config key {key!r} must be in [{lo:g}, {hi:g}], got {value}")
    for key, value in (("federated.max_update_norm", fed.max_update_norm),
                       ("federated.round_timeout_s", fed.round_timeout_s),
                       ("privacy.clipped_count_stddev", dp.clipped_count_stddev)):
        if value < 0:
            raise UserError(f"config key {key!r} must be >= 0, got {value}")
    if fed.straggler_slowdown < 1:
        raise UserError(f"config key 'federated.straggler_slowdown' must be >= 1 (a factor on the compute "
                        f"time), got {fed.straggler_slowdown}")
    if fed.lr_decay <= 0:
        raise UserError(f"config key 'federated.lr_decay' must be > 0 (the lr is multiplied by it every "
                        f"round), got {fed.lr_decay}")
    for key, value in (("privacy.clipping_norm", dp.clipping_norm), ("privacy.clip_lr", dp.clip_lr)):
        if value <= 0:
            raise UserError(f"config key {key!r} must be > 0, got {value}")
    if not 0 < dp.delta < 1:
        raise UserError(f"config key 'privacy.delta' must be in (0, 1), got {dp.delta}")
    if dp.mode != "off" and not dp.noise_multipliers:
        raise UserError("privacy.noise_multipliers is empty: give at least one noise multiplier (0 = clipping only)")
    for z in dp.noise_multipliers:
        z = check_type("config key", "privacy.noise_multipliers", z, float)
        if z < 0:
            raise UserError(f"privacy.noise_multipliers must be >= 0, got {z}")
    if len(set(map(float, dp.noise_multipliers))) != len(dp.noise_multipliers):
        raise UserError(f"privacy.noise_multipliers lists a value more than once: {dp.noise_multipliers}")
    if not atk.clean and not atk.names:
        raise UserError("attack.clean = false needs attack.names: otherwise no strategy would run")
    if not isinstance(atk.options, dict) or any(not isinstance(v, dict) for v in atk.options.values()):
        raise UserError("[attack.options] must hold one table per attack, e.g. [attack.options.scale] factor = 10")
    for key, value in (("federated.secagg_num_shares", fed.secagg_num_shares),
                       ("federated.secagg_reconstruction_threshold", fed.secagg_reconstruction_threshold)):
        if not 0 < value <= 1:
            raise UserError(f"config key {key!r} must be in (0, 1] (a fraction), got {value}")
    if fed.secagg_clipping_range <= 0:
        raise UserError(f"config key 'federated.secagg_clipping_range' must be > 0, got {fed.secagg_clipping_range}")
    if fed.secagg_max_weight < 0:
        raise UserError(f"config key 'federated.secagg_max_weight' must be >= 0 (0 = the largest partition), "
                        f"got {fed.secagg_max_weight}")
    per_round = (fed.clients_per_round or fed.num_clients) if fed.secagg else 1
    if not 1 < fed.secagg_quantization_range < 2 ** 32 // per_round:  # the sum of K values 0..T wraps at 2**32
        raise UserError(f"config key 'federated.secagg_quantization_range' must be in (1, 2**32 / clients per "
                        f"round = {2 ** 32 // per_round}) (Flower's mask modulus), got {fed.secagg_quantization_range}")


def method_options(cfg: Config, method: str) -> tuple[dict, float]:
    """(options for the method, its learning rate): the ``[methods.<name>]`` table minus ``lr``."""
    table = dict(cfg.methods.get(method, {}))
    lr = float(table.pop("lr", cfg.train.lr))
    return table, lr


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dumps(cfg: Config) -> str:
    """The resolved config as TOML (what ``config.toml`` in a run directory holds)."""
    return tomli_w.dumps(to_dict(cfg))


def diff(a: Config, b: Config, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between two configs."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("methods", "sources", "strategy_options"):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    fa, fb = flat(to_dict(a)), flat(to_dict(b))
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k) and k not in ignore)


def describe() -> str:
    """Every config key with its default and help text (``fedmllm config``)."""
    lines = []

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            typ = get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(typ):
                lines.append(f"[{prefix}{f.name}]")
                walk(typ, f"{prefix}{f.name}.")
            else:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                lines.append(f"  {prefix}{f.name} = {default!r}  # {f.metadata.get('help', '')}")

    walk(Config, "")
    return "\n".join(lines)


__all__ = ["Config", "load_config", "config_from_toml", "apply_overrides", "validate", "dumps", "diff", "describe",
           "method_options", "check_unique_overrides"]
