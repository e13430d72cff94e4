"""The paper's optimiser, torch.optim.Adam with coupled L2 weight decay, as an optax
transformation that can also apply itself in one pass per parameter.

`coupled_adam(...)` has optax's `init` and `update` (the chain `add_decayed_weights`,
`scale_by_adam`, `scale_by_learning_rate`: the state, and so every checkpoint, is that chain's)
and `apply(grads, opt_state, params) -> (params, opt_state)`, which on a CPU runs
`pisa_jax.native.adam`'s one-loop step (the same bits as `update` + `optax.apply_updates`, in
about 7 float passes over memory instead of 12) and elsewhere, or without a C++ compiler, the
optax chain itself. `apply_optimizer` applies any optax transformation the same way.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
import optax

from pisa_jax.native import adam as native_adam


class CoupledAdam(NamedTuple):
    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]
    apply: Callable[[Any, Any, Any], tuple[Any, Any]]


def coupled_adam(learning_rate: optax.Schedule, *, b1: float, b2: float, eps: float,
                 weight_decay: float) -> CoupledAdam:
    """g <- g + weight_decay * p, then Adam(b1, b2, eps), then -learning_rate(step)."""
    chain = optax.chain(optax.add_decayed_weights(weight_decay),
                        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                        optax.scale_by_learning_rate(learning_rate))

    def apply(grads, opt_state, params):
        if not native_adam.applies(params):
            return apply_optimizer(chain, grads, opt_state, params)
        decay_state, adam_state, schedule_state = opt_state
        step = optax.safe_increment(adam_state.count)             # t, from 1
        # The scalars as optax computes them (scale_by_schedule, bias_correction); the counts
        # are [] or, in the train step's per-device blocks, [1].
        coefficients = jnp.concatenate([
            jnp.ravel(jnp.asarray(value, jnp.float32)) for value in
            (-1 * learning_rate(schedule_state.count), 1 - b1 ** step, 1 - b2 ** step)])
        params, mu, nu = native_adam.step(params, grads, adam_state.mu, adam_state.nu,
                                          coefficients, b1=b1, b2=b2, eps=eps,
                                          weight_decay=weight_decay)
        return params, (decay_state, adam_state._replace(count=step, mu=mu, nu=nu),
                        schedule_state._replace(
                            count=optax.safe_increment(schedule_state.count)))

    return CoupledAdam(chain.init, chain.update, apply)


def apply_optimizer(tx, grads, opt_state, params) -> tuple[Any, Any]:
    """(new params, new optimiser state) for any optax transformation; `CoupledAdam` applies
    itself in one pass where it can."""
    if isinstance(tx, CoupledAdam):
        return tx.apply(grads, opt_state, params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
