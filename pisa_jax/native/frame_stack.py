"""The input of a "stacked" 3D convolution, built on the CPU in one parallel native pass, called
from XLA through its FFI.

`pisa_jax.models.lowering`'s "stacked" forms lay the kt frames that each output frame reads side
by side on the channel axis, then run one 2D convolution. XLA CPU builds that tensor (a temporal
pad, kt strided slices, a concatenation on channels) in one loop fusion that moves a pixel's
3 channels at a time: 13 ms of thread time for the visual stem's bf16 [4, 16, 112, 112, 21]
input at the paper's first shapes (2-core Xeon), most of it while nothing else ran.
`frame_stack.cc` writes it in fixed-size pieces, split over XLA's thread pool.

The handler needs only a C++ compiler: it is compiled on first use (`pisa_jax.native.build`,
cached). `PISA_JAX_NATIVE_FRAME_STACK=off` turns it off, e.g. to compare.
"""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pisa_jax.native.build import load_handlers

SOURCE = Path(__file__).with_name("frame_stack.cc")
TARGET = "PisaStackFrames"
DTYPES = (jnp.float32, jnp.bfloat16)


@functools.lru_cache(maxsize=None)
def _loaded() -> str | None:
    """Builds, loads and registers the handler once per process: None when it is ready, else
    the reason it cannot be used."""
    return load_handlers(SOURCE, [TARGET], "PISA_JAX_NATIVE_FRAME_STACK", flags=["-O3"])


def unavailable_reason() -> str | None:
    return _loaded()


def applies(dtype) -> bool:
    """Whether frames of this dtype are stacked here: on a CPU backend, float32 or bfloat16,
    with the handler built."""
    return (jax.default_backend() == "cpu" and any(jnp.dtype(dtype) == d for d in DTYPES)
            and _loaded() is None)


def output_length(size: int, kernel: int, stride: int, pad: int) -> int:
    """A convolution's output length along one axis of `size` with zero padding (pad, pad):
    PyTorch's floor rule (here: the output frames of `taps` stacked frames)."""
    return (size + 2 * pad - kernel) // stride + 1


def stack_with_xla(x: jnp.ndarray, taps: int, stride: int, pad: int) -> jnp.ndarray:
    """What `stack` computes, in XLA's operations (its gradient too)."""
    t_out = output_length(x.shape[1], taps, stride, pad)
    if pad:
        x = jnp.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0), (0, 0)))
    pieces = [lax.slice_in_dim(x, k, k + (t_out - 1) * stride + 1, stride, axis=1)
              for k in range(taps)]
    return pieces[0] if taps == 1 else jnp.concatenate(pieces, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def stack(x: jnp.ndarray, taps: int, stride: int, pad: int) -> jnp.ndarray:
    """x [N, T, H, W, C] -> [N, T', H, W, taps * C], tap-major on channels: output frame j holds
    input frames j * stride + k - pad for k < taps, zeros where those fall outside [0, T).

    Where `applies(x.dtype)`. The gradient (only where x needs one: the stems' input is data)
    is `stack_with_xla`'s."""
    t_out = output_length(x.shape[1], taps, stride, pad)
    out = jax.ShapeDtypeStruct(x.shape[:1] + (t_out,) + x.shape[2:4] + (taps * x.shape[4],),
                               x.dtype)
    return jax.ffi.ffi_call(TARGET, out, vmap_method="sequential")(
        x, stride=np.int64(stride), pad=np.int64(pad))


def _stack_forward(x, taps, stride, pad):
    return stack(x, taps, stride, pad), x.shape


def _stack_backward(taps, stride, pad, shape, cotangent):
    _, vjp = jax.vjp(lambda x: stack_with_xla(x, taps, stride, pad),
                     jnp.zeros(shape, cotangent.dtype))
    return vjp(cotangent)


stack.defvjp(_stack_forward, _stack_backward)
