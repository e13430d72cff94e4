"""The native frame stack (pisa_jax.native.frame_stack) against XLA's form, to the bit, in
float32 and bf16, with its gradient; what it refuses; and that the stacked stems use it (without
a build or when turned off: tests/native/test_build.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pisa_jax.models.lowering import convolve
from pisa_jax.native import frame_stack, onednn

needs_stack = pytest.mark.skipif(frame_stack.unavailable_reason() is not None,
                                 reason=f"frame stack: {frame_stack.unavailable_reason()}")

# name -> (x [N, T, H, W, C], taps, stride, pad): the 3D stems' (RGB: the fixed-size pieces) and
# a width that takes the general path; a stride; no padding; a single tap; taps past both ends
CASES = {
    "Hara's stem": ((2, 5, 6, 7, 3), 7, 1, 3),
    "strided, 5 channels": ((1, 9, 4, 3, 5), 3, 2, 1),
    "no padding": ((2, 6, 3, 3, 3), 3, 1, 0),
    "one tap": ((1, 4, 2, 5, 2), 1, 1, 0),
    "kernel longer than the clip": ((1, 2, 3, 3, 3), 7, 1, 3),
}


def _frames(shape, dtype, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


@needs_stack
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", CASES)
def test_the_same_bits_as_xla(name, dtype):
    shape, taps, stride, pad = CASES[name]
    x = _frames(shape, dtype)
    got = jax.jit(frame_stack.stack, static_argnums=(1, 2, 3))(x, taps, stride, pad)
    want = frame_stack.stack_with_xla(x, taps, stride, pad)
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_array_equal(np.asarray(got.astype(jnp.float32)),
                                  np.asarray(want.astype(jnp.float32)))


@needs_stack
def test_its_gradient_is_xlas():
    shape, taps, stride, pad = CASES["strided, 5 channels"]
    x = _frames(shape, jnp.float32)
    cotangent = _frames((1, 5, 4, 3, 15), jnp.float32, seed=1)

    def gradient(stack):
        return jax.jit(lambda x, g: jax.vjp(lambda x: stack(x, taps, stride, pad), x)[1](g)[0])
    got = gradient(frame_stack.stack)(x, cotangent)
    assert float(jnp.abs(got).max()) > 0.5
    np.testing.assert_array_equal(np.asarray(got),
                                  np.asarray(gradient(frame_stack.stack_with_xla)(x, cotangent)))


@needs_stack
def test_refuses_shapes_that_do_not_fit():
    x = _frames((1, 4, 2, 2, 3), jnp.float32)
    call = jax.ffi.ffi_call(frame_stack.TARGET, jax.ShapeDtypeStruct((1, 5, 2, 2, 9), x.dtype))
    with pytest.raises(Exception, match=r"frame stack: x \[N, T, H, W, C\] and y"):
        jax.jit(lambda x: call(x, stride=np.int64(1), pad=np.int64(1)))(x).block_until_ready()


@pytest.mark.skipif(not (onednn.supports(jnp.bfloat16) and frame_stack.applies(jnp.bfloat16)),
                    reason="needs oneDNN's bf16 and the native frame stack")
def test_the_stacked_bf16_stem_stacks_natively():
    x = _frames((1, 4, 8, 8, 3), jnp.bfloat16)
    kernel = _frames((7, 7, 7, 3, 4), jnp.float32)
    program = jax.jit(lambda x, k: convolve(x, k, (1, 2, 2), (3, 3, 3), "onednn")).lower(
        x, kernel).as_text()
    assert frame_stack.TARGET in program and "concatenate" not in program
