"""Small files written whole: configs, metrics, results, tables, figures.

A kill, a full disk or a crash at any moment leaves the file as it was or as it is meant to be,
never half of it: the data goes to `<name>.tmp` beside it, reaches the disk (fsync), and then
replaces the file in one rename. Every layer may use this module; it imports nothing of the
project.
"""
from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8, or bytes) to `path` atomically; returns the path."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves no temp file behind
        raise
    return path
