"""The one-pass Adam step (pisa_jax.native.adam) computes what the optax chain computes, to
float32 rounding, updates the donated state in place, and steps aside where it cannot run
(without a build or when turned off: tests/native/test_build.py)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pisa_jax import xla_options
from pisa_jax.native import adam as native_adam
from pisa_jax.train import optimizer
from pisa_jax.train.optimizer import apply_optimizer, coupled_adam

needs_adam = pytest.mark.skipif(not native_adam.available(),
                                reason=f"native Adam: {native_adam.unavailable_reason()}")


def _params(rng):
    # one leaf above two chunks (split over XLA's thread pool), small ones, a [1, ...] block
    return {"big": rng.standard_normal((600_001,)).astype(np.float32),
            "kernel": rng.standard_normal((1, 3, 3, 4, 5)).astype(np.float32),
            "bias": rng.standard_normal((7,)).astype(np.float32)}


def _optax_apply(tx):
    """tx's chain applied as any optax transformation is: update, then apply_updates."""
    return functools.partial(apply_optimizer, optax.GradientTransformation(tx.init, tx.update))


def _runs(weight_decay, steps=3):
    tx = coupled_adam(optax.cosine_decay_schedule(1e-2, 10), b1=0.9, b2=0.999, eps=1e-8,
                      weight_decay=weight_decay)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(jnp.asarray, _params(rng))

    runs = {}
    for name, apply in (("optax", _optax_apply(tx)), ("fused", tx.apply)):
        step = jax.jit(apply, compiler_options=xla_options.cpu_compiler_options())
        p, state = params, tx.init(params)
        grads_rng = np.random.default_rng(1)
        for _ in range(steps):
            # gradients from 1e-9 to 1 in size: Adam's sign-like first steps and its eps regime
            grads = jax.tree_util.tree_map(lambda x: jnp.asarray(
                grads_rng.standard_normal(x.shape).astype(np.float32)
                * 10.0 ** grads_rng.uniform(-9, 0, x.shape).astype(np.float32)), p)
            p, state = step(grads, state, p)
        runs[name] = (p, state)
    return runs


@needs_adam
@pytest.mark.parametrize("weight_decay", [0.1, 0.0])
def test_the_same_steps_as_optax_to_float32_rounding(weight_decay):
    runs = _runs(weight_decay)
    (p_ref, s_ref), (p, s) = runs["optax"], runs["fused"]
    assert jax.tree_util.tree_structure(s) == jax.tree_util.tree_structure(s_ref)
    assert int(s[1].count) == int(s_ref[1].count) == int(s[2].count) == 3
    # To float32 rounding of the terms: where g + wd * p nearly cancels, a moment keeps only
    # that rounding (XLA fuses the sum into a multiply-add), and a parameter moves by ~lr = 1e-2
    # times a rounded update. A wrong step would differ by the whole leaf's scale, or by ~lr.
    def moments(a, b):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * float(np.abs(b).max()))

    jax.tree_util.tree_map(moments, (s[1].mu, s[1].nu), (s_ref[1].mu, s_ref[1].nu))
    parameters = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)  # noqa: E731
    jax.tree_util.tree_map(parameters, p, p_ref)


@needs_adam
def test_updates_the_donated_state_in_place():
    tx = coupled_adam(optax.constant_schedule(1e-3), b1=0.9, b2=0.999, eps=1e-8,
                      weight_decay=0.1)
    params = {"w": jnp.ones((1, 3, 3, 64, 64), jnp.float32)}
    # (params, opt_state) in and out in the same order, as the train step donates its state
    step = jax.jit(lambda params, opt_state, grads: tx.apply(grads, opt_state, params),
                   donate_argnums=(0, 1), compiler_options=xla_options.cpu_compiler_options())
    text = step.lower(params, tx.init(params), params).compile().as_text()
    assert native_adam.TARGET in text
    assert " copy(" not in text  # p, mu and nu are written where they were read


def test_steps_aside_where_it_cannot_run(monkeypatch):
    """bf16 parameters, or no native handler (no C++ compiler, PISA_JAX_FUSED_ADAM=off): the
    optax chain itself, to the bit."""
    tx = coupled_adam(optax.constant_schedule(1e-3), b1=0.9, b2=0.999, eps=1e-8,
                      weight_decay=0.1)
    rng = np.random.default_rng(0)
    bf16 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.bfloat16), _params(rng))
    assert not native_adam.applies(bf16)
    monkeypatch.setattr(optimizer.native_adam, "applies", lambda params: False)
    params = jax.tree_util.tree_map(jnp.asarray, _params(rng))
    grads = jax.tree_util.tree_map(lambda x: x * 0.5, params)
    state = tx.init(params)
    ours = jax.jit(tx.apply)(grads, state, params)
    theirs = jax.jit(_optax_apply(tx))(grads, state, params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, ours, theirs)
    # any other optax transformation goes through update + apply_updates
    sgd = optax.sgd(0.1)
    new, _ = apply_optimizer(sgd, grads, sgd.init(params), params)
    np.testing.assert_array_equal(new["bias"], params["bias"] - 0.1 * grads["bias"])
