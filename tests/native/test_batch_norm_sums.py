"""BatchNorm's one-pass sums (pisa_jax.native.batch_norm_sums) against float64 NumPy, in float32
and bf16, split over XLA's thread pool or not, masked by a ReLU's output, of any rank; and what
they refuse (without a build or when turned off: tests/native/test_build.py)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pisa_jax.native import batch_norm_sums

needs_sums = pytest.mark.skipif(batch_norm_sums.unavailable_reason() is not None,
                                reason=f"native sums: {batch_norm_sums.unavailable_reason()}")

# [M, C]: one chunk; above the chunk size with a last block and a last chunk that are partial;
# channels that fill no vector register exactly
SHAPES = [(7, 3), (50_001, 13), (3_000, 64)]


def _operands(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(shape) * 2.0 + 3.0, dtype)  # an offset mean
    dy = jnp.asarray(rng.standard_normal(shape), dtype)
    x64 = np.asarray(x.astype(jnp.float32), np.float64).reshape(-1, shape[-1])  # [M, C]
    mean = jnp.asarray(x64.mean(0), jnp.float32)
    inverse_std = jnp.asarray(1.0 / x64.std(0), jnp.float32)
    return x, dy, mean, inverse_std


def _f64(a):
    return np.asarray(jnp.asarray(a).astype(jnp.float32), np.float64)


def _assert_close(got, want, rtol):
    got = np.asarray(got)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


@needs_sums
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_moments(shape, dtype):
    x, _, _, _ = _operands(shape, dtype)
    got = jax.jit(batch_norm_sums.moments)(x)
    x64 = _f64(x)
    _assert_close(got, np.stack([x64.sum(0), (x64 * x64).sum(0)]), 1e-6)


@needs_sums
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_gradient_sums(shape, dtype):
    x, dy, mean, inverse_std = _operands(shape, dtype)
    got = jax.jit(batch_norm_sums.gradient_sums)(dy, x, mean, inverse_std)
    x_hat = (_f64(x) - _f64(mean)) * _f64(inverse_std)
    dy64 = _f64(dy)
    _assert_close(got, np.stack([dy64.sum(0), (dy64 * x_hat).sum(0)]), 1e-6)


@needs_sums
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_relu_gradient_sums(shape, dtype):
    """With a ReLU's output, dy counts only where that output is > 0."""
    x, dy, mean, inverse_std = _operands(shape, dtype)
    relu_output = jnp.maximum(x - 3.0, 0).astype(dtype)  # about half of it zero
    got = jax.jit(batch_norm_sums.gradient_sums)(dy, x, mean, inverse_std, relu_output)
    x_hat = (_f64(x) - _f64(mean)) * _f64(inverse_std)
    dy64 = np.where(_f64(relu_output) > 0, _f64(dy), 0.0)
    _assert_close(got, np.stack([dy64.sum(0), (dy64 * x_hat).sum(0)]), 1e-6)


@needs_sums
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_activations_of_any_rank_are_m_by_c(dtype):
    """[N, T, H, W, C] and [N, H, W, C] operands are summed as their [M, C] view."""
    for shape in [(2, 3, 5, 7, 6), (3, 5, 7, 6)]:
        x, dy, mean, inverse_std = _operands(shape, dtype)
        matrix = lambda a: a.reshape(-1, shape[-1])  # noqa: E731
        np.testing.assert_array_equal(jax.jit(batch_norm_sums.moments)(x),
                                      jax.jit(batch_norm_sums.moments)(matrix(x)))
        for mask in (None, x):
            sums = functools.partial(batch_norm_sums.gradient_sums, relu_output=mask)
            flat = functools.partial(batch_norm_sums.gradient_sums,
                                     relu_output=None if mask is None else matrix(mask))
            np.testing.assert_array_equal(
                jax.jit(sums)(dy, x, mean, inverse_std),
                jax.jit(flat)(matrix(dy), matrix(x), mean, inverse_std))


@needs_sums
def test_the_same_bits_every_call():
    x, dy, mean, inverse_std = _operands((50_001, 13), jnp.float32)
    moments = jax.jit(batch_norm_sums.moments)
    gradient_sums = jax.jit(batch_norm_sums.gradient_sums)
    for _ in range(3):
        np.testing.assert_array_equal(moments(x), moments(x))
        np.testing.assert_array_equal(gradient_sums(dy, x, mean, inverse_std),
                                      gradient_sums(dy, x, mean, inverse_std))


@needs_sums
def test_refuses_what_it_cannot_sum():
    with pytest.raises(Exception, match="BatchNorm moments: x must be a float32 or bfloat16"):
        jax.jit(batch_norm_sums.moments)(jnp.ones((2, 3), jnp.float16)).block_until_ready()
    x, dy, mean, inverse_std = _operands((5, 4), jnp.float32)
    with pytest.raises(Exception, match="BatchNorm gradient sums: mismatched operands"):
        jax.jit(batch_norm_sums.gradient_sums)(dy, x, mean[:3], inverse_std).block_until_ready()
    with pytest.raises(Exception, match="BatchNorm gradient sums: mismatched operands"):
        jax.jit(batch_norm_sums.gradient_sums)(dy, x, mean, inverse_std,
                                               x.astype(jnp.bfloat16)).block_until_ready()
