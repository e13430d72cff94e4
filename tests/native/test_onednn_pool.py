"""oneDNN's max-pool through XLA's FFI: the same values and gradients as XLA's form (to the
bit, ties included, float32 and bf16), under jit, pmap and vmap; who computes a max-pool
("auto", sizes, dtypes, backends)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pisa_jax.models.layers import torch_max_pool
from pisa_jax.models.lowering import ONEDNN_AUTO_MIN_POOL_ELEMENTS, resolve_max_pool
from pisa_jax.native import onednn, onednn_pool

needs_onednn = pytest.mark.skipif(not onednn.available(),
                                  reason=f"onednn: {onednn.unavailable_reason()}")

# name -> (x [N, *spatial, C], window, stride, padding)
POOLS = {
    "3D stem, odd sizes": ((2, 5, 9, 7, 3), 3, 2, 1),
    "3D stem, even sizes": ((1, 8, 12, 12, 16), 3, 2, 1),
    "2D stem": ((2, 13, 11, 4), 3, 2, 1),
    "3D 2x2 stride 2": ((1, 4, 6, 8, 2), 2, 2, 0),
    "2D 3x3 stride 1": ((1, 6, 5, 3), 3, 1, 1),
    "C3D pool1 (1,2,2)": ((1, 4, 6, 6, 2), (1, 2, 2), (1, 2, 2), 0),
    "C3D pool5, padding (0,1,1)": ((2, 2, 7, 7, 3), 2, 2, (0, 1, 1)),
}


def _pool_and_gradient(lowering, x, window, stride, padding):
    """(y, d/dx) for an integer cotangent: both exact, so the forms must agree to the bit."""
    def run(x):
        y, vjp = jax.vjp(lambda x: torch_max_pool(x, window, stride, padding, lowering), x)
        cotangent = (jnp.arange(y.size, dtype=y.dtype) % 7 - 3).reshape(y.shape)
        return y, vjp(cotangent)[0]
    return [np.asarray(a) for a in jax.jit(run)(x)]


@needs_onednn
@pytest.mark.parametrize("name", POOLS)
def test_values_and_gradients_equal_xla_with_ties(name):
    shape, window, stride, padding = POOLS[name]
    x = np.random.default_rng(0).integers(-2, 2, shape).astype(np.float32)  # full of ties
    want = _pool_and_gradient("native", x, window, stride, padding)
    got = _pool_and_gradient("onednn", x, window, stride, padding)
    for what, g, r in zip(("y", "dx"), got, want):
        np.testing.assert_array_equal(g, r, f"{name} {what}")


@pytest.mark.skipif(not onednn.preferred(jnp.bfloat16),
                    reason="oneDNN's bf16 max-pool needs a CPU with bf16 instructions")
@pytest.mark.parametrize("name", ["3D stem, odd sizes", "2D stem"])
def test_bf16_values_and_gradients_equal_xla_with_ties(name):
    shape, window, stride, padding = POOLS[name]
    x = np.random.default_rng(0).integers(-2, 2, shape).astype(jnp.bfloat16)
    want = _pool_and_gradient("native", x, window, stride, padding)
    got = _pool_and_gradient("onednn", x, window, stride, padding)
    for what, g, r in zip(("y", "dx"), got, want):
        assert g.dtype == jnp.bfloat16, what
        np.testing.assert_array_equal(g, r, f"{name} {what}")


@needs_onednn
def test_a_2d_pool_takes_its_input_as_it_is():
    """[N, H, W, C] goes to the handlers without a reshape (a copy in bf16 on XLA's CPU
    backend), forward and backward."""
    x = jnp.ones(POOLS["2D stem"][0], jnp.float32)
    program = jax.jit(jax.grad(lambda x: jnp.sum(torch_max_pool(x, 3, 2, 1, "onednn")))).lower(
        x).as_text()
    assert onednn.TARGETS["max_pool_backward"] in program
    assert "stablehlo.reshape" not in program


@needs_onednn
def test_pmap_and_vmap():
    x = np.random.default_rng(1).standard_normal((2, 5, 9, 7, 3)).astype(np.float32)
    xs = np.stack([x * (i + 1) for i in range(jax.local_device_count())])

    def pool(lowering):
        return lambda x: torch_max_pool(x, 3, 2, 1, lowering)
    want = np.asarray(jax.vmap(pool("native"))(xs))
    np.testing.assert_array_equal(np.asarray(jax.pmap(pool("onednn"))(xs)), want)
    np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(pool("onednn")))(xs)), want)


def test_who_computes_a_max_pool():
    stem = (4, 16, 56, 56, 64)  # the paper's visual stem, 2 samples x 2 clips
    assert np.prod(stem) >= ONEDNN_AUTO_MIN_POOL_ELEMENTS
    assert resolve_max_pool("auto", stem, 3, 2, 1, backend="cpu", onednn_preferred=True) == "onednn"
    assert resolve_max_pool("auto", stem, 3, 2, 1, backend="cpu", onednn_preferred=False) == "xla"
    assert resolve_max_pool("auto", stem, 3, 2, 1, backend="gpu", onednn_preferred=True) == "xla"
    # bf16 where the CPU has bf16 instructions (else oneDNN would emulate them)
    assert resolve_max_pool("auto", stem, 3, 2, 1, backend="cpu", dtype=jnp.bfloat16,
                            onednn_preferred=True) == "onednn"
    assert resolve_max_pool("onednn", stem, 3, 2, 1, backend="cpu", dtype=jnp.bfloat16,
                            onednn_preferred=False) == "xla"
    assert resolve_max_pool("auto", stem, 3, 2, 1, backend="cpu", dtype=jnp.float16,
                            onednn_preferred=True) == "xla"
    small = (2, 8, 8, 8, 8)  # the tests' and the demo's models stay with XLA's form
    assert resolve_max_pool("auto", small, 3, 2, 1, backend="cpu", onednn_preferred=True) == "xla"
    assert resolve_max_pool("onednn", small, 3, 2, 1, backend="cpu") == "onednn"
    for lowering in ("native", "taps", "stacked"):
        assert resolve_max_pool(lowering, stem, 3, 2, 1, backend="cpu") == "xla"
    # floor mode drops the last input row here (7 = 3 windows of 2 + 1): not oneDNN's
    assert resolve_max_pool("onednn", (1, 7, 7, 4), 2, 2, 0, backend="cpu") == "xla"


@needs_onednn
def test_a_pool_that_drops_input_is_refused_in_one_line():
    with pytest.raises(ValueError, match="drops input at the end"):
        onednn_pool.max_pool(jnp.zeros((1, 7, 7, 4)), 2, 2, 0)
