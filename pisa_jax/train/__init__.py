"""Training: config, pmap steps, the loop, checkpoints and reports.

    from pisa_jax.train import TrainConfig, preset, train_and_evaluate
    train_and_evaluate(preset("demo"), "/tmp/demo")

The loop (and with it checkpoints and reports: orbax, tqdm, tensorboardX) is imported when one
of its names is first used, so that the steps and the state (`pisa_jax.train.steps`) import
with JAX, flax and optax alone, as the benchmarks on a bare GPU machine need.
"""
from pisa_jax.train.config import ConfigMismatchError, TrainConfig, TrainConfigError, preset
from pisa_jax.train.stops import Interrupted, NonFiniteLossError

_FROM_LOOP = ("train_and_evaluate",)

__all__ = ["ConfigMismatchError", "Interrupted", "NonFiniteLossError", "TrainConfig",
           "TrainConfigError", "preset", "train_and_evaluate"]


def __getattr__(name: str):
    if name in _FROM_LOOP:
        from pisa_jax.train import loop
        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
