"""How long a run will take without an accelerator: a note at start, an estimate after the first
steps.

The paper's recipe (R18-3D on 10 clips x 16 frames of 112x112, batch 4) is sized for a GPU; on
a CPU one step takes minutes and an epoch hours. `start_note` says so before anything is built
or compiled, from the shapes the config will train on; `StepClock` times the first steps the run
takes anyway (no extra compile) and gives the time per epoch and per run once.
"""
from __future__ import annotations

import time

from pisa_jax.train.config import TrainConfig, builder_config_of

PAPER_VOXELS = 10 * 16 * 112 * 112        # frames x pixels of one sample at the paper's shapes
SLOW_EPOCH_S = 10 * 60                    # a CPU epoch slower than this gets the estimate
DEMO_HINT = ("`--preset demo` trains a small model on small data in minutes on a CPU (with "
             "your own PISA-layout videos: build a *_demo config, see python -m "
             "data_builders.pisa --help)")


def stored_shape(config: TrainConfig) -> tuple[int, int, int] | None:
    """(clips, frames per clip, frame size) of the builder config this run trains on; None
    for a config built from the command line under a name of its own."""
    from data_builders.pisa import Builder
    found = Builder.builder_configs.get(builder_config_of(config))
    return None if found is None else (found.clips_per_sample, found.clip_length, found.image_size)


def start_note(config: TrainConfig, platform: str) -> str | None:
    """A warning for a CPU run at (at least) the paper's sample size with full-width nets."""
    shape = stored_shape(config)
    if platform != "cpu" or shape is None or config.base_width < 64:
        return None
    clips, length, size = shape
    if clips * length * size * size < PAPER_VOXELS:
        return None
    return (f"note: no accelerator (JAX runs on the CPU) and this run has the paper's shapes "
            f"({clips} clips x {length} frames of {size}x{size}, base width "
            f"{config.base_width}): a step takes minutes here; an estimate per epoch follows the "
            f"first steps. {DEMO_HINT}.")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class StepClock:
    """Times the steps after the first (which compiles) and estimates the run once.

    observe(step) is called as each step's result reaches the host; after `measured` more steps
    it returns the estimate (a line to print) if an epoch would take longer than SLOW_EPOCH_S,
    else None, and None from then on."""

    def __init__(self, steps_per_epoch: int, steps_left: int, platform: str, *,
                 measured: int = 2, clock=time.perf_counter):
        self.steps_per_epoch, self.steps_left = steps_per_epoch, steps_left
        self.active = platform == "cpu"
        self.measured, self.clock = measured, clock
        self._first: tuple[int, float] | None = None

    def observe(self, step: int) -> str | None:
        if not self.active:
            return None
        now = self.clock()
        if self._first is None:     # the first step's result: compile time is behind us
            self._first = (step, now)
            return None
        first_step, first_time = self._first
        if step - first_step < self.measured:
            return None
        self.active = False
        per_step = (now - first_time) / (step - first_step)
        per_epoch = per_step * self.steps_per_epoch
        if per_epoch < SLOW_EPOCH_S:
            return None
        return (f"estimate on this CPU: {per_step:.0f} s per step, {_duration(per_epoch)} per "
                f"epoch of {self.steps_per_epoch} steps, {_duration(per_step * self.steps_left)} "
                f"for the {self.steps_left} steps left. {DEMO_HINT}.")
