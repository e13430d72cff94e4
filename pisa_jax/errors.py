"""The errors a command-line user sees as one line (`error: <what>: <problem>`), never a traceback.

Every command (train, evaluate, predict, convert, the dataset builder) runs through
`pisa_jax.cli.run`, which prints any `UserError` as that one line and exits with status 1.
Each package raises its own subclass; all of them name the file, flag or workdir at fault.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable


def _natural(text: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", text) if part]


class UserError(Exception):
    """Input, config or workdir that cannot work; the message names what and why."""


class DataError(UserError):
    """One or more problems with input files; `problems` is a list of (path, problem)."""

    def __init__(self, problems: Iterable[tuple[str | os.PathLike, str]], header: str = ""):
        # Sorted (numbers by value: "record 2" before "record 10"), so that a build over several
        # workers lists its problems in the same order every time.
        self.problems = sorted(((os.fspath(path), problem) for path, problem in problems),
                               key=lambda item: (_natural(item[0]), _natural(item[1])))
        self.header = header or f"{len(self.problems)} problem(s) with the input data:"
        lines = [self.header] + [f"  {path}: {problem}" for path, problem in self.problems]
        super().__init__("\n".join(lines))

    def __reduce__(self):  # exceptions cross process boundaries (builder workers)
        return (DataError, (self.problems, self.header))


class MediaError(DataError):
    """A video, audio or image file that cannot be used, and why."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__([(path, problem)], header="bad media file:")

    def __reduce__(self):
        return (MediaError, (self.path, self.problem))


class OutOfMemoryError(UserError):
    """A step or an upload needed more device (or host) memory than there is."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is XLA's allocation failure (jax's JaxRuntimeError, XlaRuntimeError in
    older jaxlibs), told by its status, so that this module needs no jax."""
    return (type(error).__name__ in ("JaxRuntimeError", "XlaRuntimeError")
            and str(error).lstrip().startswith("RESOURCE_EXHAUSTED"))


def out_of_memory_message(error: BaseException, where: str = "a step", advice: str = "") -> str:
    """One line for an allocation failure in `where`: XLA's own words and what to change."""
    said = str(error).strip().splitlines()[0].removeprefix("RESOURCE_EXHAUSTED:").strip()
    advice = advice or ("lower the batch (--batch_size, --eval_batch_size), use --precision "
                        "bfloat16, or spread the batch over more devices")
    return f"out of memory in {where} ({said[:200]}): {advice}"
