"""From a config and the data's shapes to model, optimiser, fresh state and compiled steps.

Shared by training, `pisa_jax.evaluate` and `pisa_jax.predict`. The data's shapes are saved as
`inputs.json` in the workdir, so evaluation and prediction rebuild the same model without the
dataset at hand.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pisa_jax.train.config import TrainConfig, TrainConfigError
from pisa_jax.train.optimizer import make_optimizer
from pisa_jax.train.state import (DTYPES, TrainState, build_model, create_train_state,
                                  dummy_inputs, init_variables)
from pisa_jax.train.step import make_eval_step, make_train_step, primary_head

INPUTS_FILE = "inputs.json"


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What the model needs to know of a sample (and predict of how samples are cut)."""
    clips: int
    clip_length: int
    image_size: int
    spectrogram_shape: tuple[int, ...]   # [H, W] (one per sample) or [clips, H, W]
    num_classes: int

    @classmethod
    def of_dataset(cls, dataset) -> "InputSpec":
        return cls(clips=int(dataset.clips_per_sample), clip_length=int(dataset.clip_length),
                   image_size=int(dataset.image_size),
                   spectrogram_shape=tuple(int(s) for s in dataset.spectrogram_shape),
                   num_classes=int(dataset.num_classes))

    def save(self, workdir: str | Path) -> None:
        values = dataclasses.asdict(self)
        values["spectrogram_shape"] = list(self.spectrogram_shape)
        (Path(workdir) / INPUTS_FILE).write_text(json.dumps(values, indent=2) + "\n")

    @classmethod
    def load(cls, workdir: str | Path) -> "InputSpec":
        path = Path(workdir) / INPUTS_FILE
        try:
            values = json.loads(path.read_text())
            values["spectrogram_shape"] = tuple(values["spectrogram_shape"])
            return cls(**values)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TrainConfigError(f"{path}: cannot read the input description of this run ({e})") from e


def normalization(config: TrainConfig):
    """(mean, std) of the visual input: those of the pretrained weights the stem belongs to."""
    from pisa_jax.data.pipeline import NORMALIZATION
    return NORMALIZATION[config.visual_stem]


@dataclasses.dataclass
class Components:
    config: TrainConfig
    spec: InputSpec
    model: Any            # BatchNorm synced over the pmap axis: for training
    eval_model: Any       # the same parameters, no collective: for eval and prediction
    tx: Any
    state: TrainState     # freshly initialised (host), also the restore template
    notes: list[str]

    @property
    def primary(self) -> str:
        return primary_head(self.config.modalities)

    def _prep_args(self):
        from pisa_jax.data.pipeline import prepare_inputs
        mean, std = normalization(self.config)
        return prepare_inputs, dict(mean=mean, std=std, dtype=DTYPES[self.config.precision],
                                    modalities=tuple(self.config.modalities))

    def train_step(self, **kwargs):
        prepare, common = self._prep_args()
        return make_train_step(self.model, self.tx, prepare, **common, **kwargs)

    def eval_step(self):
        prepare, common = self._prep_args()
        return make_eval_step(self.eval_model, prepare, **common)


def build(config: TrainConfig, spec: InputSpec, *, load_init_weights: bool = True,
          total_steps: int = 1) -> Components:
    """total_steps: of the whole run, for a decaying learning-rate schedule."""
    model = build_model(config, spec.num_classes, bn_axis_name="batch")
    eval_model = build_model(config, spec.num_classes, bn_axis_name=None)
    video, spectrogram = dummy_inputs(config.modalities, clips=spec.clips,
                                      clip_length=spec.clip_length, image_size=spec.image_size,
                                      spectrogram_shape=spec.spectrogram_shape)
    variables = init_variables(eval_model, config.seed, video, spectrogram)
    notes = []
    if load_init_weights and (config.visual_init or config.aural_init):
        from pisa_jax.train.init_weights import load_initial_weights
        variables, notes = load_initial_weights(
            variables, visual_init=config.visual_init, aural_init=config.aural_init,
            modalities=config.modalities)
    tx = make_optimizer(config.optimizer, config.learning_rate, config.weight_decay,
                        schedule=config.lr_schedule, total_steps=total_steps)
    state = create_train_state(variables, tx, config.seed)
    return Components(config, spec, model, eval_model, tx, state, notes)
