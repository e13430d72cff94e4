"""What orbax and the libraries under it would print that is no news to a user of this project:
dropped here, and only that, so that their real warnings and errors still show.
"""
from __future__ import annotations

import logging
import sys


class _UnevaluatedStepFilter(logging.Filter):
    """Steps saved between evaluations have no metrics by design; orbax warns at each one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


def _add_once(logger_name: str, kind: type[logging.Filter]) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())


def quiet_unevaluated_steps() -> None:
    """Drops orbax's warning at every saved step without metrics."""
    _add_once("absl", _UnevaluatedStepFilter)


class _DamagedReadFilter(logging.Filter):
    """asyncio's "Future exception was never retrieved" for the other reads of a damaged step,
    which fail after the first failure has been reported (at garbage collection, or exit)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage().startswith("Future exception was never retrieved")
                    and isinstance(error, ValueError) and "Error reading" in str(error))


def quiet_closed_loop_callbacks() -> None:
    """After a failed read of damaged data, the storage library's outstanding reads still call
    back into orbax's event loop, which is closed by then; Python would print each refusal as a
    traceback. Those (and only those) are dropped, from the first restore on."""
    _add_once("asyncio", _DamagedReadFilter)
    previous = sys.unraisablehook
    if getattr(previous, "_pisa_jax_quiet", False):
        return

    def hook(unraisable):
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            previous(unraisable)

    hook._pisa_jax_quiet = True
    sys.unraisablehook = hook
