"""What the experiment commands print: Flower's INFO lines only with --verbose (its warnings
always, fedmllm's round summaries always), and a few progress lines per centralized cell."""

from __future__ import annotations

import io
import logging
import os
import re
import sys

import pytest

import server.inprocess
from server.flower_log import ENV, flower_level, flower_log
from simulations.cli import main

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Flower colours its level names
TINY_FED = ["model.pretrained=false", "data.downstream=synth-chd", "data.upstream=synth-okvqa", "data.train_n=8",
            "data.test_n=2", "data.upstream_n=2", "federated.upstream_n=2", "federated.num_clients=2",
            "federated.rounds=1", "federated.local_steps=1", "train.batch_size=2", "federated.strategies=fedavg",
            "federated.baselines=[]", "federated.backend=inprocess", "federated.partitioner=iid"]


def _console_levels() -> list[int]:
    from flwr.common.logger import FLOWER_LOGGER, ConsoleHandler

    return [h.level for h in FLOWER_LOGGER.handlers if isinstance(h, ConsoleHandler)]


@pytest.fixture
def probed(monkeypatch):
    """The in-process engine logs one Flower INFO and one WARNING line (as Flower's own code
    would) and records the FLWR_LOG_LEVEL its Ray actors would inherit."""
    from flwr.common.logger import FLOWER_LOGGER, log

    seen: dict = {}
    original = server.inprocess.run_inprocess

    def run(*args, **kwargs):
        seen["env"] = os.environ.get(ENV)
        for handler in FLOWER_LOGGER.handlers:  # it keeps the stderr of its import: this test's now
            monkeypatch.setattr(handler, "stream", sys.stderr)
        log(logging.INFO, "flower-info-probe")
        log(logging.WARNING, "flower-warning-probe")
        return original(*args, **kwargs)

    monkeypatch.setattr(server.inprocess, "run_inprocess", run)
    monkeypatch.delenv(ENV, raising=False)
    return seen


@pytest.mark.parametrize("verbose", [False, True])
def test_flower_info_lines_only_with_verbose(capfd, tmp_path, probed, verbose):
    before = _console_levels()
    argv = ["federated", "--out", str(tmp_path / "run"), *TINY_FED] + (["--verbose"] if verbose else [])
    assert main(argv) == 0
    out, err = capfd.readouterr()
    info = [line for line in ANSI.sub("", out + err).splitlines() if line.startswith("INFO")]
    assert [line.split(":", 1)[1].strip() for line in info] == (["flower-info-probe"] if verbose else [])
    assert "flower-warning-probe" in err  # warnings and errors show either way
    assert "[fedavg] round 1/1" in out and "[fedavg] final" in out  # fedmllm's own lines stay
    assert probed["env"] == ("INFO" if verbose else "WARNING")  # what Ray actors inherit
    assert _console_levels() == before and ENV not in os.environ  # restored after the command


def test_flower_level_from_the_environment(monkeypatch):
    monkeypatch.setenv(ENV, "debug")
    assert flower_level(False) == "WARNING" and flower_level(True) == "DEBUG"
    monkeypatch.setenv(ENV, "loud")
    assert flower_level(True) == "INFO"  # an invalid level: Flower's default, as Flower does
    monkeypatch.setenv(ENV, "ERROR")
    with flower_log(False) as level:
        assert level == "WARNING" and os.environ[ENV] == "WARNING"
        assert set(_console_levels()) == {logging.WARNING}
    assert os.environ[ENV] == "ERROR" and set(_console_levels()) == {logging.ERROR}
    monkeypatch.delenv(ENV)
    with flower_log(True):
        pass
    assert set(_console_levels()) == {logging.INFO}


def test_verbose_only_on_experiment_commands():
    from simulations.cli import build_parser

    parser = build_parser()
    for command in ("centralized", "federated", "collab", "demo"):
        assert parser.parse_args([command, "--verbose"]).verbose
        assert not parser.parse_args([command]).verbose
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "--verbose"])


# -- progress of one training call ---------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _feed(progress, total: int, step_s: float = 0.0) -> None:
    import time

    import torch

    for step in range(progress.first, total):
        time.sleep(step_s)
        progress.update(step + 1, torch.tensor(1.0 / (step + 1)))
    progress.close()


@pytest.mark.parametrize("total, lines", [(1, 0), (2, 1), (4, 3), (120, 3), (10_000, 3)])
def test_progress_off_a_terminal_is_a_line_per_quarter(total, lines):
    from fedmllm.training.progress import StepProgress, line_steps

    stream = io.StringIO()
    _feed(StepProgress(total, desc="tiny-vila lora synth-chd", stream=stream), total)
    printed = stream.getvalue().splitlines()
    assert len(printed) == lines and "\r" not in stream.getvalue()
    for line, step in zip(printed, line_steps(total)):
        assert line.startswith(f"  tiny-vila lora synth-chd: step {step}/{total} (")
        assert f"loss {1.0 / step:.4f}" in line and line.endswith(" s/step")


def test_progress_after_a_resume_counts_from_the_resumed_step():
    from fedmllm.training.progress import StepProgress

    stream = io.StringIO()
    _feed(StepProgress(8, first=5, stream=stream), 8)
    assert [line.split(":")[1].split("(")[0].strip() for line in stream.getvalue().splitlines()] == ["step 6/8"]


def test_progress_on_a_terminal_is_one_updating_line():
    from fedmllm.training.progress import StepProgress

    stream = _Terminal()
    _feed(StepProgress(4, desc="cell", stream=stream), 4, step_s=0.15)  # tqdm redraws every 0.1 s
    text = stream.getvalue()
    assert "\n" not in text and text.count("\r") >= 3  # frames over one line, cleared at the end
    assert "cell" in text and "4/4, loss 0.2500" in text and " s/step" in text  # the last step always shows


def test_train_local_reports_through_the_same_progress(capsys):
    from test_methods import rows, token_batch  # tests/ is on sys.path under pytest
    from test_training import lora_model

    from fedmllm.training import TrainConfig, train_local

    model, _ = lora_model()
    capsys.readouterr()
    stats = train_local(model, list(range(8)), rows(token_batch(n=8, seed=1)),
                        TrainConfig(lr=1e-3, steps=4, batch_size=4), seed=0, progress="a cell")
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in out] == [f"  a cell: step {s}/4" for s in (1, 2, 3)]
    assert f"loss {stats.losses[0]:.4f}" in out[0]
