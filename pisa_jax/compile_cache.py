"""JAX's persistent compilation cache, on by default for every command that compiles a step
(train, reproduce, evaluate, predict).

A training run compiles its train and eval steps (minutes on a CPU at the paper's shapes, tens
of seconds on a GPU); a resumed or repeated run with the same shapes and options loads them
from this cache instead, as a second `evaluate` or `predict` at the same shapes loads its eval
step. One location for every command: $PISA_JAX_COMPILATION_CACHE if set
("off": pisa_jax turns none on, though JAX_COMPILATION_CACHE_DIR still applies), else a cache
directory already given to JAX (JAX_COMPILATION_CACHE_DIR or jax.config), else
~/.cache/pisa_jax/jax_cache (under $XDG_CACHE_HOME when that is set). Entries are keyed by
program, compiler options, device and jaxlib version, so a stale entry is never used; deleting
the directory is always safe.
A run of several processes on CPUs (jax.distributed over gloo) compiles afresh, whatever the
settings: with jaxlib 0.12, a step process 0 loaded from the cache and process 1 compiled never
finished its first cross-process all-reduce (each process writes and reads entries of its own).
This module imports nothing from the project.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "PISA_JAX_COMPILATION_CACHE"
OFF = ("off", "none", "0", "false")


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pisa_jax" / "jax_cache"


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at `directory` (default: see the module doc)
    and return it; None when the cache is turned off. Takes effect for compilations after the
    call, so call it before the first step is compiled (command start-up)."""
    import jax
    if _multi_process_cpu():
        jax.config.update("jax_enable_compilation_cache", False)  # JAX_COMPILATION_CACHE_DIR too
        return None
    choice = directory if directory is not None else os.environ.get(ENV_VAR)
    if choice is not None and str(choice).strip().lower() in OFF:
        return None
    if choice is None or not str(choice).strip():
        configured = jax.config.jax_compilation_cache_dir
        if configured:
            return Path(configured)
        choice = default_dir()
    path = Path(choice).expanduser().absolute()
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path


def _multi_process_cpu() -> bool:
    """Several processes joined by jax.distributed, on CPUs (call after jax.distributed starts).
    Without jax.distributed it starts no backend: the single-process commands are unchanged."""
    import jax
    from jax._src import distributed
    if getattr(distributed.global_state, "client", None) is None:
        return False
    return jax.process_count() > 1 and jax.default_backend() == "cpu"


def describe(path: Path | None) -> str:
    """The line a command prints at start."""
    if path is None and _multi_process_cpu():
        return "compilation cache: off (a run of several processes on CPUs compiles afresh)"
    if path is None:
        return f"compilation cache: off ({ENV_VAR}=off)"
    return f"compilation cache: {path} (set {ENV_VAR}=DIR to move it, =off to turn it off)"
