"""Running one function per video on a pool of threads, with a progress bar.

Threads suffice: the heavy work runs in ffmpeg subprocesses (decoding, cropping, scaling) and
in numpy/librosa code that releases the GIL (FFTs, matrix products). Threads also avoid
pickling large sample arrays between processes and the re-import of the caller's main module
that spawn-started processes need.
"""
from __future__ import annotations

import concurrent.futures as futures
from collections.abc import Callable, Iterator, Sequence

from tqdm import tqdm


def run_parallel(fn: Callable, items: Sequence, num_workers: int, desc: str) -> Iterator:
    """Yields fn(item) for every item, in completion order; at most 2 * workers in flight."""
    with tqdm(total=len(items), desc=desc, unit="video", leave=False) as bar:
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
