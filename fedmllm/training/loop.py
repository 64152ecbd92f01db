"""The one local training loop, shared by federated clients and the centralized baseline.

A plain loop in the style of torchtune's recipes: no trainer framework. Federated algorithms
enter only through hooks (`fedmllm.training.hooks`). The device is `TrainConfig.device` (auto: CUDA
when torch sees a GPU); accelerate runs bf16 autocast; the model and optimizer are not
``prepare``-d (that would re-wrap ``forward`` on every call for a model cached across rounds, and
adds nothing on one device), and backward / clipping
are plain torch (no fp16, hence no loss scaler). The loss stays on the device except for the
divergence check (a NaN or Inf loss raises `TrainingDiverged` before it reaches the weights: every
step on CPU, every `FINITE_CHECK_EVERY` steps on an accelerator) and what ``log_every`` asks for.

A call can be made resumable with a `LoopCheckpoint`: the loop state is saved every few steps and
a later call with the same arguments continues from it, ending bit-for-bit where an uninterrupted
call would.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.nn as nn
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from fedmllm.errors import UserError
from fedmllm.faults import crash_point
from fedmllm.training.hooks import TrainHook
from fedmllm.training.progress import StepProgress

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("cosine", "constant")
IGNORE_INDEX = -100  # transformers' label value for positions without loss
CHECKPOINT_FORMAT = 1  # version of the `LoopCheckpoint` file layout
FINITE_CHECK_EVERY = 16  # on an accelerator: optimizer steps between the (syncing) loss checks


@dataclass
class TrainConfig:
    """Local training settings (one call of `train_local`).

    Attributes:
        lr: peak learning rate of AdamW (paper: 1e-5 LLaVA, 1e-4 VILA; Full-ST 1e-5).
        steps: optimizer steps; 0 means "run ``epochs`` epochs".
        epochs: passes over the samples when ``steps`` is 0 (paper: 3).
        batch_size: samples per micro-batch (paper: 16, as batch_size × grad_accum).
        grad_accum: micro-batches per optimizer step.
        warmup_ratio: fraction of steps with linear warm-up from 0.
        schedule: after warm-up, ``"cosine"`` decay to 0 or ``"constant"``.
        weight_decay: AdamW's decoupled weight decay.
        max_grad_norm: clip the global gradient norm to this; 0 disables clipping.
        precision: ``"auto"`` (bf16 autocast on CUDA, else fp32), ``"fp32"`` or ``"bf16"``.
        device: ``"auto"`` (CUDA when torch sees a GPU, else CPU), ``"cpu"`` or ``"cuda"``.
        log_every: log loss and lr every this many steps; 0 never.
    """

    lr: float = 1e-4
    steps: int = 0
    epochs: int = 1
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.0
    schedule: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    precision: str = "auto"
    device: str = "auto"
    log_every: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `UserError` naming the first invalid field."""
        checks = [
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.steps >= 0, f"steps must be >= 0, got {self.steps}"),
            (self.steps > 0 or self.epochs >= 1, f"epochs must be >= 1 when steps is 0, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            (0.0 <= self.warmup_ratio < 1.0, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.max_grad_norm >= 0, f"max_grad_norm must be >= 0, got {self.max_grad_norm}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}"),
            (self.device in DEVICES, f"device must be one of {DEVICES}, got {self.device!r}"),
            (self.log_every >= 0, f"log_every must be >= 0, got {self.log_every}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"train config: {message}")

    def num_steps(self, n_samples: int) -> int:
        """Optimizer steps for ``n_samples`` samples: ``steps``, or ``epochs`` full passes."""
        if self.steps:
            return self.steps
        return math.ceil(self.epochs * math.ceil(n_samples / self.batch_size) / self.grad_accum)


def loop_config(train_cfg, **changes) -> TrainConfig:
    """The training loop's config from the experiment's ``[train]`` table (plus changes)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in dataclasses.asdict(train_cfg).items() if k in names}
    values.update(changes)
    return TrainConfig(**values)


@dataclass
class LoopCheckpoint:
    """Where and how often `train_local` saves its state so that a killed call can resume.

    Every ``every`` optimizer steps (never after the last one: the caller saves the result) the
    loop atomically replaces ``path`` (``torch.save`` of a plain dict: step, trainable parameters,
    AdamW and scheduler state, RNG state, examples, losses so far). A call that finds ``path``
    validates it against its own run and continues from it. Nothing is ever deleted: the caller
    removes ``path`` once the result is safe. Hooks' own state is not saved (their ``on_start``
    runs again on resume), so only stateless hooks resume exactly.
    """

    path: Path
    every: int

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"LoopCheckpoint.every must be an int >= 1, got {self.every!r}")


@dataclass
class TrainStats:
    """What one `train_local` call did. Losses are the data loss (hook terms excluded), one per
    optimizer step; ``examples`` counts samples seen (with repeats); ``seconds`` is wall time."""

    steps: int
    examples: int
    loss_first: float
    loss_last: float
    loss_mean: float
    seconds: float
    losses: list[float] = field(default_factory=list)


def train_local(model: nn.Module, samples: Sequence[Any], collate: Callable[[list], dict],
                cfg: TrainConfig, *, seed: int, hooks: Sequence[TrainHook] = (),
                progress: bool | str = False, checkpoint: Optional[LoopCheckpoint] = None) -> TrainStats:
    """Train ``model``'s trainable parameters on ``samples``; returns `TrainStats`.

    ``collate(list_of_samples)`` gives the model's keyword arguments including ``labels``;
    ``model(**batch).loss`` is the (answer-only) mean loss. ``seed`` fixes the sample order
    (a per-call ``torch.Generator``) and dropout (``torch.manual_seed`` inside a forked RNG, so the
    caller's global RNG is untouched); derive it from (run, client, round).

    ``checkpoint`` makes the call resumable (see `LoopCheckpoint`): if its file exists it must come
    from the same run (steps, seed, sample count, batch size, accumulation, device type, trainable
    parameter names and shapes; else `ValueError`), and training continues from its step with the
    same result as an uninterrupted call (``seconds`` covers this call only). ``model`` must be in
    the state the interrupted call started from except for its trainable parameters, which are
    restored.

    ``progress`` (True, or a label such as a grid cell's name) reports steps, loss and s/step while
    it trains (`fedmllm.training.progress`: one updating line on a terminal, a line per quarter
    of the steps elsewhere).
    """
    cfg.validate()
    if not samples:
        raise UserError("train_local: no training samples")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("train_local: the model has no trainable parameters (apply a tuning method)")
    total = cfg.num_steps(len(samples))
    acc = _accelerator(cfg.precision, cfg.device)
    device = acc.device
    model.to(device)
    trainable = list(params.values())
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    make_schedule = get_cosine_schedule_with_warmup if cfg.schedule == "cosine" else _constant
    scheduler = make_schedule(optimizer, round(cfg.warmup_ratio * total), total)
    order = _index_batches(len(samples), cfg.batch_size, torch.Generator().manual_seed(seed))
    run_id = {"format": CHECKPOINT_FORMAT, "steps": total, "seed": seed, "samples": len(samples),
              "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "device": device.type}
    resumed = _load_checkpoint(checkpoint.path, run_id, params) if checkpoint is not None else None
    first = 0
    losses: list[torch.Tensor] = []
    examples = 0
    if resumed is not None:
        first, examples = resumed["step"], resumed["examples"]
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(resumed["params"][name])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        losses = list(resumed["losses"].to(device).unbind())
        for _ in range(first * cfg.grad_accum):  # the micro-batches already consumed
            next(order)
        log.info("train_local: resuming at step %d/%d from %s", first, total, checkpoint.path)
    bar = StepProgress(total, first, progress if isinstance(progress, str) else "train") if progress else None
    was_training = model.training
    model.train()
    for hook in hooks:
        hook.on_start(model, params)
    start = time.perf_counter()
    unchecked: list[tuple[int, list[list[int]], torch.Tensor]] = []  # (step, micro-batches, loss)
    with torch.random.fork_rng(devices=_cuda_devices(device)):
        torch.manual_seed(seed)
        if resumed is not None:
            torch.set_rng_state(resumed["rng_cpu"])
            if device.type == "cuda":
                torch.cuda.set_rng_state(resumed["rng_cuda"], device)
        for step in range(first, total):
            idx = [next(order) for _ in range(cfg.grad_accum)]
            batches = [_to(collate([samples[i] for i in b]), device) for b in idx]
            examples += sum(map(len, idx))
            step_loss = None
            for batch, weight in zip(batches, _weights(batches)):
                with acc.autocast():
                    loss = model(**batch).loss
                if weight is not None:
                    loss = loss * weight
                # Plain backward: one device and bf16 autocast need no loss scaling.
                loss.backward()
                step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
            unchecked.append((step, idx, step_loss))
            # Before the update, so a NaN never reaches the weights (CPU: every step, free; an
            # accelerator: every few steps, each check is a device sync).
            if (device.type == "cpu" or len(unchecked) >= FINITE_CHECK_EVERY or step + 1 == total
                    or (checkpoint is not None and (step + 1) % checkpoint.every == 0)):
                _check_finite(unchecked, cfg, total)
                unchecked = []
            terms = [t for h in hooks if (t := h.loss_term(model, params)) is not None]
            if terms:
                sum(terms).backward()
            for hook in hooks:
                hook.after_backward(model, params)
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            if bar is not None:
                bar.update(step + 1, step_loss)
            if cfg.log_every and (step + 1) % cfg.log_every == 0:
                log.info("step %d/%d loss %.4f lr %.3g", step + 1, total, step_loss.item(), scheduler.get_last_lr()[0])
            if checkpoint is not None and (step + 1) % checkpoint.every == 0 and step + 1 < total:
                _save_checkpoint(checkpoint.path, {
                    **run_id, "step": step + 1, "examples": examples,
                    "names": list(params),
                    "params": {n: p.detach().to("cpu", copy=True) for n, p in params.items()},
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng_cpu": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "losses": torch.stack(losses).cpu(),
                })
                crash_point(checkpoint.path.stem, step + 1)  # kill-and-resume tests
    values = torch.stack(losses).float().tolist()  # one device sync for the whole call
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    for hook in hooks:
        hook.on_end(model, params)
    model.train(was_training)
    return TrainStats(steps=total, examples=examples, loss_first=values[0], loss_last=values[-1],
                      loss_mean=sum(values) / len(values), seconds=seconds, losses=values)


class TrainingDiverged(UserError):
    """The loss became NaN or Inf: the run cannot continue (a one-line message for the user)."""


def _check_finite(unchecked: list[tuple[int, list[list[int]], torch.Tensor]], cfg: TrainConfig,
                  total: int) -> None:
    """Raise `TrainingDiverged` naming the first step of ``unchecked`` whose loss is not finite."""
    finite = torch.isfinite(torch.stack([loss for _, _, loss in unchecked]))
    if bool(finite.all()):
        return
    bad = int((~finite).nonzero()[0])
    step, idx, loss = unchecked[bad]
    first = step * cfg.grad_accum + 1  # 1-based micro-batch number of the call
    batches = f"batch {first}" if len(idx) == 1 else f"batches {first}-{first + len(idx) - 1}"
    shown = [i for b in idx for i in b]
    clip = "" if cfg.max_grad_norm else " or set train.max_grad_norm > 0 (clipping is off)"
    raise TrainingDiverged(
        f"training diverged: loss is {float(loss)} at step {step + 1} of {total} ({batches}, samples "
        f"{', '.join(map(str, shown[:5]))}{', ...' if len(shown) > 5 else ''}); lower the learning rate "
        f"(train.lr or [methods.<name>] lr; this run: {cfg.lr:g}){clip}")


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temp file in ``path``'s folder, then an atomic ``os.replace``.

    The temp name is fixed, so one left by a kill during the write is overwritten by the next save.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_checkpoint(path: Path, run_id: dict[str, Any],
                     params: dict[str, nn.Parameter]) -> Optional[dict[str, Any]]:
    """The saved loop state at ``path`` (None if absent), checked against this run."""
    if not path.exists():
        return None
    # Only tensors and plain containers: loadable without unpickling arbitrary objects.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"loop checkpoint {path}: not a train_local checkpoint")
    for key, want in run_id.items():
        if state.get(key) != want:
            raise ValueError(f"loop checkpoint {path}: {key} is {state.get(key)!r}, this run has {want!r}")
    names = state["names"]
    if names != list(params):
        missing = [n for n in params if n not in names]
        unexpected = [n for n in names if n not in params]
        raise ValueError(f"loop checkpoint {path}: trainable parameters differ: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}" + ("" if missing or unexpected else " (order)"))
    for name, p in params.items():
        saved = state["params"][name]
        if saved.shape != p.shape:
            raise ValueError(f"loop checkpoint {path}: parameter {name} has shape {tuple(saved.shape)}, "
                             f"the model has {tuple(p.shape)}")
    if not 0 < state["step"] < run_id["steps"]:
        raise ValueError(f"loop checkpoint {path}: step {state['step']} outside 1..{run_id['steps'] - 1}")
    return state


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device of a ``device`` setting (`DEVICES`): ``"auto"`` is CUDA when torch sees a
    GPU (in a Ray actor: only when the actor was given one), else CPU; ``"cuda"`` without a GPU
    is a `UserError`."""
    if device not in DEVICES:
        raise UserError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise UserError("train.device = \"cuda\" but torch sees no CUDA GPU here (torch.cuda.is_available() "
                        "is False; a Ray client sees one only with federated.num_gpus_per_client > 0); "
                        "set train.device = \"auto\" or \"cpu\"")
    return torch.device("cuda" if device == "cuda" or (device == "auto" and cuda) else "cpu")


def _accelerator(precision: str, device: str = "auto") -> Accelerator:
    cuda = resolve_device(device).type == "cuda"
    mixed = "bf16" if precision == "bf16" or (precision == "auto" and cuda) else "no"
    state = AcceleratorState._shared_state
    if state and (state.get("_mixed_precision") != mixed or state.get("_cpu") != (not cuda)):
        # accelerate keeps one process-wide state and refuses a second precision (and keeps its
        # first device); a simulator process may legitimately train at several (tests; a large
        # server and small clients).
        AcceleratorState._reset_state()
    return Accelerator(cpu=not cuda, mixed_precision=mixed)


def _constant(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    return get_constant_schedule_with_warmup(optimizer, warmup)


def _cuda_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def _index_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Micro-batches of sample indices: a fresh seeded shuffle per epoch, cycling forever.
    The last batch of an epoch may be smaller (every sample is seen once per epoch)."""
    while True:
        perm = torch.randperm(n, generator=generator).tolist()
        for i in range(0, n, batch_size):
            yield perm[i:i + batch_size]


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _weights(batches: list[dict[str, Any]]) -> list[Any]:
    """Weights of micro-batch mean losses so that accumulation equals one big batch.

    A micro-batch's loss is a mean over its target tokens, so it is weighted by its share of the
    step's target tokens (the fix transformers adopted for gradient accumulation in 2024). Token
    labels (integer, 2-D) count positions that score after the causal shift; other labels count
    examples. One micro-batch needs no weight.
    """
    if len(batches) == 1:
        return [None]
    counts = [_targets(b["labels"]) for b in batches]
    total = torch.stack(counts).sum().clamp(min=1)
    return [c / total for c in counts]


def _targets(labels: torch.Tensor) -> torch.Tensor:
    if labels.ndim >= 2 and not labels.dtype.is_floating_point:
        return (labels[..., 1:] != IGNORE_INDEX).sum().float()
    return torch.tensor(float(labels.shape[0]), device=labels.device)
