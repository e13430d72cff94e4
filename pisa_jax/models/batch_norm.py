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
  first. They take x [N, *spatial, C] as it is: XLA CPU turned the reshape to [M, C] in front
  of them into a copy of each bf16 operand, through float32.
- `relu=True` is `nn.relu` after the layer, in one: the gradient's mask comes from the output
  (> 0 exactly where the input of the ReLU is), so the values before the ReLU are never written
  and the backward pass never writes the masked gradient (the native sums take the mask).
  Without it the bf16 step wrote, per layer, the pre-ReLU tensor, a ReLU pass over it, and the
  masked gradient in float32 plus its bf16 copy. With both changes (and oneDNN's handlers taking
  activations without a reshape) the bf16 step at the paper's first shapes ran 1.13x faster
  (304 against 343 ms, interleaved in one process), float32 1.02x.
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
    """Mean and biased variance of x [..., C] = [M, C] (float32) over M and, with axis_name,
    over devices."""
    count = _global_sum(jnp.float32(x.size // x.shape[-1]), axis_name)
    if batch_norm_sums.applies(x.dtype):
        local = batch_norm_sums.moments(x)  # [2, C]
    else:
        x = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
        local = jnp.stack([column_sum(x), column_sum(x * x)])
    sums = _global_sum(local, axis_name) / count
    mean, mean_of_squares = sums[0], sums[1]
    return mean, jnp.maximum(mean_of_squares - mean * mean, 0.0), count


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def normalize_batch(x, scale, bias, epsilon: float, axis_name: str | None, relu: bool):
    """(x [..., C], scale [C], bias [C]) -> (y [..., C] in x's dtype, batch mean [C], batch
    var [C]), the statistics over all of x's axes but the last; with `relu`, y = max(y, 0).

    The statistics come out under stop_gradient semantics: their cotangents are ignored, which is
    exact as long as they only feed the running averages (BatchNorm below stops their gradient).
    """
    return _normalize_forward(x, scale, bias, epsilon, axis_name, relu)[0]


def _normalize_forward(x, scale, bias, epsilon, axis_name, relu):
    mean, var, count = _statistics(x, axis_name)
    inverse_std = lax.rsqrt(var + epsilon)
    y = ((x.astype(jnp.float32) - mean) * (inverse_std * scale) + bias).astype(x.dtype)
    if relu:  # the gradient's mask comes from this output: y before it is never written
        y = jnp.maximum(y, jnp.zeros((), y.dtype))
    return (y, mean, var), (x, mean, inverse_std, scale, count, y if relu else None)


def _normalize_backward(epsilon, axis_name, relu, residuals, cotangents):
    del epsilon, relu
    x, mean, inverse_std, scale, count, relu_output = residuals
    dy = cotangents[0].astype(jnp.float32)
    if relu_output is not None:  # jax.nn.relu's gradient: where its input (equally, output) > 0
        dy = jnp.where(relu_output > 0, dy, 0.0)
    x_hat = (x.astype(jnp.float32) - mean) * inverse_std
    if batch_norm_sums.applies(x.dtype):  # d bias, d scale [2, C]
        local = batch_norm_sums.gradient_sums(cotangents[0].astype(x.dtype), x, mean,
                                              inverse_std, relu_output)
    else:
        local = jnp.stack([column_sum(dy.reshape(-1, dy.shape[-1])),
                           column_sum((dy * x_hat).reshape(-1, dy.shape[-1]))])
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
    relu: then apply a ReLU, as `nn.relu(BatchNorm(...)(x))` computes it, in one pass: the
    backward pass takes the ReLU's mask from this output, so the values before the ReLU are
    never written (in training they were, for `nn.relu`'s gradient).
    Parameters and statistics are float32 whatever `dtype` is.
    """
    use_running_average: bool
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    axis_name: str | None = None
    relu: bool = False

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
            y = ((x.astype(jnp.float32) - ra_mean.value) * multiplier + bias).astype(self.dtype)
            return jnp.maximum(y, jnp.zeros((), y.dtype)) if self.relu else y
        y, mean, var = normalize_batch(x, scale, bias, self.epsilon, self.axis_name, self.relu)
        if not self.is_initializing():
            mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y
