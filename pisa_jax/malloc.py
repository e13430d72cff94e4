"""The memory allocator of the commands that compute (train, evaluate, predict, reproduce):
tcmalloc where it is installed, because XLA's CPU runtime is faster on it.

Why: XLA's CPU runtime allocates a program's temporary buffers afresh for every execution.
glibc's malloc hands each block over 32 MB (its largest mmap threshold) straight from the
kernel and gives it back when freed, so every training step of the paper's shapes faults the
same ~0.5 GB in again, page by page. tcmalloc keeps freed memory for the next step. Measured
on 2 CPU cores (`benchmarks/compare_frameworks.py --malloc system,auto`, README "Measured
figures"): R18 + R18 at full width, batch 2, 1.11x per step with 2 x 16-frame clips and 224x224
spectrograms, 1.25x with 1 clip and 112x112; ~130 page faults per step instead of ~139,000.
jemalloc was 4 % slower than glibc there.

A running process cannot change its allocator, so a command re-runs itself once, first thing,
with LD_PRELOAD naming the library: `os.execve` keeps its process id, arguments, environment
and open files. $PISA_JAX_MALLOC chooses:
- unset or "auto": tcmalloc when found (libtcmalloc_minimal.so.4 or libtcmalloc.so.4 in the
  system's library directories; Debian and Ubuntu: `apt-get install libtcmalloc-minimal4`),
  else the system's malloc;
- "system": the system's malloc;
- a path: that shared library (another allocator, e.g. jemalloc's or mimalloc's).
An LD_PRELOAD that is already set is left as it is (a profiler, or the user's own choice), and
so is every platform but Linux. This module imports nothing from the project but its errors.
"""
from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence

from pisa_jax.errors import UserError

ENV_VAR = "PISA_JAX_MALLOC"
LIBRARIES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")  # first found wins
SYSTEM = ("system", "glibc", "off", "none")
# Set in the re-run process (and so in its children): the library it preloaded.
PRELOADED_VAR = "PISA_JAX_MALLOC_PRELOADED"
# tcmalloc logs every allocation over 1 GB by default; a split of PISA held in memory is one.
TCMALLOC_QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}
_SEPARATORS = set(" :")  # LD_PRELOAD splits its list at these


def library_directories() -> list[str]:
    """Where the dynamic loader keeps shared libraries: this Python's prefix (conda), then the
    system's (Debian's multiarch directory first)."""
    multiarch = f"{platform.machine()}-linux-gnu"
    return [os.path.join(sys.prefix, "lib"), "/usr/local/lib", f"/usr/lib/{multiarch}",
            f"/lib/{multiarch}", "/usr/lib64", "/usr/lib"]


def choose_library(environ: Mapping[str, str] = os.environ,
                   directories: Sequence[str] | None = None) -> str | None:
    """The allocator library to preload, by $PISA_JAX_MALLOC (see the module doc), or None for
    the system's malloc."""
    choice = environ.get(ENV_VAR, "").strip()
    if choice.lower() in SYSTEM:
        return None
    if choice.lower() in ("", "auto"):
        for directory in directories if directories is not None else library_directories():
            for name in LIBRARIES:
                path = os.path.join(directory, name)
                if os.path.isfile(path) and _problem(path) is None:
                    return path
        return None
    path = os.path.abspath(os.path.expanduser(choice))
    if not os.path.isfile(path):
        raise UserError(f"{ENV_VAR}={choice}: no such file; give the path of an allocator's "
                        f"shared library, or auto (tcmalloc when installed), or system")
    problem = _problem(path)
    if problem:
        raise UserError(f"{ENV_VAR}={choice}: {problem}")
    return path


def _problem(path: str) -> str | None:
    """Why the dynamic loader could not preload the file at `path` (it would say so on every
    process start and go on without it), or None."""
    if _SEPARATORS & set(path):
        return ("LD_PRELOAD cannot name a path with a space or a colon; link or copy the library "
                "to a path without them")
    try:
        with open(path, "rb") as library:
            magic = library.read(4)
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    return None if magic == b"\x7fELF" else "not a shared library (no ELF header)"


def _mapped(path: str) -> bool:
    """Whether the file at `path` is loaded in this process."""
    try:
        with open("/proc/self/maps") as mappings:
            maps = mappings.read()
    except OSError:
        return True  # nothing to check against: trust the loader
    return os.path.realpath(path) in maps or path in maps


def preload_environment(library: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` for a process that runs on `library` (None: on the system's malloc)."""
    rest = {k: v for k, v in environ.items() if k not in ("LD_PRELOAD", PRELOADED_VAR)}
    if library is None:
        return {**rest, ENV_VAR: "system"}
    return {**TCMALLOC_QUIET, **rest, "LD_PRELOAD": library, PRELOADED_VAR: library}


def restart_with_faster_malloc() -> None:
    """Re-run this process's command under the chosen allocator, unless it already is (or
    nothing is chosen, or LD_PRELOAD is set, or this is not Linux). Call it before anything
    else happens: before JAX loads, before anything is read from stdin or written."""
    if not sys.platform.startswith("linux") or os.environ.get("LD_PRELOAD"):
        return
    if PRELOADED_VAR in os.environ or sys.argv[:1] in ([""], ["-"]):  # re-run, or a stdin script
        return
    if not sys.executable:  # an embedded interpreter: nothing to re-run
        return
    library = choose_library()
    if library is None:
        return
    environ = preload_environment(library, os.environ)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, environ)
    except OSError:  # e.g. sys.executable gone: carry on with the system's malloc
        return


def describe() -> str:
    """The line a command prints at start."""
    preloaded = os.environ.get(PRELOADED_VAR)
    if preloaded and preloaded in os.environ.get("LD_PRELOAD", ""):
        if not _mapped(preloaded):
            return (f"malloc: the system's: {preloaded} did not load (the dynamic loader says "
                    f"why above); set {ENV_VAR}=system to stop trying")
        return f"malloc: {preloaded} (set {ENV_VAR}=system for the system's)"
    if os.environ.get("LD_PRELOAD"):
        return f"malloc: as LD_PRELOAD={os.environ['LD_PRELOAD']} sets it"
    if not sys.platform.startswith("linux"):
        return "malloc: the system's"
    return (f"malloc: the system's (full-size CPU steps ran 1.1-1.25x faster on tcmalloc: "
            f"install libtcmalloc-minimal4, or set {ENV_VAR}=PATH to an allocator's library)")
