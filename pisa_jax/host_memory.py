"""Transparent huge pages for the training process's heap (Linux with glibc 2.35 or newer).

XLA's CPU runtime allocates each step's temporary buffers afresh and frees them afterwards; the
large ones are mapped and unmapped by glibc's malloc, so every step faults its whole working
set back in, 4 KiB at a time. On the R18-3D + R18-2D CPU step (2 cores) the kernel's page-fault
handling was 13 % of the CPU time. With glibc's `glibc.malloc.hugetlb=1` tunable malloc asks for
transparent huge pages (2 MiB) instead: 512 times fewer faults, and the step measured 4-7 %
faster (3-7 % in 3 runs each; the README has the figures).

glibc reads its tunables once, when the process starts, so the training command re-executes
itself with the tunable added to GLIBC_TUNABLES (same interpreter, same arguments, same pid;
nothing has run yet). It does so only where the tunable can act: Linux, glibc >= 2.35,
transparent huge pages not set to "never", the tunable not already present, and
PISA_JAX_HUGEPAGE_MALLOC not set to 0/off. This module imports nothing from the project.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

ENV_VAR = "PISA_JAX_HUGEPAGE_MALLOC"
TUNABLE = "glibc.malloc.hugetlb"
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
OFF = ("0", "off", "false", "no")


def glibc_version() -> tuple[int, int] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):
        return None


def thp_mode(setting: Path = THP_SETTING) -> str | None:
    """The kernel's transparent-huge-page mode ("always", "madvise", "never"), None if unknown."""
    try:
        text = setting.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


_DETECT = "detect"


def hugepage_environment(environ: Mapping[str, str], *, platform: str = sys.platform,
                         glibc: tuple[int, int] | None | str = _DETECT,
                         thp: str | None = _DETECT) -> dict[str, str] | None:
    """The environment to re-execute with, or None where the tunable would change nothing.
    glibc and thp default to this machine's (`glibc_version()`, `thp_mode()`)."""
    glibc = glibc_version() if glibc == _DETECT else glibc
    thp = thp_mode() if thp == _DETECT else thp
    tunables = environ.get("GLIBC_TUNABLES", "")
    if (environ.get(ENV_VAR, "").strip().lower() in OFF or not platform.startswith("linux")
            or glibc is None or glibc < (2, 35) or thp in (None, "never")
            or TUNABLE in tunables):
        return None
    changed = dict(environ)
    changed["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}=1" if tunables else f"{TUNABLE}=1"
    return changed


def reexec_with_hugepage_malloc() -> None:
    """Re-execute this process with huge-page malloc where it helps (see the module doc);
    returns without doing anything otherwise. Call first thing in a command's entry point."""
    environ = hugepage_environment(os.environ)
    if environ is None or not getattr(sys, "orig_argv", None):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)


def describe() -> str:
    """One line for a command's or benchmark's header: whether this process has huge-page
    malloc."""
    if TUNABLE + "=1" in os.environ.get("GLIBC_TUNABLES", ""):
        return f"huge-page malloc: on ({ENV_VAR}=0 turns it off)"
    return "huge-page malloc: off"
