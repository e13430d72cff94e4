"""train_and_evaluate(config, workdir): the whole run, resumable from the workdir.

Resume order: the workdir's own latest checkpoint -> converted backbone weights
(--visual_init/--aural_init) -> random initialisation. A resumed run continues at the same step
with the same optimiser state and data order (the order is a function of seed and epoch, the
dropout keys of the rng in the state and the step), so it ends exactly where an uninterrupted
run ends.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import jax

from pisa_jax.train import reports
from pisa_jax.train.checkpoint import Checkpoints
from pisa_jax.train.config import (ConfigMismatchError, TrainConfig, TrainConfigError,
                                   config_differences, dataset_config_of, format_config,
                                   save_config)
from pisa_jax.train.distributed import (check_batch_split, is_lead_host, replicate,
                                        unreplicate_to_host)
from pisa_jax.train.evaluation import eval_record, score, write_eval_reports
from pisa_jax.train.metrics import summary_line
from pisa_jax.train.setup import InputSpec, build

CONFIG_FILE = "config.json"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the run stopped, checkpoints untouched."""


def check_workdir_config(config: TrainConfig, workdir: Path, *, override: bool) -> None:
    """Refuse to resume a run whose saved config differs, listing the differences."""
    path = workdir / CONFIG_FILE
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    diffs = config_differences(saved, config, ignore=TrainConfig.RESUMABLE_CHANGES)
    if diffs and not override:
        raise ConfigMismatchError(
            f"{workdir} holds a run with a different config:\n  " + "\n  ".join(diffs) +
            "\nUse another --workdir, the same flags, or --override_config to continue anyway.")
    if diffs:
        print("Overriding the workdir's config:\n  " + "\n  ".join(diffs))


class Subset:
    """The first n samples of a random-access source."""

    def __init__(self, source, n: int):
        self.source, self.n = source, min(n, len(source))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.source[i]


def subset(source, n: int):
    return Subset(source, n) if n else source


def _log(message: str) -> None:
    if is_lead_host():
        print(message, flush=True)


def train_and_evaluate(config: TrainConfig, workdir: str | Path, *, override_config: bool = False,
                       dataset=None, on_step: Callable[[int], None] | None = None) -> dict:
    """Train per `config` in `workdir` (resuming if it holds a run); returns the final results.

    dataset: an already opened dataset (tests); by default opened from config.dataset.
    on_step: called with the step count after each step (tests use it to kill the process).
    """
    from pisa_jax.data.pipeline import open_dataset, steps_per_epoch
    workdir = Path(workdir)
    check_batch_split(config.batch_size)  # before anything is loaded or compiled
    workdir.mkdir(parents=True, exist_ok=True)
    check_workdir_config(config, workdir, override=override_config)
    _log(f"pisa-jax training in {workdir} on {jax.device_count()} {jax.devices()[0].platform} "
         f"device(s), {jax.process_count()} process(es); config:\n{format_config(config)}")

    if dataset is None:
        dataset = open_dataset(config.dataset, config=dataset_config_of(config),
                               data_dir=config.data_dir)
    train_source = subset(dataset.train, config.train_subset)
    test_source = subset(dataset.test, config.test_subset)
    spe = steps_per_epoch(len(train_source), config.batch_size)
    if spe < 1:
        raise TrainConfigError(f"batch_size={config.batch_size} is larger than the training split "
                               f"({len(train_source)} samples)")
    spec = InputSpec.of_dataset(dataset)
    run = build(config, spec, total_steps=spe * config.epochs)
    for note in run.notes:
        _log(note)

    checkpoints = Checkpoints(workdir)
    meta = {"best_accuracy": -1.0, "best_step": None, "best_epoch": None}
    state = run.state
    if checkpoints.latest_step() is not None:
        state, meta = checkpoints.restore(run.state)
        _log(f"resumed from {workdir}/checkpoints/latest at step {int(state.step)}")
    if is_lead_host():
        save_config(config, workdir / CONFIG_FILE)
        spec.save(workdir)
    step = int(state.step)
    log = reports.MetricsLog(workdir, resume_step=step, tensorboard=True) if is_lead_host() else None
    train_step, eval_step = run.train_step(), run.eval_step()
    rstate = replicate(state)
    del state

    def save_latest(epoch: float):
        checkpoints.save_latest(unreplicate_to_host(rstate), {**meta, "epoch": epoch})

    results = None
    try:
        for epoch in range(step // spe, config.epochs):
            rstate, step = _train_epoch(run, train_step, rstate, train_source, epoch, spe, step,
                                        log, checkpoints, meta, on_step, workdir)
            last = epoch + 1 == config.epochs
            if (epoch + 1) % config.eval_every_epochs == 0 or last:
                results = _evaluate(run, eval_step, rstate, test_source, epoch, step, meta, log,
                                    checkpoints, workdir)
            save_latest(epoch + 1)
        if results is None:  # nothing left to train: the run was already complete
            _log(f"{workdir}: the run is complete ({config.epochs} epochs); evaluating only")
            results = _evaluate(run, eval_step, rstate, test_source, config.epochs - 1, step,
                                meta, None, None, workdir)
    finally:
        checkpoints.wait()
        checkpoints.close()
        if log is not None:
            log.close()
    return results


def _train_epoch(run, train_step, rstate, source, epoch, spe, step, log, checkpoints, meta,
                 on_step, workdir):
    from tqdm import tqdm

    from pisa_jax.data.pipeline import prefetch_to_device, train_batches
    config = run.config
    batches = train_batches(source, global_batch_size=config.batch_size,
                            num_local_devices=jax.local_device_count(), seed=config.seed,
                            epoch=epoch, start_step=step % spe, flip=config.flip)
    bar = tqdm(total=spe, initial=step % spe, desc=f"epoch {epoch + 1}/{config.epochs}",
               disable=not is_lead_host(), dynamic_ncols=True, leave=True)
    sums, count, pending = {}, 0, None
    start = time.perf_counter()

    def check(metrics, at_step):
        """Host copy of one step's metrics; stop on a non-finite loss (one step behind the
        device, so the host does not stall the device every step)."""
        nonlocal count
        values = {k: float(v[0]) for k, v in jax.device_get(metrics).items()}
        if not math.isfinite(values["loss"]):
            checkpoints.wait()
            good = checkpoints.latest_step()
            raise NonFiniteLossError(
                f"loss is {values['loss']} at step {at_step} (epoch {epoch + 1}); training stopped. "
                + (f"The last good checkpoint (step {good}) is kept in {workdir}/checkpoints/latest."
                   if good is not None else "No checkpoint had been saved yet."))
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{values['loss']:.3f}",
                        acc=f"{100 * values['accuracy_' + run.primary]:.1f}%",
                        samples_s=f"{count * config.batch_size / elapsed:.1f}")

    for batch in prefetch_to_device(batches, size=2):
        rstate, metrics = train_step(rstate, batch)
        step += 1
        if pending is not None:
            check(*pending)
        pending = (metrics, step)
        bar.update(1)
        if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0 and step % spe:
            check(*pending)
            pending = None
            checkpoints.save_latest(unreplicate_to_host(rstate), {**meta, "epoch": step / spe})
        if on_step is not None:
            on_step(step)
    if pending is not None:
        check(*pending)
    bar.close()
    elapsed = time.perf_counter() - start
    if log is not None and count:
        record = {k: (100 * v / count if k.startswith("accuracy") else v / count)
                  for k, v in sums.items()}
        log.write("train", step, {"epoch": epoch + 1, **record, "seconds": elapsed,
                                  "samples_per_s": count * config.batch_size / elapsed})
    return rstate, step


def _evaluate(run, eval_step, rstate, source, epoch, step, meta, log, checkpoints, workdir):
    """Score the test split; log it, and keep it as the best checkpoint if it is (both skipped
    when log / checkpoints are None: re-scoring a finished run records nothing new)."""
    variables = {"params": rstate.params, "batch_stats": rstate.batch_stats}
    start = time.perf_counter()
    results = score(eval_step, variables, source, global_batch_size=run.config.batch_size,
                    primary=run.primary)
    accuracy = results["accuracy"]
    best = checkpoints is not None and accuracy > meta["best_accuracy"]
    if best:
        meta.update(best_accuracy=accuracy, best_step=step, best_epoch=epoch + 1)
        checkpoints.save_best(unreplicate_to_host(rstate), {**meta, "epoch": epoch + 1})
    results.update(step=step, epoch=epoch + 1,
                   best={"accuracy": meta["best_accuracy"], "step": meta["best_step"],
                         "epoch": meta["best_epoch"]})
    _log(f"eval epoch {epoch + 1} step {step}: {summary_line(results)}"
         f"{'  (new best)' if best else ''}  [{time.perf_counter() - start:.1f}s]")
    if log is not None:
        log.write("eval", step, eval_record(results, epoch + 1))
        write_eval_reports(workdir, results, best=best)
    return results

