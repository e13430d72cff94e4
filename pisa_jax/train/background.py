"""One background thread for the work a training loop need not wait for: drawing and writing
the evaluation figures (~0.4-1 s per evaluation on 2 CPU cores, in the first one also
matplotlib's import), while the next epoch's steps run. On an accelerator the loop's thread
mostly waits for the device, so the figures can overlap its work (not yet measured on one); on
2 CPU cores a whole run was no faster, as the thread shares the cores with the steps.

Jobs run one at a time, in the order given; a new job first waits for the one before it, so at
most one is in flight and a slow disk cannot pile them up. A job's exception is raised in the
loop's thread, at the next `submit` or at `close`.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable


class BackgroundJobs:
    def __init__(self, name: str = "pisa_jax_reports"):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: Future | None = None

    def submit(self, job: Callable[[], None]) -> None:
        self.wait()
        self._pending = self._pool.submit(job)

    def wait(self) -> None:
        """Until the job in flight (if any) is done; re-raises its exception."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
