"""Local training: the one loop (`train_local`) and the hooks algorithms enter it through."""

from fedmllm.training.hooks import (
    ControlVariate, ProximalTerm, TrainHook, scaffold_control_update, state_parameters,
)
from fedmllm.training.loop import TrainConfig, TrainStats, train_local

__all__ = [
    "ControlVariate", "ProximalTerm", "TrainConfig", "TrainHook", "TrainStats",
    "scaffold_control_update", "state_parameters", "train_local",
]
