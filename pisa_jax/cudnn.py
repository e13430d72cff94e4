"""The cuDNN release JAX runs on, and a warning where it is one whose bf16 3D convolutions are
wrong.

Some cuDNN releases, 9.10.2 to 9.15, return wrong bf16 results for large 3D convolutions, which
every visual backbone here is made of. The check that shows it on a given GPU is
`benchmarks/bf16_check.py` (bf16 against float32, layer by layer and the whole model); this
module only names the risk before a bf16 run trains, evaluates or predicts on such a release, so
that nobody trusts a bf16 result from one unchecked. The release is read from JAX's CUDA plugin;
without one (a CPU, or a jaxlib without CUDA) there is no cuDNN and nothing to say.
This module imports nothing from the project.
"""
from __future__ import annotations

import sys

import jax

# The releases with the wrong bf16 3D convolutions: FIRST_AFFECTED <= release < FIXED.
FIRST_AFFECTED = (9, 10, 2)
FIXED = (9, 16, 0)


def split_version(number: int) -> tuple[int, int, int]:
    """cudnnGetVersion()'s number as (major, minor, patch): cuDNN 9 counts major * 10000 (9.10.2
    is 91002), earlier releases major * 1000 (8.9.6 is 8906)."""
    if number >= 90000:
        return number // 10000, number // 100 % 100, number % 100
    return number // 1000, number // 100 % 10, number % 100


def version() -> tuple[int, int, int] | None:
    """The cuDNN release JAX's CUDA plugin loaded, or None where there is none."""
    try:
        from jax._src.lib import cuda_versions  # None without a CUDA plugin
        return split_version(int(cuda_versions.cudnn_get_version()))
    except Exception:  # no plugin, no cuDNN library, or a jaxlib that moved the module
        return None


def dotted(release: tuple[int, int, int] | None) -> str:
    """A release as people write it ("9.12.0"); "none" for None."""
    return ".".join(map(str, release)) if release else "none"


def platform() -> str:
    """JAX's default backend ("cpu", "gpu", ...); the tests stand a GPU in for it."""
    return jax.default_backend()


def bf16_warning(precision: str) -> str | None:
    """One line for a bf16 run on a GPU whose cuDNN is an affected release, else None."""
    if precision != "bfloat16" or platform() != "gpu":
        return None
    release = version()
    if release is None or not FIRST_AFFECTED <= release < FIXED:
        return None
    return (f"warning: this GPU runs cuDNN {dotted(release)}, one of the releases (9.10.2 to "
            f"9.15) whose bf16 3D convolutions can be wrong on large shapes: check it with "
            f"`python benchmarks/bf16_check.py` before trusting bf16 results, or train in "
            f"float32 (--precision float32)")


def warn_if_bf16_unsafe(precision: str) -> None:
    """bf16_warning's line on stderr, if any (stdout may be a command's JSON)."""
    line = bf16_warning(precision)
    if line:
        print(line, file=sys.stderr, flush=True)
