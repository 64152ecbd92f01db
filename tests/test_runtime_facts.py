"""What a run records about where it ran, and the process's torch threads (config ``threads``)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from fedmllm.config import load_config
from fedmllm.errors import UserError
from fedmllm.experiment import use_threads
from fedmllm.runs import RunDir


def test_threads_default_to_one_and_zero_keeps_torch_default():
    before = torch.get_num_threads()
    try:
        assert use_threads(load_config(None, [])) == 1
        torch.set_num_threads(2)
        assert use_threads(load_config(None, ["threads=0"])) == 2  # 0: leave torch's choice
        with pytest.raises(UserError, match="'threads' must be in 0"):
            use_threads(load_config(None, [f"threads={(os.cpu_count() or 1) * 4 + 1}"]))
    finally:
        torch.set_num_threads(before)


def test_meta_json_records_the_hardware(tmp_path):
    run = RunDir.create(tmp_path / "run", load_config(None, []), "centralized")
    hw = json.loads((run.path / "meta.json").read_text())["hardware"]
    assert hw["cores"] == os.cpu_count() and hw["cpu"] and hw["torch_threads"] >= 1
    assert isinstance(hw["gpus"], list) and hw["memory_gb"] > 0


def test_threads_also_limit_numpys_blas():
    """numpy's OpenBLAS gets the same thread count (a 128 x 256 norm took 4 ms with its default
    threads on 2 loaded cores, 60 us with one)."""
    import numpy  # noqa: F401  (loads the BLAS)
    from threadpoolctl import threadpool_info

    use_threads(load_config(None, []))
    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas and all(p["num_threads"] == 1 for p in blas)
