"""Where a run starts: its own newest readable checkpoint, else the converted backbones
(--visual_init/--aural_init), else random weights; and the best evaluation it carries along.

The run's own checkpoint wins, and the converted weights are then not even read (a resume works
after their folder has moved). A damaged newest step is moved aside and the one before it is
tried; a run that has saved checkpoints but has none left to resume from is refused rather than
started over at step 0 (`pisa_jax.train.workdir`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from pisa_jax.train.checkpoints import Checkpoints, DamagedCheckpointError
from pisa_jax.train.pretrained import with_pretrained
from pisa_jax.train.state import Run
from pisa_jax.train.workdir import refuse_lost_history


@dataclasses.dataclass(frozen=True)
class Best:
    """The best evaluation so far (multimodal test accuracy, or the only head's)."""
    accuracy: float = -1.0
    step: int | None = None
    epoch: int | None = None

    def meta(self, epoch: float) -> dict:
        """What a checkpoint's `meta` item records."""
        return {"best_accuracy": self.accuracy, "best_step": self.step, "best_epoch": self.epoch,
                "epoch": epoch}

    @classmethod
    def from_meta(cls, meta: dict) -> "Best":
        return cls(meta.get("best_accuracy", -1.0), meta.get("best_step"), meta.get("best_epoch"))


def check_history(checkpoints: Checkpoints, workdir: Path) -> None:
    """Refuses (before any model is built) a run that saved checkpoints and has none now."""
    if not checkpoints.steps() and checkpoints.ever_saved():
        refuse_lost_history(workdir, checkpoints.first_saved_step(),
                            f"{checkpoints.root} holds none now")


def resume_point(run: Run, checkpoints: Checkpoints, workdir: Path,
                 log: Callable[[str], None] = print):
    """(state, best) to start from; `log` gets the notes (resumed, moved aside, weights)."""
    check_history(checkpoints, workdir)
    if not checkpoints.steps():
        state, notes = with_pretrained(run.initial_state(), run.config)
        for note in notes:
            log(note)
        return state, Best()

    def move_aside(step, error):
        log(f"{error}\n  moved to {checkpoints.move_aside(step)}; trying the step before it")

    try:
        state, meta, step = checkpoints.restore(run.template, on_damaged=move_aside)
    except DamagedCheckpointError as error:
        refuse_lost_history(workdir, checkpoints.first_saved_step(),
                            f"none of its checkpoints can be read ({error})")
    log(f"resumed from {checkpoints.root}/{step} at step {int(state.step)}")
    return state, Best.from_meta(meta)
