"""What orbax_logs drops is exactly the noise it names: other records and errors still show."""
import logging
import sys

from pisa_jax.train import orbax_logs


def _record(message: str, error: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(error), error, None) if error else None
    return logging.LogRecord("x", logging.WARNING, __file__, 1, message, None, exc_info)


def test_the_unevaluated_step_warning_alone_is_dropped_and_the_filter_is_added_once():
    orbax_logs.quiet_unevaluated_steps()
    orbax_logs.quiet_unevaluated_steps()
    logger = logging.getLogger("absl")
    ours = [f for f in logger.filters if isinstance(f, orbax_logs._UnevaluatedStepFilter)]
    assert len(ours) == 1
    assert not ours[0].filter(_record("Step 12 did not provide metrics; best_fn ..."))
    assert ours[0].filter(_record("Saving checkpoint failed: disk full"))


def test_only_the_failed_reads_of_a_damaged_step_are_dropped_from_asyncio():
    quiet = orbax_logs._DamagedReadFilter()
    never_retrieved = "Future exception was never retrieved"
    assert not quiet.filter(_record(never_retrieved, ValueError("Error reading chunk 3")))
    assert quiet.filter(_record(never_retrieved, ValueError("something else")))
    assert quiet.filter(_record(never_retrieved, OSError("Error reading chunk 3")))
    assert quiet.filter(_record("Task was destroyed but it is pending"))


def test_the_closed_loop_hook_drops_only_closed_loop_errors(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    orbax_logs.quiet_closed_loop_callbacks()
    orbax_logs.quiet_closed_loop_callbacks()  # a second call keeps one hook, not two
    hook = sys.unraisablehook

    class Unraisable:
        def __init__(self, error):
            self.exc_value = error
    hook(Unraisable(RuntimeError("Event loop is closed")))
    other = Unraisable(RuntimeError("another"))
    hook(other)
    assert seen == [other]
