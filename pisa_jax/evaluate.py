"""Re-score a trained run's checkpoint on the test split.

    python -m pisa_jax.evaluate --workdir runs/r18 [--checkpoint best|latest] [--data_dir DIR]

Reads the run's config.json and inputs.json, restores the checkpoint, scores every test sample
(all heads: accuracy, per-class accuracy, MAE in levels, Spearman) and writes
eval_<checkpoint>.json and eval_<checkpoint>_confusion.png into the workdir.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHECKPOINTS = ("best", "latest")


def load_trained(workdir: str | Path, which: str = "best"):
    """(components, state) of a training workdir: the model its config describes, with the
    parameters and BatchNorm statistics of its `which` checkpoint (a host TrainState)."""
    from pisa_jax.train.checkpoint import Checkpoints, CheckpointError
    from pisa_jax.train.config import load_config
    from pisa_jax.train.loop import CONFIG_FILE
    from pisa_jax.train.setup import InputSpec, build
    workdir = Path(workdir)
    if which not in CHECKPOINTS:
        raise CheckpointError(f"--checkpoint {which!r}: expected one of {CHECKPOINTS}")
    if not (workdir / CONFIG_FILE).is_file():
        raise CheckpointError(f"{workdir}: no {CONFIG_FILE} (not a training workdir?)")
    config = load_config(workdir / CONFIG_FILE)
    run = build(config, InputSpec.load(workdir), load_init_weights=False)
    checkpoints = Checkpoints(workdir, read_only=True)
    try:
        state, _ = checkpoints.restore(run.state, which)
    finally:
        checkpoints.close()
    return run, state


def evaluate_workdir(workdir: str | Path, which: str = "best", *, data_dir: str | None = None,
                     batch_size: int | None = None) -> dict:
    import jax

    from pisa_jax.data import open_dataset
    from pisa_jax.train import reports
    from pisa_jax.train.config import dataset_config_of
    from pisa_jax.train.distributed import replicate
    from pisa_jax.train.evaluation import score
    from pisa_jax.train.loop import subset
    from pisa_jax.train.metrics import summary_line
    workdir = Path(workdir)
    run, state = load_trained(workdir, which)
    config = run.config
    dataset = open_dataset(config.dataset, config=dataset_config_of(config),
                           data_dir=data_dir or config.data_dir)
    test = subset(dataset.test, config.test_subset)
    devices = jax.device_count()
    batch = batch_size or config.batch_size
    batch = -(-batch // devices) * devices  # evaluation batches only need to split evenly
    variables = replicate({"params": state.params, "batch_stats": state.batch_stats})
    results = score(run.eval_step(), variables, test, global_batch_size=batch, primary=run.primary)
    results.update(checkpoint=which, step=int(state.step))
    if jax.process_index() == 0:
        reports.write_results(workdir, results, name=f"eval_{which}.json")
        reports.plot_confusion(results, workdir / f"eval_{which}_confusion.png")
        print(f"{workdir} ({which} checkpoint, step {int(state.step)}): {summary_line(results)}")
        for head, scores in results["heads"].items():
            per_class = "  ".join(f"{lvl}:{'-' if a is None else f'{a:.0f}'}"
                                  for lvl, a in scores["per_class_accuracy"].items())
            print(f"  {head:<10} per-level accuracy (%)  {per_class}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pisa_jax.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="the training run's workdir")
    parser.add_argument("--checkpoint", default="best", choices=CHECKPOINTS,
                        help="which checkpoint to score (default: best)")
    parser.add_argument("--data_dir", default=None,
                        help="where the dataset lives, if not where training found it")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="evaluation batch (default: the run's, rounded up to the devices)")
    args = parser.parse_args(argv)
    from pisa_jax.train.errors import user_errors
    try:
        evaluate_workdir(args.workdir, args.checkpoint, data_dir=args.data_dir,
                         batch_size=args.batch_size)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
