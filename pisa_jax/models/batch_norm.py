"""BatchNorm over the batch and every spatial axis, with its own gradient.

The same layer as `flax.linen.BatchNorm(momentum=0.9, epsilon=1e-5)` (variables `params/scale`,
`params/bias`, `batch_stats/mean`, `batch_stats/var`; biased batch variance from E[x^2] - E[x]^2
in float32; running averages updated in training, except while initialising), computed
differently for speed on CPU:
- x [N, *spatial, C] is viewed as [M, C] (a bitcast), so every reduction is one [M, C] -> [C]
  column sum. XLA's CPU backend turns Flax's 4-5 axis reductions into scalar reduce-window loops
  with the whole elementwise producer (x * x, dy * x_hat, the ReLU mask) fused into them: at the
  3D stem's [4, 16, 56, 56, 64] one BatchNorm forward + backward took 297 ms. On CPU each column
  sum reads a materialised operand (an optimisation barrier keeps the producer out of the
  reduction): one extra pass over memory, but vectorised, and as exact as Flax's (3e-7 vs 4e-6
  with the producer fused and 3e-5 as a product with a vector of ones, both slower). Elsewhere
  the sums are plain reductions, which GPU compilers fuse well.
- `jax.custom_vjp` gives the textbook gradient, two column sums (of dy and dy * x_hat) and one
  elementwise pass, instead of autodiff's chain through mean, mean of squares and rsqrt.
Together: 4x faster for that layer (`benchmarks/batch_norm.py`).
- On CPU, where `pisa_jax.native.batch_norm_sums` is built (a C++ compiler), each pass's two
  sums come from one native pass over its operands instead (x; dy with x), in float32 and bf16:
  nothing of [M, C] is written for them. The whole R18 + R18 training step at the paper's
  shapes (2-core Xeon, interleaved in one process): 3.6 % faster in float32 (645 against
  669 ms), 10.7 % in bf16 (335 against 373 ms), where XLA's bf16 sums also convert to float32
  first.
With `axis_name` the sums are also summed over that mapped axis (pmap/shard_map), in the
forward and the backward pass, so the layer normalises over the whole global batch.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from pisa_jax.native import batch_norm_sums


def column_sum(x: jnp.ndarray) -> jnp.ndarray:
    """[M, C] -> [C], accumulated in float32. On CPU of a materialised x (see the docstring)."""
    if jax.default_backend() == "cpu":
        x = lax.optimization_barrier(x)
    return jnp.sum(x, axis=0, dtype=jnp.float32)


def _global_sum(value, axis_name):
    if axis_name is None or lax.axis_size(axis_name) == 1:
        return value
    return lax.psum(value, axis_name)


def _statistics(x, axis_name):
    """Mean and biased variance of x [M, C] (float32) over M and, with axis_name, over devices."""
    count = _global_sum(jnp.float32(x.shape[0]), axis_name)
    if batch_norm_sums.applies(x.dtype):
        local = batch_norm_sums.moments(x)  # [2, C]
    else:
        x = x.astype(jnp.float32)
        local = jnp.stack([column_sum(x), column_sum(x * x)])
    sums = _global_sum(local, axis_name) / count
    mean, mean_of_squares = sums[0], sums[1]
    return mean, jnp.maximum(mean_of_squares - mean * mean, 0.0), count


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def normalize_batch(x, scale, bias, epsilon: float, axis_name: str | None):
    """(x [M, C], scale [C], bias [C]) -> (y [M, C] in x's dtype, batch mean [C], batch var [C]).

    The statistics come out under stop_gradient semantics: their cotangents are ignored, which is
    exact as long as they only feed the running averages (BatchNorm below stops their gradient).
    """
    return _normalize_forward(x, scale, bias, epsilon, axis_name)[0]


def _normalize_forward(x, scale, bias, epsilon, axis_name):
    mean, var, count = _statistics(x, axis_name)
    inverse_std = lax.rsqrt(var + epsilon)
    y = (x.astype(jnp.float32) - mean) * (inverse_std * scale) + bias
    return (y.astype(x.dtype), mean, var), (x, mean, inverse_std, scale, count)


def _normalize_backward(epsilon, axis_name, residuals, cotangents):
    del epsilon
    x, mean, inverse_std, scale, count = residuals
    dy = cotangents[0].astype(jnp.float32)
    x_hat = (x.astype(jnp.float32) - mean) * inverse_std
    if batch_norm_sums.applies(x.dtype):  # d bias, d scale [2, C]
        local = batch_norm_sums.gradient_sums(cotangents[0].astype(x.dtype), x, mean,
                                              inverse_std)
    else:
        local = jnp.stack([column_sum(dy), column_sum(dy * x_hat)])
    sums = _global_sum(local, axis_name)
    dx = (scale * inverse_std) * (dy - (sums[0] / count) - x_hat * (sums[1] / count))
    # As autodiff of Flax's layer under pmap gives: x's gradient is that of every device's loss
    # (the statistics are shared), the parameters' is that of this device's loss (the train
    # step averages those over devices).
    return dx.astype(x.dtype), local[1], local[0]


normalize_batch.defvjp(_normalize_forward, _normalize_backward)


class BatchNorm(nn.Module):
    """x [N, *spatial, C] -> [N, *spatial, C] in `dtype`; see the module docstring.

    use_running_average: normalise with the running statistics (eval) instead of the batch's.
    Parameters and statistics are float32 whatever `dtype` is.
    """
    use_running_average: bool
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones_init(), (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (features,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        x = x.astype(self.dtype)
        if self.use_running_average:
            multiplier = lax.rsqrt(ra_var.value + self.epsilon) * scale
            y = (x.astype(jnp.float32) - ra_mean.value) * multiplier + bias
            return y.astype(self.dtype)
        y, mean, var = normalize_batch(x.reshape(-1, features), scale, bias, self.epsilon,
                                       self.axis_name)
        if not self.is_initializing():
            mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y.reshape(x.shape)
