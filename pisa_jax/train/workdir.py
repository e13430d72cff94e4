"""A training run's workdir: usable, one training at a time, and no history lost.

- `check_path`, before anything is loaded, compiled or created: the workdir is a directory or
  can become one, and it is writable.
- `WorkdirLock`: one training process per workdir: an exclusive flock on WORKDIR/.lock, whose
  text names the holder (pid, host, start) for the refusal. The kernel drops the lock when its
  process dies, however it dies, so a killed run's lock never blocks the resume; the text left
  behind is only read while the lock is held.
- History: a workdir whose run has saved checkpoints but has none left to resume from is
  refused, since a restart from step 0 would silently replace its history. `move_history_aside`
  (--restart) moves the whole run into WORKDIR/previous_runs/<time>/ and nothing is deleted.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from pisa_jax.errors import UserError
from pisa_jax.train.config import (CONFIG_FILE, ConfigMismatchError, TrainConfig,
                                   TrainConfigError, config_differences)

LOCK_FILE = ".lock"
PREVIOUS_RUNS = "previous_runs"


class WorkdirError(UserError):
    """A workdir that cannot be trained in (a file, read-only, busy, or a run without checkpoints)."""


def _probe_write(directory: Path) -> None:
    """Raises OSError if no file can be created in `directory` (permission bits do not bind
    root, a read-only mount does, so the only sure test is to try)."""
    probe = directory / f".write_test_{os.getpid()}"
    with open(probe, "w"):
        pass
    probe.unlink()


def check_path(workdir: str | os.PathLike) -> Path:
    """The workdir as a Path, if training can write there; creates nothing."""
    if not str(workdir).strip():
        raise WorkdirError("--workdir: empty; give a directory for the run")
    path = Path(workdir)
    existing = path
    while not existing.exists():  # the nearest existing ancestor decides whether mkdir can work
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise WorkdirError(f"{path}: {what}, not a directory")
    try:
        _probe_write(existing)
    except OSError as error:
        where = "" if existing == path else f" (cannot be created in {existing})"
        raise WorkdirError(f"{path}: not writable{where}: {error.strerror or error}") from None
    return path


def check_workdir_config(config: TrainConfig, workdir: Path, *, override: bool) -> None:
    """Refuse to resume a run whose saved config differs, listing the differences."""
    path = workdir / CONFIG_FILE
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        saved = e
    if not isinstance(saved, dict):
        problem = saved if isinstance(saved, Exception) else "not a JSON object"
        raise TrainConfigError(f"{path}: cannot read the saved run config ({problem}); fix or "
                               f"remove it, or pass --restart to move the run aside") from None
    diffs = config_differences(saved, config, ignore=TrainConfig.RESUMABLE_CHANGES)
    if diffs and not override:
        raise ConfigMismatchError(
            f"{workdir} holds a run with a different config:\n  " + "\n  ".join(diffs) +
            "\nUse another --workdir, the same flags, --override_config to continue anyway, or "
            "--restart to move that run aside and start over.")
    if diffs:
        print("Overriding the workdir's config:\n  " + "\n  ".join(diffs))


class WorkdirLock:
    """`with WorkdirLock(workdir):` one training process in the workdir at a time."""

    def __init__(self, workdir: str | os.PathLike):
        self.path = Path(workdir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "WorkdirLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.read(fd, 512).decode(errors="replace").strip() or "a process"
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise WorkdirError(
                    f"{self.path.parent}: another training is running in this workdir ({holder});"
                    f" wait for it to end or stop it, or use another --workdir") from None
            print(f"note: {self.path}: cannot lock ({error.strerror}); a second training in "
                  f"this workdir would not be refused")
            return self
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def move_history_aside(workdir: str | os.PathLike) -> Path | None:
    """Moves everything of the workdir's run (config, metrics, checkpoints, reports) into
    WORKDIR/previous_runs/<time>/; returns that folder, or None if there was nothing."""
    workdir = Path(workdir)
    entries = sorted(p for p in workdir.iterdir() if p.name not in (LOCK_FILE, PREVIOUS_RUNS))
    if not entries:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = workdir / PREVIOUS_RUNS / stamp
    for n in range(1, 1000):
        if not target.exists():
            break
        target = workdir / PREVIOUS_RUNS / f"{stamp}_{n}"
    target.mkdir(parents=True)
    for entry in entries:
        os.replace(entry, target / entry.name)  # a rename inside one file system
    return target


def refuse_lost_history(workdir: Path, first_saved_step: int | None, reason: str) -> None:
    """A run that saved checkpoints (its first at `first_saved_step`) and has none to resume
    from: refuse to start it over at step 0 by itself."""
    first = "" if first_saved_step is None else f" (the first at step {first_saved_step})"
    raise WorkdirError(
        f"{workdir}: its run saved checkpoints{first} but {reason}; starting at step 0 would replace its history. Pass --restart to move that "
        f"run into {workdir / PREVIOUS_RUNS}/ and start over, or use another --workdir")
