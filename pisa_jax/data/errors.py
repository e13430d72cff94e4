"""Exceptions for bad input data: every message names the file and the problem."""
from __future__ import annotations

import os
from collections.abc import Iterable


class DataError(Exception):
    """One or more problems with input files; `problems` is a list of (path, problem)."""

    def __init__(self, problems: Iterable[tuple[str | os.PathLike, str]], header: str = ""):
        self.problems = [(os.fspath(path), problem) for path, problem in problems]
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
