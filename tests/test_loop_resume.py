"""Resuming `train_local` from a `LoopCheckpoint` ends bit-for-bit where an uninterrupted run ends.

The model is the tiny VILA at random init with LoRA (dropout 0.1, so the restored RNG state
matters), trained on a few synthetic ScienceQA twins through the real processor.

Run as a script (``python tests/test_loop_resume.py OUT_DIR CHECKPOINT [--slow]``) this file is the
training process of the SIGKILL test: it trains, saves the final trainable state with safetensors
and the stats as JSON under OUT_DIR.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fedmllm.data.collate import encode_train
from fedmllm.data.suite import load_task
from fedmllm.methods import apply_method
from fedmllm.models.registry import build_model
from fedmllm.training.hooks import TrainHook
from fedmllm.training.loop import LoopCheckpoint, TrainConfig, train_local

SEED = 3
STEPS = 12
CFG = dict(lr=1e-2, steps=STEPS, batch_size=2, grad_accum=2, warmup_ratio=0.25, precision="fp32")
KILL_STEPS = 40  # the subprocess run: long enough to be killed mid-way
KILL_EVERY = 5


def build():
    """Fresh tiny model with LoRA, samples and collate; identical on every call."""
    bundle = build_model("tiny-vila", pretrained=False, seed=0)
    model, _, _ = apply_method(bundle.model, "lora", {"r": 4, "dropout": 0.1})
    samples = load_task("synth-scienceqa", "train", n=6, seed=0)
    return model, samples, partial(encode_train, bundle.processor)


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def train(checkpoint=None, hooks=(), **changes):
    model, samples, collate = build()
    stats = train_local(model, samples, collate, TrainConfig(**{**CFG, **changes}), seed=SEED,
                        hooks=hooks, checkpoint=checkpoint)
    return model, stats


def assert_same(state, ref):
    assert sorted(state) == sorted(ref)  # safetensors files keep keys sorted
    for k in ref:
        assert torch.equal(state[k], ref[k]), k


# -- in-process ----------------------------------------------------------------------------------
class Crash(TrainHook):
    """Raises in step ``at``'s ``after_backward`` (1-based, before that step's update)."""

    def __init__(self, at):
        self.at, self.calls = at, 0

    def after_backward(self, model, params):
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("simulated crash")


def interrupted(path: Path, at: int) -> LoopCheckpoint:
    """A checkpoint every 4 steps of a run that crashes at step ``at``."""
    ckpt = LoopCheckpoint(path, every=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(checkpoint=ckpt, hooks=[Crash(at)])
    return ckpt


def test_interrupted_run_resumes_bit_for_bit(tmp_path):
    model_ref, ref = train()
    ckpt = interrupted(tmp_path / "loop.pt", at=10)
    saved = torch.load(ckpt.path, weights_only=True)  # a plain, weights_only-safe file
    assert saved["step"] == 8 and len(saved["losses"]) == 8 and saved["examples"] == 8 * 2 * 2
    assert not (tmp_path / ".loop.pt.tmp").exists()
    assert saved["losses"].tolist() == ref.losses[:8]

    model, stats = train(checkpoint=ckpt)
    assert stats.losses == ref.losses
    assert (stats.steps, stats.examples, stats.loss_first, stats.loss_last, stats.loss_mean) == \
        (ref.steps, ref.examples, ref.loss_first, ref.loss_last, ref.loss_mean)
    assert_same(trainable(model), trainable(model_ref))
    assert ckpt.path.exists()  # the caller removes it
    assert torch.load(ckpt.path, weights_only=True)["step"] == 8  # never saved after the last step


def test_dropout_rng_is_restored(tmp_path):
    """Resuming with the seed's fresh RNG instead of the saved one gives a different run."""
    _, ref = train()
    ckpt = interrupted(tmp_path / "loop.pt", at=6)
    state = torch.load(ckpt.path, weights_only=True)
    torch.manual_seed(SEED)
    state["rng_cpu"] = torch.get_rng_state()
    torch.save(state, ckpt.path)
    _, stats = train(checkpoint=ckpt)
    assert stats.losses[:4] == ref.losses[:4] and stats.losses[4:] != ref.losses[4:]


def test_mismatched_checkpoint_raises(tmp_path):
    ckpt = interrupted(tmp_path / "loop.pt", at=6)
    with pytest.raises(ValueError, match="steps is 12, this run has 16"):
        train(checkpoint=ckpt, steps=16)
    with pytest.raises(ValueError, match="batch_size"):
        train(checkpoint=ckpt, batch_size=3)
    state = torch.load(ckpt.path, weights_only=True)
    name = state["names"][0]
    state["params"][name] = torch.zeros(1, 1)
    torch.save(state, ckpt.path)
    with pytest.raises(ValueError, match=f"parameter {name} has shape"):
        train(checkpoint=ckpt)
    with pytest.raises(ValueError, match="every"):
        LoopCheckpoint(ckpt.path, every=0)


def test_loop_config_moved_and_reexported():
    from fedmllm.config import TrainConfig as ExperimentTrain
    from fedmllm.pretrain import loop_config as old
    from fedmllm.training.loop import loop_config

    assert old is loop_config
    cfg = loop_config(ExperimentTrain(), steps=7, lr=3e-4)
    assert cfg.steps == 7 and cfg.lr == 3e-4


# -- a real SIGKILL ------------------------------------------------------------------------------
def _script(out: Path, ckpt: Path, slow: bool = False) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, str(out), str(ckpt)] + (["--slow"] if slow else [])
    return subprocess.Popen(cmd, env=env, cwd=Path(__file__).resolve().parent.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_then_resume_in_new_process(tmp_path):
    ckpt = tmp_path / "loop.pt"
    killed = _script(tmp_path / "killed", ckpt, slow=True)
    deadline = time.monotonic() + 60
    while not ckpt.exists():
        assert killed.poll() is None, killed.communicate()[0].decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    output = killed.communicate(timeout=30)[0].decode()
    assert killed.returncode == -signal.SIGKILL, output[-3000:]
    assert not (tmp_path / "killed").exists()

    resumed = _script(tmp_path / "resumed", ckpt)
    output = resumed.communicate(timeout=120)[0].decode()
    assert resumed.returncode == 0, output[-3000:]
    got = json.loads((tmp_path / "resumed" / "stats.json").read_text())
    assert 0 < got["resumed_from"] < KILL_STEPS

    model_ref, ref = train(steps=KILL_STEPS)  # uninterrupted, in this process
    assert got["losses"] == ref.losses and got["examples"] == ref.examples
    assert_same(load_file(tmp_path / "resumed" / "trainable.safetensors"), trainable(model_ref))


def _main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    out, ckpt = Path(argv[0]), Path(argv[1])

    class Slow(TrainHook):
        """Keeps the run going long after the first checkpoint (does not touch numerics)."""

        def after_backward(self, model, params):
            time.sleep(0.2)

    start = torch.load(ckpt, weights_only=True)["step"] if ckpt.exists() else 0
    model, stats = train(checkpoint=LoopCheckpoint(ckpt, every=KILL_EVERY),
                         hooks=[Slow()] if "--slow" in argv else [], steps=KILL_STEPS)
    out.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in trainable(model).items()}, out / "trainable.safetensors")
    (out / "stats.json").write_text(json.dumps({"losses": stats.losses, "examples": stats.examples,
                                                "resumed_from": start}))


if __name__ == "__main__":
    _main(sys.argv[1:])
