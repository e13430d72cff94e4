"""XLA compiler options that pisa_jax applies itself on CPU, so users never export flags.

jaxlib 0.10.x sends CPU 2D convolutions to the YNNPACK library by default, which measured 1.6-7x
slower than XLA's own Eigen convolutions on this project's shapes (and 2-3x slower on the whole
training step); an empty YNN fusion-type list turns that off. Copy insertion with region
analysis: the train step donates its state and updates every parameter in place, and XLA's
default analysis then copied each parameter first (418 copies in the R18+R18 step, 221 with
it); the step 3.6-4.1 % faster at the paper's shapes (2-core Xeon, jax 0.10.2), the same bits.
No other CPU option measured helped (oneDNN, XNNPACK, single-threaded Eigen, the scheduler,
parallel codegen, a 512-bit vector width: within noise or slower).

Two ways to apply it, both safe on jaxlibs that lack an option:
- `cpu_compiler_options()`: a dict for `jax.jit(..., compiler_options=...)` or
  `jitted.lower(...).compile(compiler_options=...)`; per compilation, so it works whenever it is
  called. Every option is first tried on a one-op compile and dropped if this jaxlib rejects it.
  `jax.pmap` takes no compiler options: compile a pmap'd step with
  `step.lower(*args).compile(compiler_options=cpu_compiler_options())`, or build the step from
  `jax.jit` + `shard_map` (what pmap is made of since jax 0.8) and pass them to `jax.jit`.
- `add_cpu_flags_to_env()`: appends the options to `XLA_FLAGS`, which XLA reads once, when the
  first backend starts; later changes are ignored, and a flag this jaxlib does not know aborts
  the process at that moment. So it only acts before any backend exists and on the jaxlib
  versions listed in TESTED_JAXLIB, keeps every flag already in XLA_FLAGS (the user's value of
  the same flag wins) and reports whether it acted.
This module imports nothing from the project.
"""
from __future__ import annotations

import functools
import os

import jax

# option -> value, as `compiler_options` takes it ("" is the empty list: no YNN fusions).
CPU_OPTIONS: dict[str, object] = {"xla_cpu_experimental_ynn_fusion_type": "",
                                  "xla_cpu_copy_insertion_use_region_analysis": True}
# jaxlib (major, minor) versions on which every CPU_OPTIONS flag is known to exist.
TESTED_JAXLIB = ((0, 10), (0, 11), (0, 12))


def cpu_compiler_options() -> dict[str, object]:
    """CPU_OPTIONS this jaxlib accepts when JAX's default backend is the CPU; an empty dict on
    any other backend. Starts the backend if none is running yet."""
    if jax.default_backend() != "cpu":
        return {}
    return accepted_options(CPU_OPTIONS)


def accepted_options(options: dict[str, object]) -> dict[str, object]:
    """The entries of `options` (any backend's) that this jaxlib's compiler accepts."""
    return {name: value for name, value in options.items() if _accepted(name, value)}


@functools.lru_cache(maxsize=None)
def _accepted(name: str, value: object) -> bool:
    """Whether a one-op CPU compile accepts `name=value` (unknown names and values raise)."""
    lowered = jax.jit(lambda x: x + 1).lower(jax.ShapeDtypeStruct((), "float32"))
    try:
        lowered.compile(compiler_options={name: value})
    except Exception:  # noqa: BLE001 - jaxlib raises its own runtime error types here
        return False
    return True


def add_cpu_flags_to_env(environ: dict | None = None) -> bool:
    """Append CPU_OPTIONS to XLA_FLAGS in `environ` (default os.environ) if no JAX backend has
    started and this jaxlib is in TESTED_JAXLIB. Flags already present keep their values.
    Returns True if XLA_FLAGS now holds every option."""
    environ = os.environ if environ is None else environ
    if _backend_started() or _jaxlib_version() not in TESTED_JAXLIB:
        return False
    flags = environ.get("XLA_FLAGS", "").split()
    present = {flag.lstrip("-").split("=", 1)[0] for flag in flags}
    for name, value in CPU_OPTIONS.items():
        if name not in present:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            flags.append(f"--{name}={text}")
    environ["XLA_FLAGS"] = " ".join(flags)
    return True


def _jaxlib_version() -> tuple[int, int]:
    import jaxlib.version
    major, minor = jaxlib.version.__version__.split(".")[:2]
    return int(major), int(minor)


def _backend_started() -> bool:
    """True if a backend exists (or this jax cannot tell: then XLA_FLAGS may already be read)."""
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return True
