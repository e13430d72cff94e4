"""train_and_evaluate(config, workdir): the whole run, resumable from the workdir.

Resume order: the workdir's own latest checkpoint -> converted backbone weights
(--visual_init/--aural_init) -> random initialisation. A resumed run continues at the same step
with the same optimiser state and data order (the order is a function of seed and epoch, the
dropout keys of the rng in the state and the step), so it ends exactly where an uninterrupted
run ends. SIGTERM (a cluster's preemption) and SIGINT save the latest checkpoint at the next
step boundary and stop with `Interrupted`; the same command resumes. Where a run starts is
`pisa_jax.train.resume`'s (a damaged newest checkpoint falls back to the one before); the
workdir's checks (writable, one training at a time, --restart) `pisa_jax.train.workdir`'s.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
from pathlib import Path
from typing import Callable

import jax

from pisa_jax import cudnn
from pisa_jax.data.dataset import Dataset, open_dataset
from pisa_jax.data.on_device import place_splits
from pisa_jax.data.pipeline import steps_per_epoch
from pisa_jax.errors import OutOfMemoryError, is_out_of_memory
from pisa_jax.train import pace, reports
from pisa_jax.train.checkpoints import Checkpoints
from pisa_jax.train.config import (CONFIG_FILE, TrainConfig, TrainConfigError, builder_config_of,
                                   dataset_config_of, format_config, save_config)
from pisa_jax.train.distributed import (barrier, check_batch_split, is_lead_host, replicate,
                                        unreplicate_to_host)
from pisa_jax.train.resume import Best, check_history, resume_point
from pisa_jax.train.stops import (Interrupted, NonFiniteLossError, PeerLostError,
                                  out_of_memory_line, stop_on_signals)
from pisa_jax.train.state import InputSpec, Run, create_run
from pisa_jax.train.steps import (make_eval_step, make_train_step, predict_split,
                                  train_step_inputs)
from pisa_jax.train.workdir import WorkdirLock, check_path, check_workdir_config, move_history_aside


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

    def save(self, accuracy: float | None = None) -> None:
        """A checkpoint of the current step; `accuracy`: its evaluation's, if it was evaluated."""
        # views of the devices' buffers: the save copies them before it returns
        self.checkpoints.save(unreplicate_to_host(self.rstate, copy=False),
                              self.best.meta(self.step / self.steps_per_epoch), accuracy=accuracy)


def _log(message: str) -> None:
    if is_lead_host():
        print(message, flush=True)


def train_and_evaluate(config: TrainConfig, workdir: str | Path, *, override_config: bool = False,
                       restart: bool = False, dataset: Dataset | None = None,
                       on_step: Callable[[int], None] | None = None) -> dict:
    """Train per `config` in `workdir` (resuming if it holds a run); returns the final results.

    restart: move the workdir's run aside (WORKDIR/previous_runs/<time>/) and start over.
    dataset: an already opened dataset (tests); by default `open_training_data(config)`.
    on_step: called with the step count after each step (tests use it to kill the process).
    """
    workdir = check_path(workdir)  # nothing is loaded, compiled or created before these checks
    check_batch_split(config.batch_size)
    check_batch_split(config.evaluation_batch_size, what="eval_batch_size")
    if not restart:
        check_workdir_config(config, workdir, override=override_config)
    _log(f"pisa-jax training in {workdir} on {jax.device_count()} {jax.devices()[0].platform} "
         f"device(s), {jax.process_count()} process(es); config:\n{format_config(config)}")
    for note in (pace.start_note(config, jax.default_backend()),
                 cudnn.bf16_warning(config.precision)):
        if note:
            _log(note)
    dataset = dataset if dataset is not None else open_training_data(config)
    spe = steps_per_epoch(len(dataset.train), config.batch_size)
    if spe < 1:
        raise TrainConfigError(f"batch_size={config.batch_size} is larger than the training split "
                               f"({len(dataset.train)} samples)")
    workdir.mkdir(parents=True, exist_ok=True)
    with WorkdirLock(workdir) if is_lead_host() else contextlib.nullcontext():
        if restart and is_lead_host():
            moved = move_history_aside(workdir)
            if moved is not None:
                _log(f"--restart: the workdir's previous run is kept in {moved}")
        barrier("pisa_jax_workdir_ready")
        return _train(config, workdir, dataset, spe, Checkpoints(workdir), on_step)


def _train(config: TrainConfig, workdir: Path, dataset: Dataset, spe: int,
           checkpoints: Checkpoints, on_step) -> dict:
    """The run itself, from its resume point; closes `checkpoints`."""
    results, log, lost, where = None, None, False, "loading the run"
    try:
        check_history(checkpoints, workdir)  # before anything is compiled
        spec = InputSpec.of_dataset(dataset)
        run = create_run(config, spec, total_steps=spe * config.epochs)
        state, best = resume_point(run, checkpoints, workdir, log=_log)
        if is_lead_host():
            save_config(config, workdir / CONFIG_FILE)
            spec.save(workdir)
        step = int(state.step)
        log = reports.MetricsLog(workdir, resume_step=step) if is_lead_host() else None
        where = "placing the splits in device memory"
        train, test = place_splits(dataset.train, dataset.test, config.data_on_device, log=_log)
        on_device = train is not dataset.train
        session = Session(run, workdir, checkpoints, log,
                          make_train_step(run.model, run.tx, config, data_on_device=on_device),
                          make_eval_step(run.eval_model, config, data_on_device=on_device),
                          replicate(state, donated=True), step, spe,
                          best, on_step)
        session.clock = pace.StepClock(spe, spe * config.epochs - step, jax.default_backend())
        del state
        with stop_on_signals(session, _log):
            for epoch in range(step // spe, config.epochs):
                where = "the train step"
                _train_epoch(session, train, epoch)
                accuracy = None
                if (epoch + 1) % config.eval_every_epochs == 0 or epoch + 1 == config.epochs:
                    where = "the eval step"
                    results = _evaluate(session, test, epoch)
                    accuracy = results["accuracy"]
                session.save(accuracy)
                if session.stop_signal is not None:  # arrived in the epoch's last step
                    _stop(session, epoch)
        if results is None:  # nothing left to train: the run was already complete
            _log(f"{workdir}: the run is complete ({config.epochs} epochs); evaluating only")
            where = "the eval step"
            results = _evaluate(session, test, config.epochs - 1, record=False)
    except jax.errors.JaxRuntimeError as error:
        if is_out_of_memory(error):
            lost = jax.process_count() > 1  # the others wait in a collective: no save completes
            raise OutOfMemoryError(out_of_memory_line(error, where, config, checkpoints, lost)) from None
        if jax.process_count() == 1:
            raise
        lost = True  # the other processes are gone: no multi-host save can complete
        raise PeerLostError(
            f"process {jax.process_index()}: lost contact with another process of this "
            f"multi-host run ({str(error).strip().splitlines()[0][:200]})") from None
    finally:
        if not lost:
            checkpoints.wait()
            checkpoints.close()
        if log is not None:
            log.close()
    return results


def _train_epoch(session: Session, source, epoch: int) -> None:
    run, config, spe = session.run, session.run.config, session.steps_per_epoch
    inputs = train_step_inputs(source, config, epoch=epoch, start_step=session.step % spe)
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
                   f"{session.checkpoints.root}." if good is not None
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

    for step_inputs in inputs:
        session.rstate, metrics = session.train_step(session.rstate, *step_inputs)
        session.step += 1
        if pending is not None:
            check(*pending)
        pending = (metrics, session.step)
        bar.update(1)
        # An epoch's last step is saved after its evaluation (the caller), a signal's stop too.
        every, inside = config.checkpoint_every_steps, session.step % spe
        stop = session.stop_signal is not None and inside
        if stop or (every and session.step % every == 0 and inside):
            check(*pending)
            pending = None
            session.save()
        if stop:
            bar.close()
            _stop(session, epoch)
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


def _stop(session: Session, epoch: int):
    """After a signal: the checkpoint just saved reaches the disk, then `Interrupted`."""
    session.checkpoints.wait()
    name = signal.Signals(session.stop_signal).name
    raise Interrupted(f"{name}: stopped at step {session.step} (epoch {epoch + 1}); the "
                      f"checkpoint is saved in {session.checkpoints.root}: run the same command "
                      f"to resume", session.stop_signal)


def _evaluate(session: Session, source, epoch: int, *, record: bool = True) -> dict:
    """Score the test split; log it and note whether it is the best so far, which the caller's
    checkpoint of this step records (record=False: re-scoring a finished run records nothing)."""
    rstate, step = session.rstate, session.step
    variables = rstate.variables
    start = time.perf_counter()
    predictions = predict_split(session.eval_step, variables, source,
                                global_batch_size=session.run.config.evaluation_batch_size)
    results = reports.evaluation_results(predictions.probs, predictions.labels,
                                         primary=session.run.primary,
                                         video_ids=predictions.video_ids)
    is_best = record and results["accuracy"] > session.best.accuracy
    if is_best:
        session.best = Best(results["accuracy"], step, epoch + 1)
    best = session.best
    results.update(step=step, epoch=epoch + 1,
                   best={"accuracy": best.accuracy, "step": best.step, "epoch": best.epoch})
    _log(f"eval epoch {epoch + 1} step {step}: {reports.summary_line(results)}"
         f"{'  (new best)' if is_best else ''}  [{time.perf_counter() - start:.1f}s]")
    if record and session.log is not None:
        session.log.write("eval", step, reports.eval_record(results, epoch + 1))
        reports.write_eval_reports(session.workdir, results, best=is_best, log=session.log)
    return results
