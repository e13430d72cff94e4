"""Re-score a trained run's checkpoint on the test split.

    python -m pisa_jax.evaluate --workdir runs/r18 [--checkpoint best|latest] [--data_dir DIR]

Reads the run's config.json and inputs.json, restores the checkpoint, scores every test sample
(all heads: accuracy, per-class accuracy, MAE in levels, Spearman) and every test video (the
mean of its samples' class probabilities decides its level: video-level accuracy), and writes
eval_<checkpoint>.json, eval_<checkpoint>_videos.csv (per video: true level, predicted level and
number of samples, per head) and eval_<checkpoint>_confusion.png into the workdir.
"""
from __future__ import annotations

import sys
from pathlib import Path

from pisa_jax import cli
from pisa_jax.errors import UserError


class EvaluateError(UserError):
    """A flag value evaluation cannot use."""


class ScoresNotSavedError(UserError):
    """The scores were computed and printed but could not be written into the workdir."""

    def __init__(self, message: str, results: dict):
        super().__init__(message)
        self.results = results


def evaluate_workdir(workdir: str | Path, which: str = "best", *, data_dir: str | None = None,
                     batch_size: int | None = None) -> dict:
    """Scores of the `which` checkpoint on the test split, printed and saved into the workdir
    (ScoresNotSavedError, carrying them, if the workdir cannot be written)."""
    if batch_size is not None and batch_size < 1:
        raise EvaluateError(f"--batch_size={batch_size}: expected a positive number of samples")
    import jax

    from pisa_jax.cudnn import warn_if_bf16_unsafe
    from pisa_jax.train import figures, reports, videos
    from pisa_jax.train.checkpoints import load_trained
    from pisa_jax.train.distributed import replicate
    from pisa_jax.train.loop import open_training_data
    from pisa_jax.train.steps import make_eval_step, predict_split
    workdir = Path(workdir)
    run, state = load_trained(workdir, which)
    if jax.process_index() == 0:
        warn_if_bf16_unsafe(run.config.precision)
    dataset = open_training_data(run.config, data_dir)
    devices = jax.device_count()
    batch = batch_size or run.config.evaluation_batch_size
    batch = -(-batch // devices) * devices  # evaluation batches only need to split evenly
    variables = replicate(state.variables)
    predictions = predict_split(make_eval_step(run.eval_model, run.config), variables,
                                dataset.test, global_batch_size=batch)
    results = reports.evaluation_results(predictions.probs, predictions.labels,
                                         primary=run.primary, video_ids=predictions.video_ids)
    results.update(checkpoint=which, step=int(state.step))
    if jax.process_index() == 0:  # the scores first: they are shown even if they cannot be saved
        print(f"{workdir} ({which} checkpoint, step {int(state.step)}): "
              f"{reports.summary_line(results)}")
        for head, scores in results["heads"].items():
            per_class = "  ".join(f"{lvl}:{'-' if a is None else f'{a:.0f}'}"
                                  for lvl, a in scores["per_class_accuracy"].items())
            print(f"  {head:<10} per-level accuracy (%)  {per_class}")
        for row in results.get("videos", []):
            print(f"  video {row['video_id']:>5}  true level {row['true_level']:>2}  predicted "
                  f"{row['predicted_level'][run.primary]:>2}  ({row['samples']} samples)")
        try:
            reports.write_results(workdir, results, name=f"eval_{which}.json")
            if "videos" in results:
                videos.write_table(workdir / f"eval_{which}_videos.csv", results["videos"])
            figures.plot_confusion(results, workdir / f"eval_{which}_confusion.png")
        except OSError as error:
            raise ScoresNotSavedError(
                f"{workdir}: cannot save the scores above into it ({error.strerror or error}); "
                f"they are printed only", results) from None
    return results


def _main(argv=None) -> int:
    parser = cli.argument_parser("python -m pisa_jax.evaluate", __doc__)
    parser.add_argument("--workdir", required=True, help="the training run's workdir")
    from pisa_jax.train.checkpoints import SERIES  # here: orbax and JAX load after the allocator
    parser.add_argument("--checkpoint", default="best", choices=SERIES,
                        help="which checkpoint to score (default: best)")
    parser.add_argument("--data_dir", default=None,
                        help="where the dataset lives, if not where training found it")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="evaluation batch (default: the run's eval_batch_size, else its "
                             "batch_size, rounded up to the devices)")
    args = parser.parse_args(argv)
    from pisa_jax.compile_cache import enable_compilation_cache
    enable_compilation_cache()  # a second evaluation at the same shapes loads its eval step
    evaluate_workdir(args.workdir, args.checkpoint, data_dir=args.data_dir,
                     batch_size=args.batch_size)
    return 0


def main(argv=None) -> int:
    return cli.run(_main, argv)


def command() -> int:
    """The command line's entry point (see `pisa_jax.cli.run_command`)."""
    return cli.run_command(_main)


if __name__ == "__main__":
    sys.exit(command())
