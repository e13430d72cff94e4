"""`torch.nn.MaxPoolNd` on the CPU run by oneDNN through XLA's FFI (`onednn_pool.cc`, built and
loaded with the convolutions by `onednn`), with its gradient: the 3D stem's bf16 pool took 6 ms
forward + gradient here against 210 ms for XLA's bf16 form. 2D pools take [N, H, W, C] as it
is, run as depth 1 without a reshape (XLA CPU would copy a bf16 one through float32).
"""
from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pisa_jax.native import onednn


def max_pool_high_padding(size: int, window: int, stride: int, padding: int) -> int:
    """The padding past the end that floor mode reads (oneDNN takes it explicitly): at most
    `padding`, less where the last window stops short; negative where it drops input."""
    out = (size + 2 * padding - window) // stride + 1
    return (out - 1) * stride + window - size - padding


def per_axis(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    """A pool's window, stride or padding for each of `dims` spatial dims (an int: all alike)."""
    values = (value,) * dims if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != dims:
        raise ValueError(f"expected one value or {dims}, got {value!r}")
    return values


def max_pool(x: jnp.ndarray, window: int | Sequence[int], stride: int | Sequence[int],
             padding: int | Sequence[int]) -> jnp.ndarray:
    """`torch.nn.MaxPoolNd(window, stride, padding)` (floor mode, the padding never the maximum)
    on x [N, *spatial, C] (2 or 3 spatial dims), float32 (or bfloat16 where `onednn.supports` it) ->
    [N, *spatial_out, C]; window, stride, padding: one int or one per spatial dim. The gradient
    goes to the first maximum of each window, as PyTorch's does. Every spatial dim's high
    padding (`max_pool_high_padding`) must be >= 0."""
    onednn.check_available()
    onednn.check_dtype("max-pool", x.dtype)
    if x.ndim not in (4, 5):
        raise ValueError(f"oneDNN max-pool takes 2D or 3D inputs, got shape {x.shape}")
    window, stride, padding = (per_axis(v, x.ndim - 2) for v in (window, stride, padding))
    if x.ndim == 4:  # 2D: the handlers run it as depth 1, without a reshape (see above)
        return _max_pool3d(x, x.shape, (1, *window), (1, *stride), (0, *padding))
    return _max_pool3d(x, x.shape, window, stride, padding)


def _high_padding(shape, window, strides, padding) -> tuple[int, ...]:
    """pad_hi per spatial dim for x of `shape` [N, D, H, W, C] (or [N, H, W, C]: D = 1);
    refuses a pool that drops input."""
    shape = _ndhwc(shape)
    high = tuple(max_pool_high_padding(shape[1 + i], window[i], strides[i], padding[i])
                 for i in range(3))
    if min(high) < 0:
        raise ValueError(f"max-pool of {shape} (window {window}, strides {strides}, padding "
                         f"{padding}) drops input at the end: not supported by oneDNN")
    return high


def _ndhwc(shape) -> tuple[int, ...]:
    return (shape[0], 1) + tuple(shape[1:]) if len(shape) == 4 else tuple(shape)


def _pool_geometry(shape, dtype, window, strides, padding):
    """(y shape, pad_hi, workspace bytes) for x of `shape` [N, D, H, W, C] (or [N, H, W, C]:
    y then [N, H', W', C]) in `dtype`."""
    rank, shape = len(shape), _ndhwc(shape)
    high = _high_padding(shape, window, strides, padding)
    y_shape = (shape[0],) + tuple((shape[1 + i] + padding[i] + high[i] - window[i]) // strides[i]
                                  + 1 for i in range(3)) + (shape[-1],)
    ints = [(ctypes.c_int64 * len(v))(*v) for v in (shape, y_shape, window, strides, padding, high)]
    workspace_bytes = onednn.libraries().pool.PisaOnednnMaxPoolWorkspaceBytes
    workspace = workspace_bytes(int(dtype == jnp.bfloat16), *ints)
    if workspace < 0:
        raise ValueError(f"oneDNN has no max-pool of {shape} (window {window}, strides {strides})")
    return (y_shape if rank == 5 else y_shape[:1] + y_shape[2:]), high, workspace


def _pool_attributes(window, strides, padding, high) -> dict[str, np.ndarray]:
    return {"window": np.asarray(window, np.int64), **onednn.window_attributes(strides, padding),
            "pad_hi": np.asarray(high, np.int64)}


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_pool3d(x, shape, window, strides, padding):
    return _max_pool3d_forward(x, shape, window, strides, padding)[0]


def _max_pool3d_forward(x, shape, window, strides, padding):
    y_shape, high, workspace_bytes = _pool_geometry(shape, x.dtype, window, strides, padding)
    # the workspace: where each window's maximum is (oneDNN's layout), for the backward pass
    y, workspace = jax.ffi.ffi_call(
        onednn.TARGETS["max_pool_forward"], (jax.ShapeDtypeStruct(y_shape, x.dtype),
                                      jax.ShapeDtypeStruct((workspace_bytes,), jnp.uint8)),
        vmap_method="sequential")(x, **_pool_attributes(window, strides, padding, high))
    return y, workspace


def _max_pool3d_backward(shape, window, strides, padding, workspace, dy):
    high = _high_padding(shape, window, strides, padding)
    dx = jax.ffi.ffi_call(onednn.TARGETS["max_pool_backward"], jax.ShapeDtypeStruct(shape, dy.dtype),
                          vmap_method="sequential")(
        dy, workspace, **_pool_attributes(window, strides, padding, high))
    return (dx,)


_max_pool3d.defvjp(_max_pool3d_forward, _max_pool3d_backward)
