"""One benchmark variant in a process of its own: the protocol between compare_frameworks.py
(the parent, `Worker`) and its worker processes (`serve`).

The worker writes one JSON line when it is built ({"ready": true, ...its info} or {"error"}),
then answers each "run" line from the parent with {"seconds", "peak_bytes"} (or {"error"});
any other line, or the end of its input, ends it.

peak_bytes is what the variant's memory reached so far: on a GPU the device allocator's peak
(JAX's `peak_bytes_in_use`, PyTorch's `max_memory_allocated`), so that a table says what a
batch needs; on a CPU the process's peak resident memory (model, inputs, compiled code and
the step's buffers).
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:160]}"


def process_peak_bytes() -> int:
    """This process's peak resident memory (Linux reports kibibytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def serve(build: Callable[[], tuple[object, dict]]) -> None:
    """The worker's side: build() -> (step, info), then answer "run" lines. The step has run()
    and device_peak_bytes() (the device's peak, None on a CPU), as JaxStep and TorchStep do."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the libraries print goes to stderr, not into the protocol

    def send(**message):
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()
    try:
        step, info = build()
    except Exception as error:  # noqa: BLE001 - reported in the table
        send(error=one_line(error))
        return
    send(ready=True, **info)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        try:
            t0 = time.perf_counter()
            step.run()
            seconds = time.perf_counter() - t0
            peak = step.device_peak_bytes()
            send(seconds=seconds, peak_bytes=process_peak_bytes() if peak is None else peak)
        except Exception as error:  # noqa: BLE001 - e.g. out of memory, no compiler
            send(error=one_line(error))


class Worker:
    """A variant's worker process, as the parent sees it: `argv` starts it (with `env`)."""

    def __init__(self, name: str, argv: list[str], env: dict, allocator: str):
        self.name, self.allocator, self.error, self.peak_bytes = name, allocator, None, None
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env)
        self.info = self._receive() or {}

    def _receive(self) -> dict | None:
        line = self.process.stdout.readline()
        message = json.loads(line) if line else {
            "error": f"worker exited with status {self.process.wait()}"}
        if "error" in message and self.error is None:
            self.error = message["error"]
            print(f"{self.name} failed: {self.error}", flush=True)
        return None if "error" in message else message

    def step(self) -> float | None:
        """One step's seconds, None once the variant has failed."""
        if self.error is not None:
            return None
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        message = self._receive()
        if message is None:
            return None
        self.peak_bytes = max(self.peak_bytes or 0, message["peak_bytes"])
        return message["seconds"]

    def close(self) -> None:
        """Ends the process (and frees what it held on the device)."""
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


def result_line(worker: Worker, seconds: list) -> str:
    """One variant's result as soon as its steps are done: what the log keeps of a run that is
    stopped before its table is printed (the time limit of a lent GPU)."""
    done = [t for t in seconds if t is not None]
    result = (f"{1e3 * statistics.median(done):.1f} ms/step, median of {len(done)}" if done
              else f"failed: {worker.error}")
    memory = "" if worker.peak_bytes is None else f", peak memory {worker.peak_bytes / 2**30:.2f} GiB"
    return f"done: {worker.name}: {result}{memory}"
