"""How a training run stops before its end, each way as one line for the user.

- SIGTERM (a cluster's preemption) or SIGINT: the loop runs inside `stop_on_signals(session)`;
  a signal sets `session.stop_signal`, the loop saves its checkpoint at the next step boundary
  and raises `Interrupted`, whose exit code is the shell's for that signal; the same command
  resumes. A second Ctrl-C stops at once, unsaved.
- A NaN or infinite loss: `NonFiniteLossError`, the last good checkpoint kept.
- Another process of a multi-host run gone: `PeerLostError`.
- XLA out of memory: `out_of_memory_line` names the step and the flag to change.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable

from pisa_jax.errors import UserError, out_of_memory_message


class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite loss; the run stopped, checkpoints untouched."""


class PeerLostError(UserError):
    """Another process of a multi-host run died or stopped answering."""


class Interrupted(UserError):
    """SIGTERM or SIGINT stopped the run after saving its latest checkpoint."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number


@contextlib.contextmanager
def stop_on_signals(session, log: Callable[[str], None]):
    """SIGTERM / SIGINT set `session.stop_signal` (main thread only; elsewhere nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask_to_stop(number, _frame):
        if session.stop_signal is not None:  # a second Ctrl-C: stop now, unsaved
            raise KeyboardInterrupt
        session.stop_signal = number
        log(f"\n{signal.Signals(number).name}: saving a checkpoint at the next step, then stopping")

    previous = {s: signal.signal(s, ask_to_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def out_of_memory_line(error: BaseException, where: str, config, checkpoints, lost: bool) -> str:
    """The one line for XLA running out of memory in `where` (a TrainConfig's run, its
    Checkpoints; lost: other processes gone, so no save can complete), with the change that
    fits it."""
    import jax  # this module stays importable before a command picks its allocator
    devices = jax.device_count()
    if where == "the eval step":  # a resumable change: the run goes on from its checkpoint
        advice = (f"--eval_batch_size={config.evaluation_batch_size} ({devices} device(s)) is "
                  f"too large; the same command with a smaller one resumes")
    elif where == "the train step":
        advice = (f"--batch_size={config.batch_size} ({devices} device(s)) is too large for "
                  f"this model; lower it (a new run: --restart), use --precision bfloat16, or "
                  f"spread the batch over more devices")
    else:
        advice = "--data_on_device off keeps the splits on the host"
    if not lost:
        checkpoints.wait()
        latest = checkpoints.latest_step()
        if latest is not None:
            advice += f" (the checkpoints so far, up to step {latest}, are kept)"
    return out_of_memory_message(error, where, advice)
