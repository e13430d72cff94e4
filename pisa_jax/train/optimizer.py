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


def learning_rate_schedule(learning_rate: float, schedule: str, total_steps: int):
    """'constant' (the paper) or 'cosine' (decay to 0 over the run; steadier final accuracy on
    small data, used by the CPU demo)."""
    if schedule == "constant":
        return optax.constant_schedule(learning_rate)
    if schedule == "cosine":
        return optax.cosine_decay_schedule(learning_rate, max(int(total_steps), 1))
    raise ValueError(f"unknown lr_schedule {schedule!r}: expected 'constant' or 'cosine'")


def make_optimizer(name: str, learning_rate: float, weight_decay: float, *,
                   schedule: str = "constant", total_steps: int = 1) -> optax.GradientTransformation:
    """total_steps only shapes a decaying schedule (the optimiser state's structure does not
    depend on it, so a checkpoint restores whatever it is)."""
    lr = learning_rate_schedule(learning_rate, schedule, total_steps)
    if name == "adam":
        return optax.chain(
            optax.add_decayed_weights(weight_decay),          # g <- g + wd * p   (coupled L2)
            optax.scale_by_adam(b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS),
            optax.scale_by_learning_rate(lr))                 # * -lr(step)
    if name == "adamw":
        # torch.optim.AdamW: p <- p - lr * (adam(g) + wd * p)
        return optax.adamw(lr, b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: expected 'adam' or 'adamw'")
