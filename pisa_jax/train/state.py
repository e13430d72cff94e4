"""From a config and the data's shapes to the model, the optimiser and a fresh train state.

The state is one pytree (step, params, batch_stats, opt_state, rng) so that a checkpoint is one
tree and a resumed run continues from exactly the same point. The rng is a raw uint32 key
([2]), which orbax saves like any array. The data's shapes are saved as `inputs.json` in the
workdir, so evaluation and prediction rebuild the same model without the dataset at hand.

The optimiser is PyTorch's Adam(weight_decay=...) by default: torch adds `weight_decay * param`
to the gradient *before* the moment estimates (coupled L2), so Adam rescales the decay like any
gradient; optax.adamw decouples it, a different optimiser kept only as an option. The decay
applies to every parameter (biases and BatchNorm scales too), as torch does when given all.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pisa_jax.files import atomic_write
from pisa_jax.train.config import TrainConfig, TrainConfigError
from pisa_jax.train.optimizer import coupled_adam

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}   # keys: config.PRECISIONS
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8                  # torch.optim.Adam's defaults
INPUTS_FILE = "inputs.json"


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array          # int32 [] : optimizer steps taken
    params: Any              # float32 always
    batch_stats: Any         # BatchNorm running statistics (float32)
    opt_state: Any
    rng: jax.Array           # uint32 [2]: dropout keys derive from it by fold_in(step, device)

    @property
    def variables(self) -> dict[str, Any]:
        """{"params", "batch_stats"}: what `model.apply` and the eval step take."""
        return {"params": self.params, "batch_stats": self.batch_stats}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What the model needs to know of a sample (and predict of how samples are cut)."""
    clips: int
    clip_length: int
    image_size: int
    spectrogram_shape: tuple[int, ...]   # [H, W] (one per sample) or [clips, H, W]
    num_classes: int
    # Frames of the recording one sample spans when the clips keep only some of them (the
    # builder's *_demo configs: 160); None: clips * clip_length consecutive frames.
    annotated_frames: int | None = None
    # The frame rates (fps) of the training videos: a sample spans a number of frames, so it
    # covers the same seconds only at these rates. None: a dataset or run from before they
    # were recorded.
    framerates: tuple[float, ...] | None = None

    @classmethod
    def of_dataset(cls, dataset) -> "InputSpec":
        return cls(clips=int(dataset.clips_per_sample), clip_length=int(dataset.clip_length),
                   image_size=int(dataset.image_size),
                   spectrogram_shape=tuple(int(s) for s in dataset.spectrogram_shape),
                   num_classes=int(dataset.num_classes),
                   annotated_frames=dataset.annotated_frames,
                   framerates=getattr(dataset, "framerates", None))

    def save(self, workdir: str | Path) -> None:
        values = dataclasses.asdict(self)
        values["spectrogram_shape"] = list(self.spectrogram_shape)
        values["framerates"] = None if self.framerates is None else list(self.framerates)
        atomic_write(Path(workdir) / INPUTS_FILE, json.dumps(values, indent=2) + "\n")

    @classmethod
    def load(cls, workdir: str | Path) -> "InputSpec":
        path = Path(workdir) / INPUTS_FILE
        try:
            values = json.loads(path.read_text())
            values["spectrogram_shape"] = tuple(values["spectrogram_shape"])
            if values.get("framerates") is not None:
                values["framerates"] = tuple(float(r) for r in values["framerates"])
            return cls(**values)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TrainConfigError(f"{path}: cannot read the input description of this run ({e})") from e


def skill_model(config: TrainConfig, num_classes: int, *, bn_axis_name: str | None = None):
    """The SkillModel the config describes; bn_axis_name = the pmap axis inside the train step."""
    from pisa_jax.models import SkillModel
    visual_depth, aural_depth = config.depths
    return SkillModel(visual_backbone=config.visual_backbone, visual_depth=visual_depth,
                      aural_depth=aural_depth, num_classes=num_classes,
                      modalities=tuple(config.modalities), dropout=config.dropout,
                      hidden=config.hidden, visual_stem=config.visual_stem,
                      conv1_t_stride=config.conv1_t_stride, base_width=config.base_width,
                      conv_lowering=config.conv_lowering, dtype=DTYPES[config.precision],
                      bn_axis_name=bn_axis_name)


def dummy_inputs(modalities, spec: InputSpec, batch: int = 1, *, abstract: bool = False):
    """Zero inputs with the dataset's shapes, for model.init (abstract: their shapes only)."""
    make = jax.ShapeDtypeStruct if abstract else jnp.zeros
    video = (make((batch, spec.clips, spec.clip_length, spec.image_size, spec.image_size, 3),
                  jnp.float32) if "visual" in modalities else None)
    spectrogram = (make((batch, *spec.spectrogram_shape), jnp.float32)
                   if "aural" in modalities else None)
    return video, spectrogram


def _init_function(model):
    """(key, video, spectrogram) -> the model's fresh {"params", "batch_stats"}: one function
    for the values and for their shapes alone (abstract_state), so both describe one tree."""
    def init(key, video, spectrogram):
        variables = flax.core.unfreeze(
            model.init({"params": key, "dropout": key}, video, spectrogram, train=False))
        variables.setdefault("batch_stats", {})
        return variables
    return init


def init_model_variables(model, seed: int, video, spectrogram) -> dict[str, Any]:
    """Randomly initialised {"params", "batch_stats"}.

    One jit-compiled program, compiled without LLVM optimisation: it runs once, and on CPU the
    optimised compile of a ResNet's random initialisers takes ~10x longer (40 s vs 4 s on 2
    cores) than the unoptimised one. The values are integer PRNG bits and a few float ops.
    """
    key = jax.random.PRNGKey(seed)
    init = jax.jit(_init_function(model))
    try:
        compiled = init.lower(key, video, spectrogram).compile(
            compiler_options={"xla_backend_optimization_level": 0})
    except Exception:  # an XLA that does not know the option: the ordinary compile
        compiled = init
    return compiled(key, video, spectrogram)


def learning_rate_schedule(config: TrainConfig, total_steps: int = 1) -> optax.Schedule:
    """step -> learning rate. total_steps only shapes a decaying schedule."""
    if config.lr_schedule == "cosine":  # decays to 0 over the run: steadier on small data
        return optax.cosine_decay_schedule(config.learning_rate, max(int(total_steps), 1))
    return optax.constant_schedule(config.learning_rate)


def make_optimizer(config: TrainConfig, total_steps: int = 1) -> optax.GradientTransformation:
    """The optimiser state's structure does not depend on total_steps, so a checkpoint
    restores whatever it is. Apply it with `optimizer.apply_optimizer` (one pass per parameter
    for the paper's Adam on a CPU)."""
    lr = learning_rate_schedule(config, total_steps)
    if config.optimizer == "adamw":  # torch.optim.AdamW: p <- p - lr * (adam(g) + wd * p)
        return optax.adamw(lr, b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS,
                           weight_decay=config.weight_decay)
    # g <- g + wd * p (coupled L2), Adam, * -lr(step)
    return coupled_adam(lr, b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS,
                        weight_decay=config.weight_decay)


def create_train_state(variables: dict[str, Any], tx: optax.GradientTransformation,
                       seed: int) -> TrainState:
    params = variables["params"]
    # The dropout stream is independent of the init stream (init used PRNGKey(seed) itself).
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    # tx.init as one program: run eagerly, each zeros_like of another shape compiles on its own
    # (32 compiles, ~1 s of every run's start at the smoke shapes, against ~0.35 s).
    opt_state = jax.jit(tx.init)(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=opt_state, rng=rng)


def abstract_state(model, tx: optax.GradientTransformation, seed: int, video,
                   spectrogram) -> TrainState:
    """The fresh state's tree with jax.ShapeDtypeStruct leaves: traced, never compiled or run.
    What a checkpoint is checked against and restored into, so that evaluating, predicting or
    resuming does not compile and run a random initialisation only to overwrite it (~4 s of
    compiling at the smoke shapes on 2 CPU cores; ~1.3 s with a warm compilation cache)."""
    init = _init_function(model)
    return jax.eval_shape(lambda *args: create_train_state(init(*args), tx, seed),
                          jax.random.PRNGKey(seed), video, spectrogram)


@dataclasses.dataclass(frozen=True)
class Run:
    """Everything a run computes with, made from its config and its data's shapes."""
    config: TrainConfig
    spec: InputSpec
    model: Any            # BatchNorm synced over the pmap axis: for training
    eval_model: Any       # the same parameters, no collective: for eval and prediction
    tx: optax.GradientTransformation
    learning_rate: optax.Schedule   # step -> the rate tx applies (for the logs)

    @property
    def primary(self) -> str:
        """The head whose prediction counts: multimodal when both branches exist (the paper)."""
        modalities = self.config.modalities
        return "multimodal" if len(modalities) > 1 else modalities[0]

    @functools.cached_property
    def template(self) -> TrainState:
        """The state's structure, shapes and dtypes (abstract_state): what a checkpoint is
        restored into. Traced on first use only: a run that starts afresh never needs it."""
        return abstract_state(self.eval_model, self.tx, self.config.seed,
                              *dummy_inputs(self.config.modalities, self.spec, abstract=True))

    def initial_state(self) -> TrainState:
        """A randomly initialised state (config.seed): what a run without a checkpoint starts
        from, before any converted backbones replace their part of it."""
        variables = init_model_variables(self.eval_model, self.config.seed,
                                         *dummy_inputs(self.config.modalities, self.spec))
        return create_train_state(variables, self.tx, self.config.seed)


def check_clip_shape(config: TrainConfig, spec: InputSpec) -> None:
    """C3D's five pools need clips of >= 16 frames of >= 16x16 (its fc6 then fits any size)."""
    from pisa_jax.models.c3d import pool5_shape
    clip = (spec.clip_length, spec.image_size, spec.image_size)
    if ("visual" in config.modalities and config.visual_backbone == "c3d"
            and min(pool5_shape(clip)) < 1):
        raise TrainConfigError(
            f"visual_backbone=c3d needs clips of at least 16 frames of 16x16 pixels; this "
            f"dataset's clips are {clip[0]} frames of {clip[1]}x{clip[2]} (dataset "
            f"{config.dataset}, config {config.dataset_config or 'default'})")


def create_run(config: TrainConfig, spec: InputSpec, *, total_steps: int = 1) -> Run:
    """Model and optimiser; `Run.initial_state()` draws the random weights (for a run that
    starts afresh), `Run.template` restores a checkpoint without them. total_steps: of the
    whole run, for a decaying learning-rate schedule. Pretrained backbones are applied by the
    caller (`pisa_jax.train.pretrained`), only when no checkpoint of the run is restored."""
    from pisa_jax.data.pipeline import BATCH_AXIS
    check_clip_shape(config, spec)
    model = skill_model(config, spec.num_classes, bn_axis_name=BATCH_AXIS)
    eval_model = skill_model(config, spec.num_classes)
    tx = make_optimizer(config, total_steps)
    return Run(config, spec, model, eval_model, tx, learning_rate_schedule(config, total_steps))


def to_host(tree):
    """A device pytree as numpy (for checkpoints and reports)."""
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
