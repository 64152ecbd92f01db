"""Shared test set-up: one torch thread (2-core machines), offline hub access."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture
def task_identity():
    """Instruction messages take run/node/task ids from TaskIdentity, as in a ServerApp."""
    from server.inprocess import server_task_identity

    with server_task_identity():
        yield
