"""Orbax checkpoints in the workdir: the latest state and the best one.

Layout:  WORKDIR/config.json                       the run's TrainConfig
         WORKDIR/checkpoints/latest/<step>/{state,meta}   every epoch end (+ every N steps)
         WORKDIR/checkpoints/best/<step>/{state,meta}     best multimodal test accuracy
`state` is the TrainState as a plain nested dict of numpy arrays (flax's to_state_dict), taken
from the first pmap replica on the host: orbax wants global or host arrays, not pmap's
per-device copies. `meta` is JSON (epoch, best accuracy so far ...). Orbax writes each step to
a temporary directory and renames it when complete, so a SIGKILL never leaves a half checkpoint
that a restart would pick up.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.serialization
import orbax.checkpoint as ocp
from flax import traverse_util

from pisa_jax.errors import UserError
from pisa_jax.train.config import CONFIG_FILE, load_config
from pisa_jax.train.state import InputSpec, TrainState, create_run, to_host


SERIES = ("best", "latest")


class CheckpointError(UserError):
    """A checkpoint that cannot be restored into the model the config describes."""


def _manager(directory: Path, *, read_only: bool = False) -> ocp.CheckpointManager:
    if read_only:  # evaluation / prediction: never writes, never cleans up
        options = ocp.CheckpointManagerOptions(read_only=True, create=False, max_to_keep=None,
                                               save_interval_steps=0)
    else:
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                               cleanup_tmp_directories=True)
    return ocp.CheckpointManager(directory.absolute(), options=options, item_names=("state", "meta"))


class Checkpoints:
    """The workdir's two checkpoint series. Every process of a multi-host run calls save."""

    def __init__(self, workdir: str | Path, *, read_only: bool = False):
        root = Path(workdir) / "checkpoints"
        if read_only and not root.is_dir():
            raise CheckpointError(f"{workdir}: no checkpoints/ directory (not a training workdir?)")
        self.latest = _manager(root / "latest", read_only=read_only)
        self.best = _manager(root / "best", read_only=read_only)

    def _save(self, manager: ocp.CheckpointManager, state: TrainState, meta: dict[str, Any]):
        step = int(state.step)
        if step in manager.all_steps():
            return  # already saved (a resumed run repeating the save of the step it resumed at)
        tree = flax.serialization.to_state_dict(to_host(state))
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                   meta=ocp.args.JsonSave(meta)))

    def save_latest(self, state: TrainState, meta: dict[str, Any]) -> None:
        """`state` unreplicated (host or single-device arrays)."""
        self._save(self.latest, state, meta)

    def save_best(self, state: TrainState, meta: dict[str, Any]) -> None:
        self._save(self.best, state, meta)

    def latest_step(self, which: str = "latest") -> int | None:
        return getattr(self, which).latest_step()

    def restore(self, target: TrainState, which: str = "latest") -> tuple[TrainState, dict]:
        """(state, meta) of the newest checkpoint in `which` ('latest' or 'best').

        `target` gives the tree structure, shapes and dtypes (a freshly initialised state)."""
        manager = getattr(self, which)
        step = manager.latest_step()
        if step is None:
            raise CheckpointError(f"{manager.directory}: no {which} checkpoint")
        template = flax.serialization.to_state_dict(to_host(target))
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"{manager.directory}/{step}: does not fit the model of this config "
                f"(different depths, widths or modalities?): {e}") from e
        _check_shapes(template, restored["state"], f"{manager.directory}/{step}")
        return flax.serialization.from_state_dict(target, restored["state"]), dict(restored["meta"])

    def wait(self) -> None:
        """Block until asynchronous saves are on disk."""
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def load_trained(workdir: str | Path, which: str = "best"):
    """(run, state) of a training workdir: the model its config describes, with the
    parameters and BatchNorm statistics of its `which` checkpoint (a host TrainState)."""
    workdir = Path(workdir)
    if which not in SERIES:
        raise CheckpointError(f"--checkpoint {which!r}: expected one of {SERIES}")
    if not (workdir / CONFIG_FILE).is_file():
        raise CheckpointError(f"{workdir}: no {CONFIG_FILE} (not a training workdir?)")
    config = load_config(workdir / CONFIG_FILE)
    run = create_run(config, InputSpec.load(workdir))
    checkpoints = Checkpoints(workdir, read_only=True)
    try:
        state, _ = checkpoints.restore(run.state, which)
    finally:
        checkpoints.close()
    return run, state


def _check_shapes(expected, restored, where: str) -> None:
    got = traverse_util.flatten_dict(restored)
    for path, leaf in traverse_util.flatten_dict(expected).items():
        other = got.get(path)
        if other is None or tuple(other.shape) != tuple(leaf.shape):
            name = "/".join(map(str, path))
            shape = None if other is None else tuple(other.shape)
            raise CheckpointError(f"{where}: {name} has shape {shape}, the model expects "
                                  f"{tuple(leaf.shape)} (different config?)")
