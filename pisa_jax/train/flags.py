"""The training command (train.py, `python -m pisa_jax.train`, `pisa-train`): one flag per
TrainConfig field, plus run-environment flags.

A preset (--preset, default "paper") sets the starting values; flags given explicitly override
them. Run-environment flags (workdir, multi-host coordinates, --override_config) are not part of
the config: they do not change what is computed.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from typing import Any, Sequence

from pisa_jax import cli, malloc
from pisa_jax.train.config import PRESETS, TrainConfig, TrainConfigError, dataset_config_of, preset


@dataclasses.dataclass(frozen=True)
class RunArgs:
    config: TrainConfig
    workdir: str
    override_config: bool
    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None
    restart: bool = False
    peer_timeout_s: int = 60


def _parse_optional_str(text: str) -> str | None:
    return None if text.lower() in ("", "none") else text


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _str_tuple(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _flag_kwargs(field: dataclasses.Field, hints: dict[str, Any]) -> dict[str, Any]:
    """argparse arguments for one config field, from its type annotation."""
    kind = hints[field.name]
    args = typing.get_args(kind)
    shown = field.default
    if isinstance(shown, tuple):
        shown = ",".join(map(str, shown))
    help_text = f"{field.metadata['help']} [{'paper' if field.metadata['paper'] else 'default'}: {shown}]"
    if kind is bool:
        return dict(action=argparse.BooleanOptionalAction, help=help_text)
    if kind in (int, float):
        return dict(type=kind, metavar=kind.__name__.upper(), help=help_text)
    if kind is str:
        return dict(type=str, metavar="STR", help=help_text)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and str in args:
        return dict(type=_parse_optional_str, metavar="STR|none", help=help_text)
    if typing.get_origin(kind) is tuple and args[0] is int:
        return dict(type=_int_tuple, metavar="A,B", help=help_text)
    if typing.get_origin(kind) is tuple and args[0] is str:
        return dict(type=_str_tuple, metavar="A,B", help=help_text)
    raise TypeError(f"no flag type for config field {field.name}: {kind}")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.argument_parser(
        "train.py",
        "Train the audio-visual piano skill model (Zhao, Wang, Cai 2023) with data-parallel "
        "pmap over all devices; resumes from the workdir.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS)  # so we know which flags were given explicitly
    run = parser.add_argument_group("run")
    run.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                     help="starting values: 'paper' (the paper's recipe), 'demo' (CPU demo on the "
                          "synthetic data, minutes), 'smoke' (tests)")
    run.add_argument("--workdir",  # no default in the namespace: the help names the real one
                     help="directory for checkpoints, config.json, metrics and reports; "
                          "re-running the same command resumes from it (default: "
                          "runs/<visual>_<aural>_<dataset>, e.g. runs/r18_r18_synthetic_full)")
    run.add_argument("--override_config", action="store_true", default=False,
                     help="resume even if the workdir's config.json differs from these flags")
    run.add_argument("--restart", action="store_true", default=False,
                     help="start over: move the workdir's run (config, metrics, checkpoints, "
                          "reports) into WORKDIR/previous_runs/<time>/ first; nothing is deleted")
    multi = parser.add_argument_group("multi-host (leave unset on one machine; cluster "
                                      "environments such as SLURM are detected)")
    multi.add_argument("--coordinator_address", type=str, default=None,
                       help="host:port of process 0 for jax.distributed.initialize")
    multi.add_argument("--num_processes", type=int, default=None, help="number of processes (hosts)")
    multi.add_argument("--process_id", type=int, default=None, help="index of this process")
    multi.add_argument("--peer_timeout_s", type=int, default=60,
                       help="seconds a process may go silent: after half of it the others "
                            "stop with one error line (jax's own heartbeat, which aborts them "
                            "with a page of logs, is set to twice it)")

    fields = parser.add_argument_group("config (one flag per TrainConfig field)")
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        fields.add_argument(f"--{field.name}", **_flag_kwargs(field, hints))
    return parser


def parse_args(argv: Sequence[str] | None = None) -> RunArgs:
    parser = build_parser()
    ns = vars(parser.parse_args(argv))
    field_names = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: v for k, v in ns.items() if k in field_names}
    config = preset(ns["preset"], **overrides)  # TrainConfigError: one line, nothing created
    workdir = ns.get("workdir")
    if workdir is None:
        workdir = default_workdir(config)
    elif not workdir.strip():
        raise TrainConfigError("--workdir: empty; give a directory for the run")
    if ns["peer_timeout_s"] < 1:
        raise TrainConfigError(f"--peer_timeout_s={ns['peer_timeout_s']}: expected >= 1 second")
    return RunArgs(config=config, workdir=workdir, override_config=ns["override_config"],
                   coordinator_address=ns["coordinator_address"],
                   num_processes=ns["num_processes"], process_id=ns["process_id"],
                   restart=ns["restart"], peer_timeout_s=ns["peer_timeout_s"])


def default_workdir(config: TrainConfig) -> str:
    """runs/<visual>_<aural>_<dataset>: e.g. runs/r18_r18_pisa_consecutive, runs/c3d_r18_..."""
    visual = "c3d" if config.visual_backbone == "c3d" else f"r{config.depths[0]}"
    branches = {"visual": visual, "aural": f"r{config.depths[1]}"}
    model = "_".join(branches[m] for m in ("visual", "aural") if m in config.modalities)
    return f"runs/{model}_{config.dataset}_{dataset_config_of(config)}"


def _main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # jax.distributed must start before anything else runs on a device.
    from pisa_jax.train.distributed import initialize
    initialize(args.coordinator_address, args.num_processes, args.process_id,
               timeout_s=args.peer_timeout_s)
    from pisa_jax.compile_cache import describe, enable_compilation_cache
    from pisa_jax.train.distributed import watch_peers
    from pisa_jax.train.loop import train_and_evaluate
    from pisa_jax.train.stops import Interrupted, PeerLostError
    stop_watching = watch_peers(args.peer_timeout_s, _stop_now)
    print(f"workdir: {args.workdir}", flush=True)
    print(describe(enable_compilation_cache()), flush=True)  # before anything is compiled
    print(malloc.describe(), flush=True)
    try:
        train_and_evaluate(args.config, args.workdir, override_config=args.override_config,
                           restart=args.restart)
    except Interrupted as stop:
        print(stop, file=sys.stderr)
        return stop.exit_code
    except PeerLostError as error:
        _stop_now(str(error))
    finally:
        stop_watching()
    return 0


def _stop_now(problem: str) -> None:
    """A multi-host run whose other processes are gone: one line, then exit at once.
    jax.distributed's exit handler would wait for the dead process at its shutdown barrier,
    then abort with a page of coordination-service logs."""
    print(f"error: {problem}; stopped. Restart every process with the same command: they "
          f"resume from the workdir's latest checkpoint", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def command() -> int:
    """The command line's entry point (see `pisa_jax.cli.run_command`)."""
    return cli.run_command(_main)
