"""Local training: the one loop (`train_local`) and the hooks algorithms enter it through.

The loop's names load on first use (they import transformers and accelerate); the hooks need
only torch, so a federated algorithm that uses them stays light to import.
"""

from fedmllm.training.hooks import (
    ControlVariate, ProximalTerm, TrainHook, scaffold_control_update, state_parameters,
)

_LOOP = ("LoopCheckpoint", "TrainConfig", "TrainStats", "TrainingDiverged", "loop_config", "train_local")


def __getattr__(name: str):
    if name in _LOOP:
        from fedmllm.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'fedmllm.training' has no attribute {name!r}")


__all__ = ["ControlVariate", "ProximalTerm", "TrainHook", "scaffold_control_update", "state_parameters", *_LOOP]
