"""BatchNorm's per-channel sums on the CPU in one pass each, called from XLA through its FFI.

`pisa_jax.models.batch_norm` needs two column sums of [M, C] operands in the forward pass
(x and x * x) and two in the backward pass (dy and dy * x_hat; with a ReLU after the layer,
dy masked by its output). XLA CPU reduces each from a materialised operand: x * x and
dy * x_hat are written out and read back, five passes over memory where `batch_norm_sums.cc`
makes one (x) and one (dy with x, and the ReLU's output). Its sums accumulate in
float32 over blocks of 32 rows, then in float64, and are rounded to float32 once.

The handlers need only a C++ compiler: they are compiled on first use (`pisa_jax.native.build`,
cached). `PISA_JAX_NATIVE_BATCH_NORM=off` turns them off, e.g. to compare.
"""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp

from pisa_jax.native.build import load_handlers

SOURCE = Path(__file__).with_name("batch_norm_sums.cc")
MOMENTS = "PisaBatchNormMoments"
GRADIENT_SUMS = "PisaBatchNormGradientSums"
RELU_GRADIENT_SUMS = "PisaBatchNormReluGradientSums"
DTYPES = (jnp.float32, jnp.bfloat16)


@functools.lru_cache(maxsize=None)
def _loaded() -> str | None:
    """Builds, loads and registers the handlers once per process: None when they are ready,
    else the reason they cannot be used."""
    return load_handlers(SOURCE, [MOMENTS, GRADIENT_SUMS, RELU_GRADIENT_SUMS],
                         "PISA_JAX_NATIVE_BATCH_NORM", flags=["-O3"])


def unavailable_reason() -> str | None:
    return _loaded()


def applies(dtype) -> bool:
    """Whether the sums of a [..., C] operand of this dtype run here: on a CPU backend, float32
    or bfloat16, with the handlers built."""
    return (jax.default_backend() == "cpu" and any(jnp.dtype(dtype) == d for d in DTYPES)
            and _loaded() is None)


def moments(x: jnp.ndarray) -> jnp.ndarray:
    """x [..., C], viewed as [M, C] -> f32[2, C]: (sum of x, sum of x^2) over M.

    Pass a layer's activations as they are: XLA CPU turns a bf16 reshape between two custom
    calls into a copy through float32."""
    out = jax.ShapeDtypeStruct((2, x.shape[-1]), jnp.float32)
    return jax.ffi.ffi_call(MOMENTS, out, vmap_method="sequential")(x)


def gradient_sums(dy: jnp.ndarray, x: jnp.ndarray, mean: jnp.ndarray,
                  inverse_std: jnp.ndarray, relu_output: jnp.ndarray | None = None) -> jnp.ndarray:
    """dy, x [..., C] = [M, C] (one dtype), mean and inverse_std f32[C] -> f32[2, C]: (sum of
    dy, sum of dy * (x - mean) * inverse_std) over M.

    With `relu_output` (x's shape and dtype: a ReLU's output after the BatchNorm, dy its
    gradient), dy counts only where relu_output > 0: the sums of the BatchNorm's own output
    gradient, without writing it out."""
    out = jax.ShapeDtypeStruct((2, x.shape[-1]), jnp.float32)
    mean, inverse_std = mean.astype(jnp.float32), inverse_std.astype(jnp.float32)
    if relu_output is None:
        return jax.ffi.ffi_call(GRADIENT_SUMS, out, vmap_method="sequential")(
            dy, x, mean, inverse_std)
    return jax.ffi.ffi_call(RELU_GRADIENT_SUMS, out, vmap_method="sequential")(
        dy, x, relu_output, mean, inverse_std)
