"""The one typed config of a training run, its presets, and its JSON form.

Everything a run's result depends on is a field here; `train.py` exposes each field as a flag of
the same name (`pisa_jax.train.flags`). The config is saved as `config.json` in the workdir so
that a restarted command can be checked against the run it would resume. The allowed values of
the model fields are the models' own (`pisa_jax.models`); those of the training fields are the
tuples below, which the code that implements them uses too.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from pisa_jax.files import atomic_write
from pisa_jax.errors import UserError

CONFIG_FILE = "config.json"                  # the run's config, in its workdir
DATASETS = ("synthetic", "pisa")
SYNTHETIC_SIZES = ("demo", "full", "tiny")   # data_builders.pisa.synthetic.SIZES (a test checks)
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("float32", "bfloat16")
DATA_ON_DEVICE = ("auto", "on", "off")


class TrainConfigError(UserError):
    """A config value that cannot work (raised before anything is compiled or loaded)."""


class ConfigMismatchError(TrainConfigError):
    """The workdir holds a run whose config differs from the one asked for."""


def _field(default: Any, help: str, *, paper: bool = True):  # noqa: A002 - mirrors argparse
    """paper: the default is the paper's choice (the flag's help says so), else ours."""
    return dataclasses.field(default=default, metadata={"help": help, "paper": paper})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # --- data
    dataset: str = _field("synthetic", "dataset: 'synthetic' (embedded, built on first use) or "
                          "'pisa' (built from your downloaded videos)", paper=False)
    dataset_config: str | None = _field(None, "dataset config: for synthetic its size (demo, full = "
                                        "the paper's shapes, tiny); for pisa the builder config "
                                        "(consecutive, unidist, parmar_consecutive ...; "
                                        "consecutive_demo ... for CPUs); None = full for "
                                        "synthetic, consecutive for pisa", paper=False)
    data_dir: str | None = _field(None, "TFDS data directory (None = $TFDS_DATA_DIR or "
                                  "~/tensorflow_datasets)", paper=False)
    train_subset: int = _field(0, "use only the first N training samples (0 = all); for quick "
                               "checks", paper=False)
    test_subset: int = _field(0, "use only the first N test samples (0 = all); for quick checks",
                              paper=False)
    flip: bool = _field(True, "random horizontal flip per training sample")
    # --- model
    visual_backbone: str = _field("resnet3d", "visual backbone: 'resnet3d' (the paper's) or 'c3d' "
                                  "(Parmar's baseline of Table 6; needs clips of >= 16 frames "
                                  "of >= 16x16, its own input normalisation)")
    depths: tuple[int, int] = _field((18, 18), "visual 3D ResNet depth, aural 2D ResNet depth "
                                     "(each 18, 34 or 50), e.g. 18,18; the visual depth is "
                                     "unused with visual_backbone c3d")
    modalities: tuple[str, ...] = _field(("visual", "aural"), "branches to build: visual,aural "
                                         "(multimodal head when both), or just one")
    visual_stem: str = _field("hara", "3D ResNet stem: 'hara' (Hara et al. KM weights) or "
                              "'torchvision' (r3d_18 weights); also picks the input normalisation "
                              "(unused with visual_backbone c3d)")
    conv1_t_stride: int = _field(1, "temporal stride of the 3D ResNet's conv1 (Hara's weights: 1; "
                                 "the paper's Table 2 prints 2; unused with visual_backbone c3d)",
                                 paper=False)
    base_width: int = _field(64, "channels of the first ResNet stage (64 = the real nets; smaller "
                             "only for CPU demos and tests)")
    hidden: int = _field(128, "width of the hidden linear layer of each head")
    dropout: float = _field(0.5, "dropout rate on the heads' linear layers")
    visual_init: str | None = _field(None, "directory of converted visual backbone weights "
                                     "(python -m pisa_jax.convert ...; the paper starts from "
                                     "Hara's Kinetics+MiT weights); None = random init",
                                     paper=False)
    aural_init: str | None = _field(None, "directory of converted aural backbone weights (the "
                                    "paper starts from ImageNet's); None = random", paper=False)
    precision: str = _field("float32", "compute dtype: float32 or bfloat16 (params stay float32)",
                            paper=False)
    conv_lowering: str = _field("auto", "how 3D convolutions run: native, taps or stacked (2D "
                                "convolutions over the temporal taps; same parameters), onednn "
                                "(every float32 CPU convolution, 2D ones too, in oneDNN; needs "
                                "the onednn extra), or auto = the measured fastest for the "
                                "backend", paper=False)
    # --- optimisation
    optimizer: str = _field("adam", "'adam' = torch Adam with coupled L2 weight decay (the paper); "
                            "'adamw' = decoupled weight decay")
    learning_rate: float = _field(1e-4, "learning rate (peak value of a decaying schedule)")
    lr_schedule: str = _field("constant", "'constant' (the paper names only the initial rate) "
                              "or 'cosine' (decays to 0 over the run)", paper=False)
    weight_decay: float = _field(0.1, "weight decay (L2 coefficient for adam, decoupled for adamw)")
    batch_size: int = _field(4, "global batch size in samples, over all devices and hosts "
                             "(must divide evenly by the device count)")
    epochs: int = _field(100, "training epochs")
    seed: int = _field(0, "seed of initialisation, dropout and the data order", paper=False)
    # --- bookkeeping (does not change the maths)
    eval_every_epochs: int = _field(1, "evaluate on the test split every N epochs (and at the end)",
                                    paper=False)
    eval_batch_size: int = _field(0, "samples per evaluation step, over all devices and hosts "
                                  "(0 = batch_size); evaluation keeps no activations for a "
                                  "backward pass, so a larger batch fits and runs faster",
                                  paper=False)
    checkpoint_every_steps: int = _field(0, "also save the latest checkpoint every N steps, for "
                                         "mid-epoch resume (0 = only at epoch ends)", paper=False)
    data_on_device: str = _field("auto", "keep both decoded splits in device memory and gather "
                                 "each batch there (same batches as from the host): on, off, "
                                 "or auto = on for a GPU/TPU when they fit in half of its "
                                 "memory", paper=False)

    # Fields that may change between a run and its resumption without a refusal: they do not
    # change the function computed, only where data lives, the order of a convolution's sums
    # (conv_lowering) or how often we look at it.
    RESUMABLE_CHANGES = ("data_dir", "eval_every_epochs", "eval_batch_size",
                         "checkpoint_every_steps", "data_on_device", "conv_lowering")

    def __post_init__(self):
        validate(self)

    @property
    def evaluation_batch_size(self) -> int:
        """What the evaluation of the test split takes per step: eval_batch_size, or batch_size."""
        return self.eval_batch_size or self.batch_size

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise TrainConfigError(f"unknown config fields {unknown}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def _one_of(name: str, value, allowed) -> list[str]:
    return [] if value in allowed else [f"{name}={value!r}: expected one of {list(allowed)}"]


def validate(c: TrainConfig) -> None:
    """Reject values that cannot work, naming the field."""
    from pisa_jax.models import AURAL_DEPTHS, MODALITIES, STEMS, VISUAL_BACKBONES, VISUAL_DEPTHS
    from pisa_jax.models.lowering import CONV_LOWERINGS
    problems = _one_of("dataset", c.dataset, DATASETS)
    if c.dataset == "synthetic" and c.dataset_config is not None:
        problems += _one_of("dataset_config", c.dataset_config, SYNTHETIC_SIZES)
    if c.dataset_config is not None and not (c.dataset_config.replace("_", "").isalnum()
                                             and c.dataset_config[0].isalpha()):
        problems.append(f"dataset_config={c.dataset_config!r}: expected a builder config name "
                        f"(letters, digits and _)")
    if len(c.depths) != 2 or c.depths[0] not in VISUAL_DEPTHS or c.depths[1] not in AURAL_DEPTHS:
        problems.append(f"depths={c.depths!r}: expected visual,aural with visual in "
                        f"{list(VISUAL_DEPTHS)} and aural in {list(AURAL_DEPTHS)}")
    if not c.modalities or set(c.modalities) - set(MODALITIES) or len(set(c.modalities)) != len(c.modalities):
        problems.append(f"modalities={c.modalities!r}: expected one or both of {list(MODALITIES)}")
    problems += _one_of("visual_backbone", c.visual_backbone, VISUAL_BACKBONES)
    problems += _one_of("visual_stem", c.visual_stem, STEMS)
    problems += _one_of("optimizer", c.optimizer, OPTIMIZERS)
    problems += _one_of("lr_schedule", c.lr_schedule, LR_SCHEDULES)
    problems += _one_of("precision", c.precision, PRECISIONS)
    problems += _one_of("conv_lowering", c.conv_lowering, CONV_LOWERINGS)
    problems += _one_of("data_on_device", c.data_on_device, DATA_ON_DEVICE)
    if not (0.0 <= c.dropout < 1.0):
        problems.append(f"dropout={c.dropout}: expected 0 <= dropout < 1")
    if not (math.isfinite(c.learning_rate) and c.learning_rate > 0):
        problems.append(f"learning_rate={c.learning_rate}: expected a positive number")
    if not (math.isfinite(c.weight_decay) and c.weight_decay >= 0):
        problems.append(f"weight_decay={c.weight_decay}: expected >= 0")
    for name in ("batch_size", "epochs", "base_width", "hidden", "eval_every_epochs", "conv1_t_stride"):
        if getattr(c, name) < 1:
            problems.append(f"{name}={getattr(c, name)}: expected >= 1")
    for name in ("train_subset", "test_subset", "checkpoint_every_steps", "eval_batch_size"):
        if getattr(c, name) < 0:
            problems.append(f"{name}={getattr(c, name)}: expected >= 0")
    if problems:
        raise TrainConfigError("invalid training config:\n  " + "\n  ".join(problems))


# Presets override the paper's defaults. "demo" is the README's first command: the embedded
# synthetic dataset (32x32 frames, 2 clips of 8) on a 2-core CPU in minutes. Narrow nets; conv1
# temporal stride 2 because the 3-channel 7x7x7 stem costs most of a CPU step; a higher,
# cosine-decayed learning rate and lighter dropout/decay so that 15 epochs of 270 samples learn
# visibly (values tuned by hand on the demo data).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "demo": dict(dataset="synthetic", dataset_config="demo", base_width=8, hidden=64,
                 conv1_t_stride=2, dropout=0.2, learning_rate=3e-3, lr_schedule="cosine",
                 weight_decay=0.01, epochs=15, batch_size=8),
    "smoke": dict(dataset="synthetic", dataset_config="tiny", depths=(10, 18), base_width=2,
                  hidden=8, epochs=1, batch_size=4, learning_rate=1e-3, weight_decay=0.0),
}


DEFAULT_DATASET_CONFIG = {"synthetic": "full", "pisa": "consecutive"}


def dataset_config_of(config: TrainConfig) -> str:
    """The dataset's size (synthetic) or builder config (pisa) this run trains on."""
    return config.dataset_config or DEFAULT_DATASET_CONFIG[config.dataset]


def builder_config_of(config: TrainConfig) -> str:
    """The config of the `pisa` TFDS builder that holds this run's data (synthetic_demo ...)."""
    name = dataset_config_of(config)
    return f"synthetic_{name}" if config.dataset == "synthetic" else name


def preset(name: str, **overrides) -> TrainConfig:
    if name not in PRESETS:
        raise TrainConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    values = dict(PRESETS[name])
    if overrides.get("dataset", values.get("dataset")) != values.get("dataset"):
        values.pop("dataset_config", None)  # a synthetic size means nothing for another dataset
    return TrainConfig(**{**values, **overrides})


def config_differences(saved: dict[str, Any], new: TrainConfig, *, ignore=()) -> list[str]:
    """Human-readable differences 'field: saved -> new' between a saved config and `new`.

    A field the saved config lacks was added after that run was made, which then computed what
    the field's default computes: it counts as the default (a new field never blocks a resume).
    """
    new_values = new.to_dict()
    defaults = {f.name: _jsonable(f.default) for f in dataclasses.fields(TrainConfig)}
    lines = []
    for name in sorted(set(saved) | set(new_values)):
        if name in ignore:
            continue
        old = saved.get(name, defaults.get(name, "<absent>"))
        now = new_values.get(name, "<absent>")
        if old != now:
            lines.append(f"{name}: {old!r} (workdir) -> {now!r} (now)")
    return lines


def save_config(config: TrainConfig, path: Path) -> None:
    atomic_write(path, json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def load_config(path: Path) -> TrainConfig:
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TrainConfigError(f"{path}: cannot read the run config ({e})") from e
    return TrainConfig.from_dict(values)


def format_config(config: TrainConfig) -> str:
    values = config.to_dict()
    width = max(map(len, values))
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in values.items())
