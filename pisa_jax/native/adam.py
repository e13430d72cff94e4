"""One Adam step per parameter in one pass over memory, on the CPU, called from XLA through its
FFI: the paper's optimiser, torch.optim.Adam with coupled L2 weight decay, as the optax chain
`add_decayed_weights(wd), scale_by_adam(b1, b2, eps), scale_by_learning_rate(lr)` followed by
`optax.apply_updates` computes it, to float32 rounding (XLA contracts some of optax's
multiply-adds into FMAs, which this loop does not; tests/native/test_adam.py).

XLA CPU turns that chain into three loops per parameter (the new first moment, the new second
moment, the new parameter), each of which reads the parameter again: about 12 float passes over
memory where one loop needs 7 (`adam.cc`). In the R18+R18 step at the paper's shapes (44.5M
parameters, 2-core Xeon) optax's update took ~70 ms of its ~850 beyond a plain SGD step's; with
this one the step was 1.7-7 % faster (5 in-process A/Bs; for one 7M-parameter kernel alone,
15 against 23 ms).

The handler needs only a C++ compiler (no oneDNN): it is compiled on first use
(`pisa_jax.native.build`, cached). `PISA_JAX_FUSED_ADAM=off` turns it off, e.g. to compare.
"""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp

from pisa_jax.native.build import load_handlers

SOURCE = Path(__file__).with_name("adam.cc")
TARGET = "PisaAdamStep"


@functools.lru_cache(maxsize=None)
def _loaded() -> str | None:
    """Builds, loads and registers the handler once per process: None when it is ready, else
    the reason it cannot be used."""
    # Vectorised: sqrt without errno is one instruction; no contraction beyond adam.cc's own.
    return load_handlers(SOURCE, [TARGET], "PISA_JAX_FUSED_ADAM",
                         flags=["-O3", "-fno-math-errno", "-ffp-contract=off"])


def available() -> bool:
    return _loaded() is None


def unavailable_reason() -> str | None:
    return _loaded()


def applies(params) -> bool:
    """Whether `step` can update these parameters: float32 leaves on a CPU backend, with the
    handler built."""
    return (jax.default_backend() == "cpu"
            and all(jnp.dtype(p.dtype) == jnp.float32 for p in jax.tree_util.tree_leaves(params))
            and available())


def step(params, grads, mu, nu, coefficients, *, b1: float, b2: float, eps: float,
         weight_decay: float):
    """(params, mu, nu) after one Adam step, leaf by leaf (trees of one structure).

    coefficients: float32 [3] = (-learning rate, 1 - b1**t, 1 - b2**t) for this step t >= 1.
    Inside jit the results take the inputs' buffers where XLA can alias them (donated state).
    """
    def one(p, g, m, v):
        out = jax.ShapeDtypeStruct(p.shape, jnp.float32)
        return jax.ffi.ffi_call(TARGET, (out, out, out),
                                input_output_aliases={0: 0, 2: 1, 3: 2},
                                vmap_method="sequential")(
            p, g, m, v, coefficients, b1=float(b1), b2=float(b2), eps=float(eps),
            weight_decay=float(weight_decay))

    leaves, treedef = jax.tree_util.tree_flatten(params)
    results = [one(*args) for args in zip(leaves, treedef.flatten_up_to(grads),
                                          treedef.flatten_up_to(mu), treedef.flatten_up_to(nu))]
    return tuple(jax.tree_util.tree_unflatten(treedef, [r[i] for r in results]) for i in range(3))
