"""Training: config, pmap steps, the loop, checkpoints and reports.

    from pisa_jax.train import TrainConfig, preset, train_and_evaluate
    train_and_evaluate(preset("demo"), "/tmp/demo")
"""
from pisa_jax.train.config import ConfigMismatchError, TrainConfig, TrainConfigError, preset
from pisa_jax.train.loop import Interrupted, NonFiniteLossError, train_and_evaluate

__all__ = ["ConfigMismatchError", "Interrupted", "NonFiniteLossError", "TrainConfig",
           "TrainConfigError", "preset", "train_and_evaluate"]
