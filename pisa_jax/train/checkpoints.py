"""Orbax checkpoints of a training run: one CheckpointManager in WORKDIR/checkpoints.

Layout:  WORKDIR/checkpoints/<step>/state     the TrainState as a nested dict of numpy arrays
                                  /meta      JSON: epoch, the best evaluation so far
                                  /metrics   JSON, steps that were evaluated: test accuracy
Orbax's preservation policy decides which steps stay: the KEEP_LATEST newest (so that a damaged
newest step falls back to the one before) and the best evaluated one (highest test accuracy; of
equal ones the earlier, as an early stop would keep). `state` is taken from the first pmap
replica on the host: orbax wants global or host arrays, not pmap's per-device copies.

Orbax writes each step to a temporary directory and renames it when complete, so a SIGKILL never
leaves a half step that a restart would pick up. A step damaged afterwards (a truncated file, a
full disk) is told apart from a checkpoint of another model by comparing the saved tree's shapes
(orbax's metadata, read without the arrays) with the model's.

Workdirs of earlier versions (checkpoints/latest/<step>, checkpoints/best/<step>) are read by
evaluate and predict; training refuses them (LegacyLayoutError names what to do).
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

from pisa_jax.files import atomic_write
from pisa_jax.errors import UserError
from pisa_jax.train import orbax_logs
from pisa_jax.train.config import CONFIG_FILE, load_config
from pisa_jax.train.state import InputSpec, TrainState, create_run, to_host

SERIES = ("best", "latest")   # what evaluate/predict's --checkpoint picks
KEEP_LATEST = 3               # newest steps kept besides the best one
DAMAGED_DIR = "damaged_checkpoints"   # in the workdir: steps that could not be read, moved aside
SAVED_MARKER = ".checkpointed"        # in the workdir, once its first step is on disk: the step

orbax_logs.quiet_unevaluated_steps()


class CheckpointError(UserError):
    """A checkpoint that cannot be restored into the model the config describes."""


class CheckpointMismatchError(CheckpointError):
    """An intact checkpoint of a model with other shapes (another config)."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint step whose files cannot be read (truncated, missing, corrupt)."""


class LegacyLayoutError(CheckpointError):
    """checkpoints/latest and checkpoints/best of an earlier version, in a workdir to train in."""


def _best_key(metrics: dict) -> tuple[float, int]:
    """Orders evaluated steps, best last: higher accuracy, then the earlier step."""
    return float(metrics["accuracy"]), -int(metrics["step"])


def _handlers() -> dict:
    return {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}


def _reader(directory: Path, *, track_best: bool) -> ocp.CheckpointManager:
    """A manager that never saves, hence never deletes (orbax's own read_only option logs a
    warning on every open)."""
    options = ocp.CheckpointManagerOptions(
        create=False, best_fn=_best_key if track_best else None, best_mode="max",
        enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory.absolute(), options=options, item_handlers=_handlers())


def _writer(directory: Path) -> ocp.CheckpointManager:
    policies = ocp.checkpoint_managers
    keep = policies.AnyPreservationPolicy([
        policies.LatestN(n=KEEP_LATEST),
        policies.BestN(get_metric_fn=_best_key, n=1, keep_checkpoints_without_metrics=False)])
    # best_fn: orbax writes a step's metrics only when it tracks a best step.
    options = ocp.CheckpointManagerOptions(create=True, cleanup_tmp_directories=True,
                                           best_fn=_best_key, best_mode="max",
                                           preservation_policy=keep)
    return ocp.CheckpointManager(directory.absolute(), options=options, item_handlers=_handlers())


def _short(error: BaseException) -> str:
    """The first line of a storage library's message (some run to kilobytes of JSON)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _host_template(target: TrainState) -> TrainState:
    """numpy leaves for orbax to restore into: zeros for abstract leaves (jax.ShapeDtypeStruct,
    as in Run.template; np.zeros maps pages it never writes), host copies of arrays (one
    device_get for the whole tree)."""
    def leaf(x):
        return np.zeros(x.shape, x.dtype) if isinstance(x, jax.ShapeDtypeStruct) else x
    return to_host(jax.tree_util.tree_map(leaf, target))


def _shapes(tree) -> dict[str, tuple]:
    """{"params/visual_backbone/conv1/kernel": shape} of a nested dict (or orbax metadata)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
            for path, leaf in leaves if hasattr(leaf, "shape")}


def _compare(expected: dict, saved: dict, where: str) -> None:
    for name, shape in expected.items():
        if saved.get(name) != shape:
            got = "absent" if name not in saved else f"shape {saved[name]}"
            raise CheckpointMismatchError(
                f"{where}: holds another model: {name} is {got} there, {shape} in this config "
                f"(different depths, widths or modalities?)")
    extra = sorted(set(saved) - set(expected))
    if extra:
        raise CheckpointMismatchError(f"{where}: holds another model: it has {extra[0]}, which "
                                      f"this config does not (different modalities?)")


class Checkpoints:
    """A run's checkpoints. Every process of a multi-host run calls save."""

    def __init__(self, workdir: str | Path, *, read_only: bool = False):
        self.workdir, self.read_only = Path(workdir), read_only
        self.root = self.workdir / "checkpoints"
        self.legacy = {s: self.root / s for s in SERIES if (self.root / s).is_dir()}
        if read_only and not self.root.is_dir():
            raise CheckpointError(f"{workdir}: no checkpoints/ directory (not a training workdir?)")
        if self.legacy and not read_only:
            raise LegacyLayoutError(
                f"{self.root}: checkpoints/latest and checkpoints/best are the layout of an earlier "
                f"pisa-jax, which evaluate and predict still read; to train, use another --workdir "
                f"or --restart (moves this run aside, keeping it)")
        self._marked = (self.workdir / SAVED_MARKER).is_file()
        if self.legacy:
            self._series = {s: _reader(d, track_best=False) for s, d in self.legacy.items()}
            self.manager = self._series.get("latest")
        else:
            self.manager = _reader(self.root, track_best=True) if read_only else _writer(self.root)
            self._series = {"latest": self.manager, "best": self.manager}

    # -- saving
    def save(self, state: TrainState, meta: dict[str, Any], *, accuracy: float | None = None):
        """`state` unreplicated (host or single-device arrays); `accuracy`: the test accuracy of
        this step's evaluation, if it was evaluated (it decides the best step)."""
        step = int(state.step)
        if step in self.manager.all_steps():
            return  # already saved (a resumed run repeating the save of the step it resumed at)
        tree = flax.serialization.to_state_dict(to_host(state))
        metrics = None if accuracy is None else {"accuracy": float(accuracy), "step": step}
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                        meta=ocp.args.JsonSave(meta)),
                          metrics=metrics)
        if not self._marked:  # once: wait for the first step, then mark the workdir as one
            self.manager.wait_until_finished()  # whose run has checkpoints to lose
            if jax.process_index() == 0:
                atomic_write(self.workdir / SAVED_MARKER, f"{step}\n")
            self._marked = True

    def ever_saved(self) -> bool:
        """Whether this workdir's run has saved a checkpoint (which may be gone since)."""
        return (self.workdir / SAVED_MARKER).is_file()

    def first_saved_step(self) -> int | None:
        """The step of the run's first checkpoint, if it is known."""
        try:
            return int((self.workdir / SAVED_MARKER).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    # -- reading
    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps()) if self.manager is not None else []

    def latest_step(self) -> int | None:
        return max(self.steps(), default=None)

    def best_step(self) -> int | None:
        if self.legacy:  # an earlier version kept the best step alone in checkpoints/best
            best = self._series.get("best")
            return None if best is None else best.latest_step()
        return self.manager.best_step()

    def restore_step(self, step: int, target: TrainState, which: str = "latest"):
        """(state, meta) of one step. DamagedCheckpointError or CheckpointMismatchError."""
        manager = self._series[which]
        where = f"{manager.directory}/{step}"
        template = flax.serialization.to_state_dict(_host_template(target))
        try:
            saved = manager.item_metadata(step)["state"]
        except Exception as error:  # noqa: BLE001 - any unreadable metadata is damage
            raise DamagedCheckpointError(f"{where}: damaged or incomplete: {_short(error)}") from None
        if saved is None:
            raise DamagedCheckpointError(f"{where}: damaged or incomplete: no readable state")
        _compare(_shapes(template), _shapes(saved), where)
        orbax_logs.quiet_closed_loop_callbacks()
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()))
            meta = dict(restored["meta"])
            state = flax.serialization.from_state_dict(target, restored["state"])
        except Exception as error:  # noqa: BLE001 - same shapes, unreadable data: damage
            raise DamagedCheckpointError(f"{where}: damaged or incomplete: {_short(error)}") from None
        return state, meta

    def restore(self, target: TrainState, which: str = "latest", *,
                on_damaged: Callable[[int, DamagedCheckpointError], None] | None = None):
        """(state, meta, step) of the newest readable step ('latest') or of the best one.

        A damaged latest step is reported to on_damaged (default: a note on stderr) and the step
        before it is tried; a checkpoint of another model stops at once (older steps would not fit
        either). `target` gives the tree structure, shapes and dtypes (Run.template, or a state)."""
        if which not in SERIES:
            raise CheckpointError(f"--checkpoint {which!r}: expected one of {SERIES}")
        on_damaged = on_damaged or (lambda _, error: print(f"note: {error}", file=sys.stderr))
        if which == "best":
            step = self.best_step()
            if step is None:
                raise CheckpointError(f"{self.workdir}: no evaluated checkpoint to be the best "
                                      f"yet; use --checkpoint latest")
            return (*self.restore_step(step, target, "best"), step)
        manager = self._series.get("latest")
        steps = sorted(manager.all_steps(), reverse=True) if manager is not None else []
        if not steps:
            raise CheckpointError(f"{self.root}: no checkpoint")
        damaged = []
        for step in steps:
            try:
                return (*self.restore_step(step, target), step)
            except DamagedCheckpointError as error:
                damaged.append(error)
                on_damaged(step, error)
        raise DamagedCheckpointError(
            f"{self.root}: no readable checkpoint: steps {sorted(steps)} are all damaged")

    def move_aside(self, step: int) -> Path:
        """Moves a damaged step out of the manager's reach (so that the step can be saved
        again), into WORKDIR/damaged_checkpoints/<step>[_<time>]; nothing is deleted."""
        target = self.workdir / DAMAGED_DIR / str(step)
        if target.exists():
            target = target.with_name(f"{step}_{time.strftime('%Y%m%d-%H%M%S')}")
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.root / str(step)), str(target))
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes(f"pisa_jax_move_aside_{step}")
        self.manager.reload()
        return target

    def wait(self) -> None:
        """Block until asynchronous saves are on disk."""
        for manager in {id(m): m for m in self._series.values()}.values():
            manager.wait_until_finished()

    def close(self) -> None:
        for manager in {id(m): m for m in self._series.values()}.values():
            # orbax awaits its start-up clean-up of unfinished steps only in save(): a run
            # refused before its first save would exit under that thread's feet
            getattr(manager, "_maybe_await_cleanup_tmp_directory", lambda: None)()
            manager.close()


def load_trained(workdir: str | Path, which: str = "best"):
    """(run, state) of a training workdir: the model its config describes, with the
    parameters and BatchNorm statistics of its `which` checkpoint (a host TrainState). A
    damaged latest step falls back to the one before it, with a note on stderr."""
    workdir = Path(workdir)
    if which not in SERIES:
        raise CheckpointError(f"--checkpoint {which!r}: expected one of {SERIES}")
    if not (workdir / CONFIG_FILE).is_file():
        raise CheckpointError(f"{workdir}: no {CONFIG_FILE} (not a training workdir?)")
    config = load_config(workdir / CONFIG_FILE)
    checkpoints = Checkpoints(workdir, read_only=True)
    try:
        if checkpoints.latest_step() is None and not checkpoints.legacy:
            raise CheckpointError(f"{checkpoints.root}: no checkpoint")
        run = create_run(config, InputSpec.load(workdir))
        state, _, _ = checkpoints.restore(run.template, which)
    finally:
        checkpoints.close()
    return run, state

