"""The exceptions a command-line user should see as one clear message, not a traceback.

They all mean "this input / config / workdir cannot work" and name the file or flag at fault.
"""
from __future__ import annotations

import importlib


def user_errors() -> tuple[type[BaseException], ...]:
    from pisa_jax.train.checkpoint import CheckpointError
    from pisa_jax.train.config import TrainConfigError
    from pisa_jax.train.init_weights import InitWeightsError
    from pisa_jax.train.loop import NonFiniteLossError
    found = [TrainConfigError, CheckpointError, InitWeightsError, NonFiniteLossError]
    # The data and conversion modules' own error classes, where they exist.
    for module, name in (("pisa_jax.data.errors", "DataError"),
                         ("pisa_jax.predict", "PredictError"),
                         ("pisa_jax.convert", "ConversionError")):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            cls = None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)
