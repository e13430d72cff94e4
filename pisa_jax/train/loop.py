"""train_and_evaluate(config, workdir): the whole run, resumable from the workdir.

Resume order: the workdir's own latest checkpoint -> converted backbone weights
(--visual_init/--aural_init) -> random initialisation. A resumed run continues at the same step
with the same optimiser state and data order (the order is a function of seed and epoch, the
dropout keys of the rng in the state and the step), so it ends exactly where an uninterrupted
run ends. SIGTERM (a cluster's preemption) and SIGINT save the latest checkpoint at the next
step boundary and stop with `Interrupted`; the same command resumes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import jax

from pisa_jax.data.dataset import Dataset, open_dataset
from pisa_jax.data.pipeline import prefetch_to_device, steps_per_epoch, train_batches
from pisa_jax.errors import UserError
from pisa_jax.train import pace, reports
from pisa_jax.train.checkpoints import Checkpoints
from pisa_jax.train.config import (CONFIG_FILE, ConfigMismatchError, TrainConfig,
                                   TrainConfigError, builder_config_of, config_differences,
                                   dataset_config_of, format_config, save_config)
from pisa_jax.train.distributed import (check_batch_split, is_lead_host, replicate,
                                        unreplicate_to_host)
from pisa_jax.train.pretrained import with_pretrained
from pisa_jax.train.state import InputSpec, Run, create_run
from pisa_jax.train.steps import make_eval_step, make_train_step, predict_split

class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite loss; the run stopped, checkpoints untouched."""


class Interrupted(UserError):
    """SIGTERM or SIGINT stopped the run after saving its latest checkpoint."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number


def check_workdir_config(config: TrainConfig, workdir: Path, *, override: bool) -> None:
    """Refuse to resume a run whose saved config differs, listing the differences."""
    path = workdir / CONFIG_FILE
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TrainConfigError(f"{path}: cannot read the saved run config ({e})") from None
    diffs = config_differences(saved, config, ignore=TrainConfig.RESUMABLE_CHANGES)
    if diffs and not override:
        raise ConfigMismatchError(
            f"{workdir} holds a run with a different config:\n  " + "\n  ".join(diffs) +
            "\nUse another --workdir, the same flags, or --override_config to continue anyway.")
    if diffs:
        print("Overriding the workdir's config:\n  " + "\n  ".join(diffs))


def open_training_data(config: TrainConfig, data_dir: str | None = None) -> Dataset:
    """The run's dataset (its subsets as TFDS slices); the synthetic one is rendered and built
    here on first use."""
    data_dir = data_dir or config.data_dir
    if config.dataset == "synthetic":
        from data_builders.pisa.build import ensure_synthetic
        ensure_synthetic(data_dir, size=dataset_config_of(config))

    def split(name: str, first: int) -> str:
        return f"{name}[:{first}]" if first else name

    return open_dataset(builder_config_of(config), data_dir,
                        train_split=split("train", config.train_subset),
                        test_split=split("test", config.test_subset))


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


@dataclasses.dataclass
class Session:
    """A run in progress: what the epoch loop reads and advances."""
    run: Run
    workdir: Path
    checkpoints: Checkpoints
    log: reports.MetricsLog | None     # None on hosts other than the lead
    train_step: Callable
    eval_step: Callable
    rstate: object                     # the TrainState, replicated over the local devices
    step: int
    steps_per_epoch: int
    best: Best = Best()
    on_step: Callable[[int], None] | None = None
    stop_signal: int | None = None     # set by SIGTERM / SIGINT: stop at the next step
    clock: pace.StepClock | None = None  # times the first steps: the CPU estimate

    def save_latest(self) -> None:
        self.checkpoints.save_latest(unreplicate_to_host(self.rstate),
                                     self.best.meta(self.step / self.steps_per_epoch))


def _log(message: str) -> None:
    if is_lead_host():
        print(message, flush=True)


def train_and_evaluate(config: TrainConfig, workdir: str | Path, *, override_config: bool = False,
                       dataset: Dataset | None = None,
                       on_step: Callable[[int], None] | None = None) -> dict:
    """Train per `config` in `workdir` (resuming if it holds a run); returns the final results.

    dataset: an already opened dataset (tests); by default `open_training_data(config)`.
    on_step: called with the step count after each step (tests use it to kill the process).
    """
    workdir = Path(workdir)
    check_batch_split(config.batch_size)  # before anything is loaded or compiled
    workdir.mkdir(parents=True, exist_ok=True)
    check_workdir_config(config, workdir, override=override_config)
    _log(f"pisa-jax training in {workdir} on {jax.device_count()} {jax.devices()[0].platform} "
         f"device(s), {jax.process_count()} process(es); config:\n{format_config(config)}")
    note = pace.start_note(config, jax.default_backend())
    if note:
        _log(note)

    dataset = dataset if dataset is not None else open_training_data(config)
    spe = steps_per_epoch(len(dataset.train), config.batch_size)
    if spe < 1:
        raise TrainConfigError(f"batch_size={config.batch_size} is larger than the training split "
                               f"({len(dataset.train)} samples)")
    spec = InputSpec.of_dataset(dataset)
    run = create_run(config, spec, total_steps=spe * config.epochs)

    checkpoints = Checkpoints(workdir)
    state, best = run.state, Best()
    if checkpoints.latest_step() is not None:  # the run's own weights win: no --*_init read
        state, meta = checkpoints.restore(run.state)
        best = Best.from_meta(meta)
        _log(f"resumed from {workdir}/checkpoints/latest at step {int(state.step)}")
    else:
        state, notes = with_pretrained(state, config)
        for note in notes:
            _log(note)
    if is_lead_host():
        save_config(config, workdir / CONFIG_FILE)
        spec.save(workdir)
    step = int(state.step)
    log = reports.MetricsLog(workdir, resume_step=step) if is_lead_host() else None
    session = Session(run, workdir, checkpoints, log, make_train_step(run.model, run.tx, config),
                      make_eval_step(run.eval_model, config), replicate(state), step, spe, best,
                      on_step)
    session.clock = pace.StepClock(spe, spe * config.epochs - step, jax.default_backend())
    del state
    results = None
    try:
        with _stop_on_signals(session):
            for epoch in range(step // spe, config.epochs):
                _train_epoch(session, dataset.train, epoch)
                last = epoch + 1 == config.epochs
                if (epoch + 1) % config.eval_every_epochs == 0 or last:
                    results = _evaluate(session, dataset.test, epoch)
                session.save_latest()
        if results is None:  # nothing left to train: the run was already complete
            _log(f"{workdir}: the run is complete ({config.epochs} epochs); evaluating only")
            results = _evaluate(session, dataset.test, config.epochs - 1, record=False)
    finally:
        checkpoints.wait()
        checkpoints.close()
        if log is not None:
            log.close()
    return results


@contextlib.contextmanager
def _stop_on_signals(session: Session):
    """SIGTERM / SIGINT ask the loop to stop at the next step boundary (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask_to_stop(number, _frame):
        if session.stop_signal is not None:  # a second Ctrl-C: stop now, unsaved
            raise KeyboardInterrupt
        session.stop_signal = number
        _log(f"\n{signal.Signals(number).name}: saving a checkpoint at the next step, then stopping")

    previous = {s: signal.signal(s, ask_to_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _train_epoch(session: Session, source, epoch: int) -> None:
    run, config, spe = session.run, session.run.config, session.steps_per_epoch
    batches = train_batches(source, global_batch_size=config.batch_size,
                            num_local_devices=jax.local_device_count(), seed=config.seed,
                            epoch=epoch, start_step=session.step % spe, flip=config.flip)
    bar = reports.progress_bar(spe, session.step % spe, f"epoch {epoch + 1}/{config.epochs}",
                               shown=is_lead_host())
    sums, count, pending = {}, 0, None
    start = time.perf_counter()

    def check(metrics, at_step):
        """Host copy of one step's metrics; stop on a non-finite loss (one step behind the
        device, so the host does not stall the device every step)."""
        nonlocal count
        values = {k: float(v[0]) for k, v in jax.device_get(metrics).items()}
        if not math.isfinite(values["loss"]):
            session.checkpoints.wait()
            good = session.checkpoints.latest_step()
            raise NonFiniteLossError(
                f"loss is {values['loss']} at step {at_step} (epoch {epoch + 1}); training stopped. "
                + (f"The last good checkpoint (step {good}) is kept in "
                   f"{session.workdir}/checkpoints/latest." if good is not None
                   else "No checkpoint had been saved yet."))
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        estimate = session.clock.observe(at_step) if session.clock is not None else None
        if estimate:
            _log("\n" + estimate)
        samples_per_s = count * config.batch_size / (time.perf_counter() - start)
        bar.set_postfix(loss=f"{values['loss']:.3f}",
                        acc=f"{100 * values['accuracy_' + run.primary]:.1f}%",
                        samples_s=f"{samples_per_s:.1f}")
        if session.log is not None:
            session.log.scalars("step", at_step, {
                "loss": values["loss"], "learning_rate": float(run.learning_rate(at_step - 1)),
                "samples_per_s": samples_per_s}, flush=False)

    for batch in prefetch_to_device(batches, size=2):
        session.rstate, metrics = session.train_step(session.rstate, batch)
        session.step += 1
        if pending is not None:
            check(*pending)
        pending = (metrics, session.step)
        bar.update(1)
        every = config.checkpoint_every_steps
        if session.stop_signal is not None or (every and session.step % every == 0
                                               and session.step % spe):
            check(*pending)
            pending = None
            session.save_latest()
        if session.stop_signal is not None:
            session.checkpoints.wait()
            bar.close()
            name = signal.Signals(session.stop_signal).name
            raise Interrupted(f"{name}: stopped at step {session.step} (epoch {epoch + 1}); the "
                              f"checkpoint is saved in {session.workdir}: run the same command "
                              f"to resume", session.stop_signal)
        if session.on_step is not None:
            session.on_step(session.step)
    if pending is not None:
        check(*pending)
    bar.close()
    elapsed = time.perf_counter() - start
    if session.log is not None and count:
        record = {k: (100 * v / count if k.startswith("accuracy") else v / count)
                  for k, v in sums.items()}
        session.log.write("train", session.step, {
            "epoch": epoch + 1, **record, "seconds": elapsed,
            "samples_per_s": count * config.batch_size / elapsed})


def _evaluate(session: Session, source, epoch: int, *, record: bool = True) -> dict:
    """Score the test split; log it and keep it as the best checkpoint if it is (record=False:
    re-scoring a finished run records nothing new)."""
    rstate, step = session.rstate, session.step
    variables = {"params": rstate.params, "batch_stats": rstate.batch_stats}
    start = time.perf_counter()
    predictions = predict_split(session.eval_step, variables, source,
                                global_batch_size=session.run.config.batch_size)
    results = reports.evaluation_results(predictions.probs, predictions.labels,
                                         primary=session.run.primary,
                                         video_ids=predictions.video_ids)
    is_best = record and results["accuracy"] > session.best.accuracy
    if is_best:
        session.best = Best(results["accuracy"], step, epoch + 1)
        session.checkpoints.save_best(unreplicate_to_host(rstate), session.best.meta(epoch + 1))
    best = session.best
    results.update(step=step, epoch=epoch + 1,
                   best={"accuracy": best.accuracy, "step": best.step, "epoch": best.epoch})
    _log(f"eval epoch {epoch + 1} step {step}: {reports.summary_line(results)}"
         f"{'  (new best)' if is_best else ''}  [{time.perf_counter() - start:.1f}s]")
    if record and session.log is not None:
        session.log.write("eval", step, reports.eval_record(results, epoch + 1))
        reports.write_eval_reports(session.workdir, results, best=is_best, log=session.log)
    return results
