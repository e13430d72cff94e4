"""Building a PISA-layout dataset: check everything, then write through TFDS.

Nothing is written when a check fails (unless skip_bad); TFDS writes into a temporary
`incomplete.*` folder and renames it only when every split is complete, so an interrupted build
never leaves a folder that loads as a dataset. `ensure_synthetic` renders and builds the
embedded synthetic dataset the first time a caller (train.py, the tests) asks for it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import tensorflow_datasets as tfds

from data_builders.pisa import synthetic
from data_builders.pisa.pisa_dataset_builder import SKIPPED_FILE, Builder, PisaConfig
from pisa_jax.errors import DataError

SYNTHETIC_SOURCES = "pisa_synthetic"  # rendered videos: <data_dir>/downloads/manual/pisa_synthetic/


@dataclasses.dataclass(frozen=True)
class BuildResult:
    path: Path                    # <data_dir>/pisa/<config>/<version>
    split_sizes: dict[str, int]
    skipped: list[dict]           # [{"key", "split", "problems"}], also in skipped_samples.json
    data_dir: Path
    manual_dir: Path              # the videos (and, for the synthetic data, annotations/) it read


def default_data_dir() -> str:
    """TFDS's own default: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def make_config(name: str = "consecutive", annotations: str | None = None) -> PisaConfig:
    """A named config; with `annotations`, a copy reading them, named <config>_<file stem>."""
    known = {c.name: c for c in Builder.BUILDER_CONFIGS}
    if name not in known:
        raise DataError([(name, f"unknown config; choose one of {sorted(known)}")])
    if annotations is None:
        return known[name]
    stem = Path(annotations).stem.replace("-", "_").replace(".", "_")
    return dataclasses.replace(known[name], name=f"{name}_{stem}",
                               annotations=os.path.abspath(annotations))


def build_dataset(config: str | PisaConfig, manual_dir: str | os.PathLike,
                  data_dir: str | os.PathLike | None = None, *, skip_bad: bool = False,
                  num_workers: int | None = None) -> BuildResult:
    """Checks every video, then writes the dataset (array_record); reuses a finished one."""
    config = make_config(config) if isinstance(config, str) else config
    data_dir = os.fspath(data_dir or default_data_dir())
    builder = Builder(config=config, data_dir=data_dir, file_format="array_record",
                      skip_bad=skip_bad, num_workers=num_workers)
    path = Path(builder.data_path)
    if not (path / "dataset_info.json").is_file():
        checked = builder.check(os.path.abspath(manual_dir))
        problems = checked[2]
        if problems and not skip_bad:
            raise DataError(problems, header=f"{len(problems)} problem(s); nothing was written "
                                             "(--skip_bad builds the rest):")
        builder._checked = checked  # pylint: disable=protected-access
        if not sys.stderr.isatty():  # TFDS's own bars would be redrawn into a log file
            tfds.disable_progress_bar()
        with tempfile.TemporaryDirectory() as downloads:  # nothing is downloaded
            builder.download_and_prepare(
                download_dir=downloads,
                download_config=tfds.download.DownloadConfig(
                    manual_dir=os.path.abspath(manual_dir), try_download_gcs=False))
    info = tfds.builder_from_directory(os.fspath(path)).info
    skipped_file = path / SKIPPED_FILE
    skipped = json.loads(skipped_file.read_text()) if skipped_file.is_file() else []
    return BuildResult(path, {name: split.num_examples for name, split in info.splits.items()},
                       skipped, Path(data_dir), Path(manual_dir))


@contextlib.contextmanager
def _exclusive(path: Path):
    """One builder at a time per config (several processes may start at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_synthetic(data_dir: str | os.PathLike | None = None, size: str = "demo",
                     seed: int = 0, num_workers: int | None = None) -> BuildResult:
    """The synthetic dataset of `size`, rendered and built on first use, reused afterwards.

    Rendered videos go to <data_dir>/downloads/manual/pisa_synthetic/<config> (TFDS's manual
    folder), the dataset to <data_dir>/pisa/<config>/<version>, like any other config."""
    if size not in synthetic.SIZES:
        raise DataError([(size, f"unknown synthetic size; choose one of {sorted(synthetic.SIZES)}")])
    data_dir = Path(data_dir or default_data_dir())
    name = synthetic.config_name(size, seed)
    config = make_config(synthetic.config_name(size))
    if seed:  # another rendering of the same size: a config of its own name
        config = dataclasses.replace(config, name=name)
    source = data_dir / "downloads" / "manual" / SYNTHETIC_SOURCES / name
    path = data_dir / Builder.name / name / str(Builder.VERSION)
    with _exclusive(data_dir / Builder.name / f".{name}.lock"):
        if not (path / "dataset_info.json").is_file():
            if not (source / "complete").is_file():  # render into a fresh folder
                shutil.rmtree(source, ignore_errors=True)
                synthetic.generate(source, size, seed, num_workers)
                (source / "complete").write_text("rendered\n")
            for stale in path.parent.glob("incomplete.*"):  # left by a killed build
                shutil.rmtree(stale, ignore_errors=True)
        return build_dataset(config, source, data_dir, num_workers=num_workers)
