"""Evaluation: batched greedy generation and per-task scoring with the task's metric."""

from __future__ import annotations

from fedmllm.eval.evaluate import TaskScore, evaluate, write_scores
from fedmllm.eval.generate import generate

__all__ = ["TaskScore", "evaluate", "generate", "write_scores"]
