"""Running one function per video on a pool of threads, with a progress bar (in a terminal;
in a log file, a plain line at every tenth of the work instead of redrawn bars).

Threads suffice: the heavy work runs in ffmpeg subprocesses (decoding, cropping, scaling) and
in numpy/librosa code that releases the GIL (FFTs, matrix products). Threads also avoid
pickling large sample arrays between processes and the re-import of the caller's main module
that spawn-started processes need.
"""
from __future__ import annotations

import concurrent.futures as futures
import sys
from collections.abc import Callable, Iterator, Sequence

from tqdm import tqdm


def run_parallel(fn: Callable, items: Sequence, num_workers: int, desc: str) -> Iterator:
    """Yields fn(item) for every item, in completion order; at most 2 * workers in flight."""
    with _progress(len(items), desc) as bar:
        if num_workers <= 1:
            for item in items:
                yield fn(item)
                bar.update()
            return
        pool = futures.ThreadPoolExecutor(num_workers)
        try:
            pending, queue = set(), list(reversed(items))
            while queue or pending:
                while queue and len(pending) < 2 * num_workers:
                    pending.add(pool.submit(fn, queue.pop()))
                done, pending = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    bar.update()
                    yield future.result()
        finally:  # on an error, report it now rather than after the queued videos ran
            pool.shutdown(wait=True, cancel_futures=True)


class _PlainProgress:
    """tqdm's update() as a line per tenth of the total, for output that is not a terminal."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.done = total, desc, 0
        self.every = max(1, -(-total // 10))  # at most 10 lines, and the last

    def update(self) -> None:
        self.done += 1
        if self.done % self.every == 0 or self.done == self.total:
            print(f"{self.desc}: {self.done}/{self.total}", file=sys.stderr, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def _progress(total: int, desc: str):
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit="video", leave=False)
    return _PlainProgress(total, desc)
