"""python -m pisa_jax.reproduce EXPERIMENT: run every split x cell x seed not done yet, then
write <workdir>/<experiment>/RESULTS.md, results.csv and the figure.

    python -m pisa_jax.reproduce table4 --seeds 3                       # PISA, the paper's recipe
    python -m pisa_jax.reproduce figure7 --preset demo --seeds 2        # synthetic data, CPU
    python -m pisa_jax.reproduce table4 --dry_run                       # what would run

Each run is an ordinary training workdir (<workdir>/<experiment>/<split>/<cell>/seed<k>), made by
the same code as train.py; re-running the command skips finished runs and resumes a killed one
from its latest checkpoint. Experiments: table4 (Tables 4 and 6: depths and the C3D baseline),
table5 (seconds per epoch), table7 (pretraining), figure6 (unimodal vs multimodal), figure7
(dropout). Their cells, flags and the paper's figures: pisa_jax/reproduce/experiments.py.
"""
from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence

from pisa_jax import cli, malloc
from pisa_jax.reproduce.experiments import EXPERIMENTS
from pisa_jax.reproduce.plan import (CONFLICT, DONE, PARTIAL, TODO, Choices, PlanError,
                                     format_plan, missing_weights, plan)
from pisa_jax.train.config import DATASETS, PRESETS, dataset_config_of, preset

# The official split and the one with no recording on both sides, reported side by side; the
# narrow CPU recipes read the builder's small twins of them (2 clips x 8 frames of 32x32).
PISA_SPLITS = ("consecutive", "consecutive_by_source")
PISA_CPU_SPLITS = ("consecutive_demo", "consecutive_by_source_demo")


def _names(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def build_parser():
    parser = cli.argument_parser("python -m pisa_jax.reproduce", __doc__)
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--seeds", type=int, default=3, help="runs per cell, seeds 0..N-1 (default 3)")
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                        help="the training recipe every cell starts from: paper (default), demo "
                             "(synthetic data on a CPU in minutes), smoke (tests)")
    parser.add_argument("--dataset", default=None, choices=DATASETS,
                        help="default: pisa with --preset paper, else the preset's")
    parser.add_argument("--dataset_configs", type=_names, default=None, metavar="A,B",
                        help="the splits to run, side by side (dataset configs; default for pisa: "
                             f"{','.join(PISA_SPLITS)} with --preset paper, else "
                             f"{','.join(PISA_CPU_SPLITS)}; for synthetic: the preset's size)")
    parser.add_argument("--data_dir", default=None, help="TFDS data directory of the dataset")
    parser.add_argument("--workdir", default=None,
                        help="where the runs and RESULTS.md go (default runs/<preset>)")
    parser.add_argument("--weights_dir", default="checkpoints",
                        help="folder of converted pretrained weights (r3d18_hara, r2d18_imagenet, "
                             "c3d_sports1m ...); 'none' trains every cell from scratch (default "
                             "checkpoints; narrow presets never use them)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--cells", type=_names, default=(), metavar="A,B",
                        help="run only these cells (default: all)")
    parser.add_argument("--dry_run", action="store_true", help="list the runs and their state only")
    parser.add_argument("--report_only", action="store_true",
                        help="train nothing: write the report from the runs finished so far")
    return parser


def choices_of(args) -> Choices:
    dataset = args.dataset or ("pisa" if args.preset == "paper" else preset(args.preset).dataset)
    splits = args.dataset_configs
    if not splits and dataset == "pisa":
        splits = PISA_SPLITS if args.preset == "paper" else PISA_CPU_SPLITS
    elif not splits:
        splits = (dataset_config_of(preset(args.preset, dataset=dataset)),)
    weights = None if args.weights_dir.lower() == "none" else args.weights_dir
    return Choices(preset=args.preset, dataset=dataset, splits=tuple(splits), seeds=args.seeds,
                   workdir=args.workdir or f"runs/{args.preset}", weights_dir=weights,
                   data_dir=args.data_dir, epochs=args.epochs, cells=tuple(args.cells))


def _device() -> str:
    import jax
    devices = jax.devices()
    return f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform})"


def share_compilations(workdir: str) -> None:
    """The seeds of a cell compile identical programs: JAX's persistent compilation cache (the
    training commands' one, `pisa_jax.compile_cache`) compiles each once per sweep. It takes
    effect only before the process has compiled anything (a fresh command)."""
    from pisa_jax.compile_cache import describe, enable_compilation_cache
    print(describe(enable_compilation_cache()), flush=True)


def run_sweep(runs, *, log=print) -> list[str]:
    """Train every run not done, in order; returns the failures (a non-finite loss does not
    stop the sweep; anything else does)."""
    import jax

    from pisa_jax.reproduce.plan import RESULTS_FILE, read_results
    from pisa_jax.train import NonFiniteLossError, train_and_evaluate
    from pisa_jax.train.reports import write_results
    pending = [r for r in runs if r.status in (TODO, PARTIAL)]
    failures = []
    for number, run in enumerate(pending, 1):
        log(f"[{number}/{len(pending)}] {run.split}/{run.cell.name}/seed{run.seed}"
            f"{' (resuming)' if run.status == PARTIAL else ''} -> {run.workdir}")
        try:
            results = train_and_evaluate(run.config, run.workdir)
        except NonFiniteLossError as error:
            failures.append(f"{run.workdir}: {error}")
            log(f"failed: {error}")
        else:
            # A run found complete is only re-scored, which records nothing: keep its final
            # scores where the report reads them.
            saved = read_results(run.workdir / RESULTS_FILE)
            if results is not None and (saved or {}).get("epoch") != run.config.epochs:
                write_results(run.workdir, results)
        jax.clear_caches()  # every run compiles its own steps: keep the memory of one
    return failures


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    experiment = EXPERIMENTS[args.experiment]
    choices = choices_of(args)
    runs = plan(experiment, choices)
    print(f"{experiment.name}: {experiment.title}\n{format_plan(runs)}", flush=True)
    missing = "" if args.report_only else missing_weights(runs)
    if args.dry_run:
        if missing:
            print(f"note: {missing}")
        return 0
    if missing:
        raise PlanError(missing)
    conflicts = [r for r in runs if r.status == CONFLICT]
    if conflicts:
        raise PlanError("runs in the workdir were made with other settings (use another "
                        "--workdir or the same flags):\n  " + "\n  ".join(
                            f"{r.workdir}: {r.detail}" for r in conflicts))
    if not args.report_only:
        share_compilations(choices.workdir)
        print(malloc.describe(), flush=True)
    from pisa_jax.train import Interrupted
    try:
        failures = [] if args.report_only else run_sweep(runs)
    except Interrupted as stop:  # the run in progress saved its checkpoint: the sweep resumes
        print(f"{stop}\nrun the same command to resume the sweep", file=sys.stderr)
        return stop.exit_code
    from pisa_jax.reproduce.report import write_report
    runs = plan(experiment, choices)  # the state after the sweep
    # The command that makes these runs (--report_only only rewrites their report).
    command = "python -m pisa_jax.reproduce " + shlex.join(a for a in argv if a != "--report_only")
    path = write_report(experiment, runs, choices, command, _device())
    done = sum(r.status == DONE for r in runs)
    print(f"\n{path} ({done} of {len(runs)} runs finished)\n")
    print(path.read_text().split("\n## `")[0].rstrip())  # the side-by-side summary
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def command() -> int:
    """The command line's entry point (see `pisa_jax.cli.run_command`)."""
    return cli.run_command(_main)
