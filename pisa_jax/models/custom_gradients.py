"""Layers whose gradient XLA's CPU compiler runs slowly in the form autodiff gives, each with a
custom VJP computing the same values another way.

- `torch_dense` (`torch.nn.Linear` as flax's Dense): its input gradient, on every backend in
  the form `dense_dot_general` describes.
- `add_bias` (a convolution's bias, C3D's): its gradient, a column sum of [M, C], which XLA CPU
  rewrote into a windowed reduction (110 ms for C3D's conv1, [2, 16, 112, 112, 64] float32, in
  the train step's profile). On a CPU it is one native pass (`batch_norm_sums.moments`): with
  the ReLU's mask applied first, 37 ms against XLA's 143. Elsewhere XLA's own sum.
The C3D + R18-2D train step (batch 2 x 1 clip, 112^2 spectrograms, full width): the Dense
gradient 1.05-1.11x faster, the bias's 1.10-1.16x.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from pisa_jax.native import batch_norm_sums


@jax.custom_vjp
def add_bias(y: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
    """y [..., C] + bias [C] (one dtype)."""
    return y + bias


def _add_bias_forward(y, bias):
    return y + bias, None


def _add_bias_backward(_, dy):
    if batch_norm_sums.applies(dy.dtype):
        sums = batch_norm_sums.moments(dy)[0]                                     # f32[C]
    else:
        sums = jnp.sum(dy.astype(jnp.float32), axis=tuple(range(dy.ndim - 1)))
    return dy, sums.astype(dy.dtype)


add_bias.defvjp(_add_bias_forward, _add_bias_backward)


def dense_dot_general(x: jnp.ndarray, kernel: jnp.ndarray, dimension_numbers, precision=None,
                      preferred_element_type=None) -> jnp.ndarray:
    """A Dense layer's product x [..., K] @ kernel [K, N] (flax's `dot_general` signature; only
    the Dense layout), whose input gradient XLA's CPU compiler runs fast.

    Left to itself XLA lays dy @ kernel^T out as one dot contracting the kernel's minor dim,
    and its CPU emitter took 185 ms for C3D's fc6 ([2, 4096] by [8192, 4096]^T; 90 ms at 40
    rows), 30x its forward product. kernel @ dy^T, kept from being folded back into that form
    by an optimisation barrier, then a [K, rows] transpose, took 11 ms (18 ms at 40 rows).
    """
    if dimension_numbers != (((x.ndim - 1,), (0,)), ((), ())) or preferred_element_type:
        raise ValueError(f"dense_dot_general: only x [..., K] @ kernel [K, N], got "
                         f"{dimension_numbers}, preferred_element_type={preferred_element_type}")
    return _dense_product(x, kernel, precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense_product(x, kernel, precision):
    return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


def _dense_forward(x, kernel, precision):
    return _dense_product(x, kernel, precision), (x, kernel)


def _dense_backward(precision, residuals, dy):
    x, kernel = residuals
    rows = dy.reshape(-1, dy.shape[-1])                                         # [M, N]
    dx = lax.optimization_barrier(lax.dot_general(
        kernel, rows, (((1,), (1,)), ((), ())), precision=precision)).T       # [K, M] -> [M, K]
    dkernel = lax.dot_general(x.reshape(-1, x.shape[-1]), rows, (((0,), (0,)), ((), ())),
                              precision=precision)                             # [K, N]
    return dx.reshape(x.shape), dkernel


_dense_product.defvjp(_dense_forward, _dense_backward)


def torch_dense(features: int, *, dtype: Any, name: str) -> nn.Dense:
    """`torch.nn.Linear` as flax's Dense (kernel [in, out] float32, computed in `dtype`), with
    `dense_dot_general`'s fast input gradient."""
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name,
                    dot_general=dense_dot_general)
