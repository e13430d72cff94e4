"""The optimiser: PyTorch's Adam(weight_decay=...) semantics by default.

torch.optim.Adam adds `weight_decay * param` to the gradient *before* the moment estimates
(coupled L2), so the decay is rescaled by Adam like any gradient. optax.adamw decouples it (adds
it after the Adam scaling): a different optimiser, kept only as an option. The decay applies to
every parameter (biases and BatchNorm scales included), as torch does when given all parameters.
"""
from __future__ import annotations

import optax

# torch.optim.Adam defaults
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8


def make_optimizer(name: str, learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    if name == "adam":
        return optax.chain(
            optax.add_decayed_weights(weight_decay),          # g <- g + wd * p   (coupled L2)
            optax.scale_by_adam(b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS),
            optax.scale(-learning_rate))
    if name == "adamw":
        # torch.optim.AdamW: p <- p - lr * (adam(g) + wd * p)
        return optax.adamw(learning_rate, b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS,
                           weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: expected 'adam' or 'adamw'")
