"""From an experiment and the command's choices to the runs: one ordinary training workdir per
split x cell x seed, and what each one's state is (done, partly done, to run, skipped).

    <workdir>/<experiment>/<split>/<cell>/seed<k>/      config.json, checkpoints/, results.json ...

A run is done when its results.json is the evaluation after its last epoch. Anything else is run
through `pisa_jax.train.train_and_evaluate`, which resumes a partly done run from its own latest
checkpoint: a killed sweep loses at most the epoch in progress.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pisa_jax.errors import UserError
from pisa_jax.reproduce.experiments import Cell, Experiment
from pisa_jax.train.config import (CONFIG_FILE, TrainConfig, TrainConfigError, builder_config_of,
                                   config_differences, preset)

DONE, PARTIAL, TODO, SKIPPED, CONFLICT = "done", "partial", "to run", "skipped", "conflict"
RESULTS_FILE = "results.json"
FULL_WIDTH = 64  # the released weights are full-width nets: narrower recipes train from scratch


class PlanError(UserError):
    """Choices that cannot make the experiment (unknown cells, missing weights ...)."""


@dataclasses.dataclass(frozen=True)
class Choices:
    """What the command line chose, beyond the experiment."""
    preset: str = "paper"
    dataset: str = "pisa"
    splits: tuple[str, ...] = ("consecutive", "consecutive_by_source")  # dataset configs
    seeds: int = 3
    workdir: str = "runs/paper"
    weights_dir: str | None = "checkpoints"   # None: no pretrained weights
    data_dir: str | None = None
    epochs: int | None = None
    cells: tuple[str, ...] = ()               # () = every cell


@dataclasses.dataclass(frozen=True)
class Run:
    split: str
    cell: Cell
    seed: int
    workdir: Path
    config: TrainConfig | None    # None when skipped
    status: str
    detail: str = ""              # why skipped / where a partial run stands / the conflict


def pretrained_available(choices: Choices, config: TrainConfig) -> bool:
    return choices.weights_dir is not None and config.base_width == FULL_WIDTH


def clip_shape_of(split: str, dataset: str) -> tuple[int, int] | None:
    """(frames per clip, frame size) of a dataset config, from its builder definition (nothing
    needs to be built); None for a config the builder does not define (one's own annotations:
    training checks it then)."""
    from data_builders.pisa.build import make_config
    from pisa_jax.errors import DataError
    name = builder_config_of(TrainConfig(dataset=dataset, dataset_config=split))
    try:
        builder_config = make_config(name)
    except DataError:
        return None
    return builder_config.clip_length, builder_config.image_size


def _skip_reason(cell: Cell, config: TrainConfig, choices: Choices) -> str:
    from pisa_jax.train.state import InputSpec, check_clip_shape
    if cell.needs_pretrained and not pretrained_available(choices, config):
        return ("needs the converted pretrained weights, which " +
                ("--weights_dir none turned off" if choices.weights_dir is None else
                 f"do not fit this recipe's narrow nets (base_width {config.base_width})"))
    shape = clip_shape_of(config.dataset_config, config.dataset)
    try:
        if shape is not None:
            check_clip_shape(config, InputSpec(1, shape[0], shape[1], (), 10))
    except TrainConfigError as error:
        return str(error)
    return ""


def cell_config(experiment: Experiment, cell: Cell, split: str, seed: int,
                choices: Choices) -> TrainConfig:
    """recipe < experiment's fixed flags < cell's flags < the command's dataset/seed/epochs."""
    overrides = {**experiment.fixed, **cell.flags, "dataset": choices.dataset,
                 "dataset_config": split, "data_dir": choices.data_dir, "seed": seed}
    if choices.epochs is not None:
        overrides["epochs"] = choices.epochs
    config = preset(choices.preset, **overrides)
    if cell.init and pretrained_available(choices, config):
        weights = Path(choices.weights_dir)
        config = config.replace(**{f"{modality}_init": str(weights / folder)
                                   for modality, folder in cell.init.items()})
    return config


def run_status(workdir: Path, config: TrainConfig) -> tuple[str, str]:
    saved = workdir / CONFIG_FILE
    if not saved.is_file():
        return TODO, ""
    try:
        differences = config_differences(json.loads(saved.read_text()), config,
                                         ignore=TrainConfig.RESUMABLE_CHANGES)
    except (OSError, ValueError) as error:
        return CONFLICT, f"{saved}: unreadable ({error})"
    if differences:
        return CONFLICT, "; ".join(differences)
    results = read_results(workdir / RESULTS_FILE)
    if results is not None and results.get("epoch") == config.epochs:
        return DONE, ""
    epoch = results.get("epoch") if results else None
    return PARTIAL, f"evaluated at epoch {epoch}" if epoch else "started"


def read_results(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def plan(experiment: Experiment, choices: Choices) -> list[Run]:
    """Every split x cell x seed of the experiment with its status; checks the choices first."""
    names = [c.name for c in experiment.cells]
    unknown = [c for c in choices.cells if c not in names]
    if unknown:
        raise PlanError(f"--cells {','.join(unknown)}: not cells of {experiment.name} "
                        f"(its cells: {', '.join(names)})")
    if choices.seeds < 1:
        raise PlanError(f"--seeds {choices.seeds}: expected at least 1")
    cells = [c for c in experiment.cells if not choices.cells or c.name in choices.cells]
    runs = []
    for split in choices.splits:
        for cell in cells:
            for seed in range(choices.seeds):
                try:
                    config = cell_config(experiment, cell, split, seed, choices)
                except TrainConfigError as error:
                    raise PlanError(f"{experiment.name} cell {cell.name}, split {split}: "
                                    f"{error}") from None
                workdir = Path(choices.workdir) / experiment.name / split / cell.name / f"seed{seed}"
                reason = _skip_reason(cell, config, choices)
                if reason:
                    runs.append(Run(split, cell, seed, workdir, None, SKIPPED, reason))
                    continue
                status, detail = run_status(workdir, config)
                runs.append(Run(split, cell, seed, workdir, config, status, detail))
    return runs


def missing_weights(runs: list[Run]) -> str:
    """'' when every converted weights folder the runs still need exists, else what to do."""
    missing = sorted({path for r in runs if r.config is not None and r.status != DONE
                      for path in (r.config.visual_init, r.config.aural_init)
                      if path is not None and not Path(path).is_dir()})
    if not missing:
        return ""
    return ("converted pretrained weights missing: " + ", ".join(missing) + ". Convert them "
            "(README, 'Pretrained weights'), point --weights_dir at them, or pass "
            "--weights_dir none to train every cell from scratch")


def format_plan(runs: list[Run]) -> str:
    lines = []
    for r in runs:
        where = f"{r.split}/{r.cell.name}/seed{r.seed}"
        detail = r.detail
        if r.config is not None and r.status in (TODO, PARTIAL):
            flags = {**r.cell.flags, "visual_init": r.config.visual_init,
                     "aural_init": r.config.aural_init}
            shown = " ".join(f"--{k} {','.join(map(str, v)) if isinstance(v, tuple) else v}"
                             for k, v in flags.items() if v is not None)
            detail = f"{detail}: {shown}" if detail else shown
        lines.append(f"  {r.status:<8} {where:<40} {detail}".rstrip())
    counts = {s: sum(r.status == s for r in runs) for s in (DONE, PARTIAL, TODO, SKIPPED, CONFLICT)}
    lines.append("  " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(lines)
