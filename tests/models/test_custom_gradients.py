"""The layers with custom VJPs give autodiff's gradients: the Dense product (its input gradient
computed as kernel @ dy^T) and the bias add (its gradient summed natively on a CPU)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pisa_jax.models import custom_gradients
from pisa_jax.models.custom_gradients import add_bias, dense_dot_general, torch_dense
from pisa_jax.native import batch_norm_sums

DENSE = (((2,), (0,)), ((), ()))  # x [B, T, K] @ kernel [K, N]


def _random(shape, seed, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_dense_product_and_gradients_equal_autodiffs(dtype, tolerance):
    x, kernel, cotangent = _random((3, 4, 37), 0, dtype), _random((37, 11), 1, dtype), \
        _random((3, 4, 11), 2, dtype)

    def both(product):
        y, vjp = jax.vjp(lambda x, k: product(x, k, DENSE), x, kernel)
        return [np.asarray(a, np.float32) for a in (y, *vjp(cotangent))]
    got, want = both(dense_dot_general), both(jax.lax.dot_general)
    for name, g, w in zip(("y", "dx", "dkernel"), got, want):
        np.testing.assert_allclose(g, w, rtol=tolerance, atol=tolerance * np.abs(w).max(),
                                   err_msg=name)


def test_dense_takes_only_the_dense_layout():
    with pytest.raises(ValueError, match="only x"):
        dense_dot_general(jnp.ones((4, 3)), jnp.ones((4, 5)), (((0,), (0,)), ((), ())))


def test_torch_dense_keeps_flax_dense_parameters():
    variables = torch_dense(5, dtype=jnp.float32, name="fc").init(jax.random.PRNGKey(0),
                                                                  jnp.ones((2, 3)))
    shapes = jax.tree_util.tree_map(jnp.shape, variables["params"])
    assert shapes == {"kernel": (3, 5), "bias": (5,)}


@pytest.mark.parametrize("native", [True, False])
def test_bias_gradient_is_the_column_sum(monkeypatch, native):
    if native and not batch_norm_sums.applies(jnp.float32):
        pytest.skip(f"native sums: {batch_norm_sums.unavailable_reason()}")
    monkeypatch.setattr(custom_gradients.batch_norm_sums, "applies", lambda dtype: native)
    y, bias, cotangent = _random((2, 5, 6, 7, 8), 0), _random((8,), 1), _random((2, 5, 6, 7, 8), 2)
    out, vjp = jax.vjp(add_bias, y, bias)
    dy, dbias = vjp(cotangent)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(y + bias))
    np.testing.assert_array_equal(np.asarray(dy), np.asarray(cotangent))
    np.testing.assert_allclose(np.asarray(dbias), np.asarray(cotangent).sum((0, 1, 2, 3)),
                               rtol=1e-5, atol=1e-5)
