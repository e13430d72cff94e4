"""Using a trained run from Python: load a workdir, predict from arrays.

    import pisa_jax
    trained = pisa_jax.load("runs/demo")              # its best checkpoint ("latest" also works)
    trained.spec                                      # InputSpec: clips, clip_length, sizes
    probs = trained.predict(video, spectrogram)       # {head: float32 [B, 10]}
    levels = probs[trained.primary].argmax(-1) + 1    # skill levels 1..10

`video` is uint8 [B, clips, T, H, W, 3] and `spectrogram` float [B, F, F] (or [B, clips, F, F]
for a run trained on one spectrogram per clip) in [0, 1], the shapes and value ranges a built
dataset stores (`trained.spec` gives them). `predict` normalises them on the device exactly as
training and evaluation did, through the same eval step. A branch the run does not have may be
given as None. `trained.model` and `trained.variables` are the Flax model (eval mode) and its
{"params", "batch_stats"}, for `model.apply(variables, video, spectrogram, train=False)` on
inputs you normalise yourself.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from pisa_jax.errors import UserError
from pisa_jax.train.config import TrainConfig
from pisa_jax.train.state import InputSpec


class ModelInputError(UserError):
    """Arrays that do not fit the loaded model (wrong shape, dtype or batch size)."""


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedModel:
    workdir: Path
    checkpoint: str          # "best" or "latest"
    step: int                # optimizer steps the checkpoint had taken
    config: TrainConfig      # the run's config.json
    spec: InputSpec          # the run's inputs.json: what a sample looks like
    model: Any               # SkillModel in eval form (no cross-device BatchNorm)
    variables: dict          # {"params", "batch_stats"} on the host
    primary: str             # the head whose prediction counts (multimodal with both branches)
    batch_size: int          # samples per eval call; predict pads the last call
    _eval_step: Any = dataclasses.field(repr=False)
    _replicated: Any = dataclasses.field(repr=False)

    def predict(self, video: np.ndarray | None, spectrogram: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
        """Class probabilities of each head of the model (visual, aural, multimodal; those it
        has): {head: float32 [B, num_classes]}, in the order of the inputs."""
        from pisa_jax.train.steps import predict_split
        video, spectrogram = _checked_inputs(self.spec, self.config.modalities, video, spectrogram)
        samples = _Samples(video, spectrogram)
        return predict_split(self._eval_step, self._replicated, samples,
                             global_batch_size=self.batch_size).probs


class _Samples:
    """The arrays as the per-sample source `predict_split` reads (labels are unused)."""

    def __init__(self, video: np.ndarray, spectrogram: np.ndarray):
        self._video, self._spectrogram = video, spectrogram

    def __len__(self) -> int:
        return len(self._video)

    def __getitem__(self, index: int) -> dict:
        return {"video": self._video[index], "spectrogram": self._spectrogram[index],
                "label": np.int32(0)}


def _checked_inputs(spec: InputSpec, modalities, video, spectrogram):
    """-> (video uint8 [B, clips, T, S, S, 3], spectrogram float32 [B, *spec shape]); a branch
    the run lacks may be None and becomes zeros (the model never reads it)."""
    video_shape = (spec.clips, spec.clip_length, spec.image_size, spec.image_size, 3)
    given = [a for a in (video, spectrogram) if a is not None]
    if not given:
        raise ModelInputError("predict needs a video or a spectrogram (both were None)")
    batch = len(given[0])
    for name, array, shape, needed in (
            ("video", video, video_shape, "visual" in modalities),
            ("spectrogram", spectrogram, spec.spectrogram_shape, "aural" in modalities)):
        if array is None:
            if needed:
                raise ModelInputError(f"{name} is None, but this run's model has the "
                                      f"{'visual' if name == 'video' else 'aural'} branch")
            continue
        if tuple(np.shape(array)) != (batch, *shape):
            raise ModelInputError(
                f"{name} has shape {tuple(np.shape(array))}; this run expects "
                f"[batch, {', '.join(map(str, shape))}] with the same batch as the other input")
    if batch == 0:
        raise ModelInputError("predict got an empty batch")
    if video is None:
        video = np.zeros((batch, *video_shape), np.uint8)
    elif np.asarray(video).dtype != np.uint8:
        raise ModelInputError(f"video has dtype {np.asarray(video).dtype}; expected uint8 pixels "
                              f"(0-255), normalised here as in training")
    if spectrogram is None:
        spectrogram = np.zeros((batch, *spec.spectrogram_shape), np.float32)
    return np.asarray(video), np.asarray(spectrogram, np.float32)


def load(workdir: str | Path, checkpoint: str = "best", *,
         batch_size: int | None = None) -> TrainedModel:
    """A trained run's model with the weights of its `checkpoint` ("best" or "latest").

    batch_size: samples per device call (default: the run's batch size, rounded up to a
    multiple of the device count); one compilation serves every later `predict`."""
    import jax

    from pisa_jax.train.checkpoints import load_trained
    from pisa_jax.train.distributed import replicate
    from pisa_jax.train.steps import make_eval_step
    run, state = load_trained(workdir, checkpoint)
    variables = state.variables
    devices = jax.device_count()
    wanted = batch_size or run.config.batch_size
    if wanted < 1:
        raise ModelInputError(f"batch_size={wanted}: expected >= 1")
    return TrainedModel(
        workdir=Path(workdir), checkpoint=checkpoint, step=int(state.step), config=run.config,
        spec=run.spec, model=run.eval_model, variables=variables, primary=run.primary,
        batch_size=-(-wanted // devices) * devices,
        _eval_step=make_eval_step(run.eval_model, run.config), _replicated=replicate(variables))
