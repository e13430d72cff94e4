"""The pmap'd train and eval steps, and scoring a whole split with the eval step.

Under pmap(axis_name=BATCH_AXIS) every device holds a replica of the state and a slice of the
global batch. Gradients, BatchNorm statistics and metrics are averaged over the axis (the models
also synchronise BatchNorm batch statistics in the forward pass via bn_axis_name), so all
replicas stay identical and one step equals a single-device step on the whole global batch.
Both steps take the batch as the pipeline gives it (uint8 video) and normalise it on the device.
With the data on the device (`data_on_device=True`, see `pisa_jax.data.on_device`) they take the
whole split instead and gather their rows there: the same batches, nothing copied per step.
The steps are `data_parallel` functions (pmap's contract, compiled with the project's XLA
options), so every command that trains, evaluates or predicts gets the same compile.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from pisa_jax.data.on_device import DeviceSplit, gather_batch
from pisa_jax.data.pipeline import BATCH_AXIS as AXIS
from pisa_jax.data.pipeline import (NORMALIZATION, eval_batches, prefetch_to_device,
                                    prepare_inputs, train_batches)
from pisa_jax.train.config import TrainConfig
from pisa_jax.train.data_parallel import as_block, data_parallel, unblock
from pisa_jax.train.distributed import unreplicate_to_host
from pisa_jax.train.optimizer import apply_optimizer
from pisa_jax.train.state import DTYPES, TrainState

HEADS = ("visual", "aural", "multimodal")


def input_normalization(config: TrainConfig) -> str:
    """The NORMALIZATION entry of the visual backbone's pretrained weights: C3D's own, or the
    3D ResNet stem's (Hara's or torchvision's)."""
    return "c3d" if config.visual_backbone == "c3d" else config.visual_stem


def _prepare(batch: dict, config: TrainConfig) -> dict:
    """uint8 video -> normalised float [b, clips, T, H, W, 3]; spectrogram -> [0, 1]."""
    mean, std = NORMALIZATION[input_normalization(config)]
    return prepare_inputs(batch, mean, std, DTYPES[config.precision])


def _model_inputs(batch: dict, modalities) -> tuple[Any, Any]:
    video = batch["video"] if "visual" in modalities else None
    spectrogram = batch["spectrogram"] if "aural" in modalities else None
    return video, spectrogram


def head_losses(logits: dict[str, jax.Array], labels: jax.Array, mask: jax.Array) -> dict:
    """Masked mean cross-entropy of each head over this device's samples (float32)."""
    weights = mask.astype(jnp.float32)                                   # [b]
    count = jnp.maximum(weights.sum(), 1.0)
    return {head: (optax.softmax_cross_entropy_with_integer_labels(
        logits[head].astype(jnp.float32), labels) * weights).sum() / count
        for head in HEADS if head in logits}


def _mean_over_devices(tree):
    """pmean over the devices; the identity on one device, where the all-reduce would only copy
    every gradient (24 ms of a 1.3 s CPU step at R18+R18)."""
    return tree if lax.axis_size(AXIS) == 1 else lax.pmean(tree, AXIS)


def _reduced_metrics(logits, losses, labels, mask, loss_weights) -> dict[str, jax.Array]:
    """Loss and accuracy of each head, averaged over the whole global batch (all devices)."""
    weights = mask.astype(jnp.float32)
    count = lax.psum(weights.sum(), AXIS)
    local = weights.sum()
    metrics = {"loss": lax.psum(sum(loss_weights[h] * losses[h] for h in losses) * local, AXIS) / count}
    for head, value in losses.items():
        metrics[f"loss_{head}"] = lax.psum(value * local, AXIS) / count
        correct = (jnp.argmax(logits[head], -1) == labels).astype(jnp.float32) * weights
        metrics[f"accuracy_{head}"] = lax.psum(correct.sum(), AXIS) / count
    return metrics


def make_train_step(model, tx: optax.GradientTransformation, config: TrainConfig, *,
                    loss_weights: dict[str, float] | None = None, data_on_device: bool = False,
                    compiler_options: dict | None = None):
    """Data-parallel (state, batch) -> (state, metrics); the state is donated.

    batch (per device): video uint8 [b, clips, T, H, W, 3], spectrogram [b, H, W] or
    [b, clips, H, W], label int32 [b], mask bool [b]. loss_weights default to 1 for every head
    (the paper's sum of three cross-entropies); the tests use them to isolate one head.
    data_on_device: the step is (state, arrays, plan) -> (state, metrics) instead, with a
    DeviceSplit's arrays and its epoch's train_plan; it takes the rows of step
    `state.step % steps_per_epoch` for its device. compiler_options: instead of the project's
    (`data_parallel`; benchmarks compare them).
    """
    weights = {h: 1.0 for h in HEADS}
    weights.update(loss_weights or {})

    modalities = config.modalities

    def step(state_block: TrainState, batch: dict):
        # The state arrives as this device's block ([1, ...] leaves, see data_parallel): the
        # model sees its values, the optimizer updates the blocks themselves, in place.
        state = unblock(state_block)
        video, spectrogram = _model_inputs(_prepare(batch, config), modalities)
        labels, mask = batch["label"], batch["mask"]
        # A different dropout mask on every step and on every device.
        rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), lax.axis_index(AXIS))

        def loss_fn(params):
            out, updated = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, video, spectrogram,
                train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
            losses = head_losses(out["logits"], labels, mask)
            total = sum(weights[h] * losses[h] for h in losses)
            return total, (out["logits"], losses, updated.get("batch_stats", {}))

        grads, (logits, losses, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
        grads = _mean_over_devices(grads)
        # Synced BN already gives equal statistics on all devices; the pmean keeps them bitwise
        # identical whatever the model does.
        batch_stats = _mean_over_devices(batch_stats)
        # The optimizer reads and writes the donated blocks themselves, so XLA updates Adam's
        # moments in place; computed on the squeezed values and expanded afterwards, both
        # moments were copied on every step (on CPU, ~4 % of the R18+R18 step).
        params, opt_state = apply_optimizer(tx, as_block(grads), state_block.opt_state,
                                            state_block.params)
        new_state = state_block.replace(step=state_block.step + 1, params=params,
                                        batch_stats=as_block(batch_stats), opt_state=opt_state)
        return new_state, _reduced_metrics(logits, losses, labels, mask, weights)

    if not data_on_device:
        return data_parallel(step, donate_argnums=(0,), block_argnums=(0,), block_outputs=(0,),
                             compiler_options=compiler_options)

    def step_on_device_data(state_block: TrainState, arrays: dict, plan: dict):
        index = (state_block.step[0] % plan["rows"].shape[0], lax.axis_index(AXIS))
        return step(state_block, gather_batch(arrays, plan["rows"][index], plan["flip"][index]))

    return data_parallel(step_on_device_data, replicated_argnums=(1, 2), donate_argnums=(0,),
                         block_argnums=(0,), block_outputs=(0,),
                         compiler_options=compiler_options)


def make_eval_step(model, config: TrainConfig, *, data_on_device: bool = False,
                   compiler_options: dict | None = None):
    """Data-parallel (variables, batch) -> class probabilities of each head, labels and mask of
    the *global* batch ([global_devices, b, ...] on every device, gathered so that every host
    can score the whole test split). data_on_device: (variables, arrays, rows, mask) instead,
    with a DeviceSplit's arrays and one of its eval_inputs. compiler_options: as in
    `make_train_step`."""

    def step(variables: dict, batch: dict):
        video, spectrogram = _model_inputs(_prepare(batch, config), config.modalities)
        out = model.apply(variables, video, spectrogram, train=False)
        probs = {h: jax.nn.softmax(out["logits"][h].astype(jnp.float32), -1)
                 for h in HEADS if h in out["logits"]}
        return lax.all_gather({"probs": probs, "label": batch["label"],
                               "video_id": batch["video_id"], "mask": batch["mask"]}, AXIS)

    if not data_on_device:
        return data_parallel(step, compiler_options=compiler_options)

    def step_on_device_data(variables: dict, arrays: dict, rows, mask):
        return step(variables, gather_batch(arrays, rows, mask=mask))

    return data_parallel(step_on_device_data, replicated_argnums=(1,),
                         compiler_options=compiler_options)


class SplitPredictions(NamedTuple):
    """Every sample of a split, in order."""
    probs: dict[str, np.ndarray]   # {head: float [n, classes]}
    labels: np.ndarray             # int64 [n]
    video_ids: np.ndarray          # int64 [n]: the recording each sample is cut from (-1: none)


def train_step_inputs(source, config: TrainConfig, *, epoch: int, start_step: int = 0):
    """What the train step takes after the state, for each step of an epoch from `start_step`:
    (batch,) prefetched from the host, or (arrays, plan) when `source` is a DeviceSplit (the
    step then picks its rows by its step number)."""
    if isinstance(source, DeviceSplit):
        plan = source.train_plan(global_batch_size=config.batch_size, seed=config.seed,
                                 epoch=epoch, flip=config.flip)
        for _ in range(start_step, plan["rows"].shape[0]):
            yield source.arrays, plan
        return
    batches = train_batches(source, global_batch_size=config.batch_size,
                            num_local_devices=jax.local_device_count(), seed=config.seed,
                            epoch=epoch, start_step=start_step, flip=config.flip)
    for batch in prefetch_to_device(batches, size=2):
        yield (batch,)


def _eval_step_inputs(source, global_batch_size: int):
    if isinstance(source, DeviceSplit):
        for rows, mask in source.eval_inputs(global_batch_size):
            yield source.arrays, rows, mask
        return
    batches = eval_batches(source, global_batch_size=global_batch_size,
                           num_local_devices=jax.local_device_count())
    for batch in prefetch_to_device(batches, size=2):
        yield (batch,)


def predict_split(eval_step, variables, source, *, global_batch_size: int) -> SplitPredictions:
    """Class probabilities of each head for every sample of `source`, in order.

    eval_step: from make_eval_step (with data_on_device=True if `source` is a DeviceSplit);
    variables: replicated {"params", "batch_stats"}."""
    probs, labels, video_ids = {}, [], []
    for inputs in _eval_step_inputs(source, global_batch_size):
        # every device holds the all-gathered global batch: read the first: [global_devices, b, ...]
        out = unreplicate_to_host(eval_step(variables, *inputs))
        keep = out["mask"].reshape(-1)
        labels.append(out["label"].reshape(-1)[keep])
        video_ids.append(out["video_id"].reshape(-1)[keep])
        for head, p in out["probs"].items():
            probs.setdefault(head, []).append(p.reshape(-1, p.shape[-1])[keep])
    if not labels:
        raise ValueError("the test split is empty")
    return SplitPredictions({h: np.concatenate(v) for h, v in probs.items()},
                            np.concatenate(labels).astype(np.int64),
                            np.concatenate(video_ids).astype(np.int64))
