"""Train state, the model a config describes, and its initialisation.

The state is one pytree (step, params, batch_stats, opt_state, rng) so that a checkpoint is one
tree and a resumed run continues from exactly the same point. The rng is a raw uint32 key
([2]), which orbax saves like any array.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pisa_jax.train.config import TrainConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array          # int32 [] : optimizer steps taken
    params: Any              # float32 always
    batch_stats: Any         # BatchNorm running statistics (float32)
    opt_state: Any
    rng: jax.Array           # uint32 [2]: dropout keys derive from it by fold_in(step, device)


def build_model(config: TrainConfig, num_classes: int, *, bn_axis_name: str | None = None):
    """The SkillModel the config describes; bn_axis_name="batch" inside the pmap step."""
    from pisa_jax.models import SkillModel  # models are imported lazily: the CLI stays light
    visual_depth, aural_depth = config.depths
    return SkillModel(visual_depth=visual_depth, aural_depth=aural_depth, num_classes=num_classes,
                      modalities=tuple(config.modalities), dropout=config.dropout,
                      hidden=config.hidden, visual_stem=config.visual_stem,
                      conv1_t_stride=config.conv1_t_stride, base_width=config.base_width,
                      dtype=DTYPES[config.precision], bn_axis_name=bn_axis_name)


def dummy_inputs(modalities, *, clips: int, clip_length: int, image_size: int,
                 spectrogram_shape: tuple[int, ...]):
    """Zero inputs of batch 1 with the dataset's shapes, for model.init."""
    video = (jnp.zeros((1, clips, clip_length, image_size, image_size, 3), jnp.float32)
             if "visual" in modalities else None)
    spectrogram = (jnp.zeros((1, *spectrogram_shape), jnp.float32)
                   if "aural" in modalities else None)
    return video, spectrogram


def init_variables(model, seed: int, video, spectrogram) -> dict[str, Any]:
    """Randomly initialised {"params", "batch_stats"}.

    One jit-compiled program, compiled without LLVM optimisation: it runs once, and on CPU the
    optimised compile of a ResNet's random initialisers takes ~10x longer (40 s vs 4 s on 2
    cores) than the unoptimised one. The values are integer PRNG bits and a few float ops.
    """
    key = jax.random.PRNGKey(seed)
    init = jax.jit(lambda k: model.init({"params": k, "dropout": k}, video, spectrogram, train=False))
    try:
        compiled = init.lower(key).compile(compiler_options={"xla_backend_optimization_level": 0})
    except Exception:  # an XLA that does not know the option: the ordinary compile
        compiled = init
    variables = flax.core.unfreeze(compiled(key))
    variables.setdefault("batch_stats", {})
    return variables


def create_train_state(variables: dict[str, Any], tx: optax.GradientTransformation,
                       seed: int) -> TrainState:
    params = variables["params"]
    # The dropout stream is independent of the init stream (init used PRNGKey(seed) itself).
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(params), rng=rng)


def to_host(tree):
    """A device pytree as numpy (for checkpoints and reports)."""
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
