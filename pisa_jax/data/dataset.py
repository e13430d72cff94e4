"""Opening a built dataset: random-access train/test sources of decoded samples.

    ds = open_dataset("consecutive")           # after python -m data_builders.pisa ...
    ds = open_dataset("synthetic_demo", train_split="train[:40]")
    sample = ds.train[0]   # {"video": uint8 [clips, T, S, S, 3], "spectrogram": float16
                           #  [F, F] or [clips, F, F], "label": int32, "song_level", "video_id",
                           #  "sample_idx": int32, "framerate": float32}

Decoded samples are kept in host memory after their first read when the split fits in a
quarter of the machine's memory: PISA's 3.1 GB of training frames are read every epoch, and
decompressing them each time costs more than the model step on a GPU.
"""
from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import numpy as np

from pisa_jax.errors import DataError

NUM_CLASSES = 10


class SampleSource:
    """len() and [i] -> dict of numpy over one split of a built dataset."""

    def __init__(self, data_source, clips_per_sample: int, clip_length: int,
                 cache: bool | None = None):
        self._source = data_source
        self.clips_per_sample, self.clip_length = clips_per_sample, clip_length
        self._cache: list | None = None
        self._lock = threading.Lock()
        if cache is None:
            cache = len(self) * self._sample_bytes() <= _memory_bytes() // 4
        if cache:
            self._cache = [None] * len(self)

    def _sample_bytes(self) -> int:
        if len(self) == 0:
            return 0
        return sum(v.nbytes for v in self._read(0).values())

    def __len__(self) -> int:
        return len(self._source)

    def _read(self, index: int) -> dict:
        record = self._source[int(index)]
        video = np.asarray(record["video"])
        return {
            "video": video.reshape(self.clips_per_sample, self.clip_length, *video.shape[1:]),
            "spectrogram": np.asarray(record["spectrogram"]),
            "label": np.int32(record["player_level"]),
            "song_level": np.int32(record["song_level"]),
            "video_id": np.int32(record["video_id"]),
            "sample_idx": np.int32(record["sample_idx"]),
            "framerate": np.float32(record["framerate"]),
        }

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        if self._cache is None:
            return self._read(index)
        sample = self._cache[index]
        if sample is None:
            sample = self._read(index)
            with self._lock:
                self._cache[index] = sample
        return sample


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


@dataclasses.dataclass
class Dataset:
    path: Path                            # <data_dir>/pisa/<config>/<version>
    train: SampleSource
    test: SampleSource
    clips_per_sample: int
    clip_length: int
    image_size: int
    spectrogram_shape: tuple[int, ...]    # (F, F) or (clips, F, F)
    num_classes: int = NUM_CLASSES
    annotated_frames: int | None = None   # recording frames a sample spans, if more than stored
    framerates: tuple[float, ...] | None = None   # the videos' annotated rates (None: not recorded)


def _open(builder, splits: dict[str, str], cache: bool | None) -> Dataset:
    """splits: {"train": "train[:20]", "test": "test"}, TFDS split names (slices allowed)."""
    path = Path(os.fspath(builder.data_path))
    missing = sorted({name.split("[")[0] for name in splits.values()} - set(builder.info.splits))
    if missing:
        raise DataError([(path, f"has no split {missing[0]} (it has {sorted(builder.info.splits)})")])
    meta = builder.info.metadata
    clips, length = int(meta["clips_per_sample"]), int(meta["clip_length"])
    try:
        sources = {role: SampleSource(builder.as_data_source(split), clips, length, cache)
                   for role, split in splits.items()}
    except ValueError as error:  # a malformed slice such as "train[:x]"
        raise DataError([(path, f"cannot read splits {sorted(splits.values())}: {error}")]) from None
    spec = tuple(builder.info.features["spectrogram"].shape)
    annotated = int(meta.get("annotated_frames", clips * length))  # absent before small configs
    return Dataset(path, sources["train"], sources["test"], clips, length,
                   int(meta["image_size"]), spec,
                   annotated_frames=annotated if annotated != clips * length else None,
                   framerates=_framerates(meta))


def _framerates(meta) -> tuple[float, ...] | None:
    """The builder records its videos' frame rates; datasets built before it did have none."""
    rates = meta.get("framerates")
    return None if not rates else tuple(float(r) for r in rates)


def open_path(path: str | os.PathLike, *, train_split: str = "train", test_split: str = "test",
              cache: bool | None = None) -> Dataset:
    """A built dataset folder <data_dir>/pisa/<config>/<version> -> Dataset."""
    import tensorflow_datasets as tfds
    path = Path(path)
    if not (path / "dataset_info.json").is_file():
        raise DataError([(path, "no finished dataset here (no dataset_info.json)")])
    return _open(tfds.builder_from_directory(os.fspath(path)),
                 {"train": train_split, "test": test_split}, cache)


def open_dataset(config: str = "consecutive", data_dir: str | os.PathLike | None = None, *,
                 train_split: str = "train", test_split: str = "test",
                 cache: bool | None = None) -> Dataset:
    """A built config of the `pisa` TFDS builder, found by TFDS in data_dir (default
    $TFDS_DATA_DIR or ~/tensorflow_datasets): PISA's own (consecutive, unidist, ...), one built
    from your annotations (consecutive_<file>) or a synthetic one (synthetic_demo, ...).
    Nothing is built here: build with `python -m data_builders.pisa` (synthetic ones with
    `data_builders.pisa.build.ensure_synthetic`)."""
    import tensorflow_datasets as tfds

    from data_builders.pisa import Builder  # registers the builder with TFDS
    from data_builders.pisa.build import default_data_dir
    data_dir = os.fspath(data_dir or default_data_dir())
    try:
        builder = tfds.builder(f"{Builder.name}/{config}", data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError):
        builder = None
    if builder is None or not builder.is_prepared():
        raise DatasetNotFoundError(os.path.join(data_dir, Builder.name, config),
                                   _how_to_build(config, [c.name for c in Builder.BUILDER_CONFIGS],
                                                 data_dir))
    return _open(builder, {"train": train_split, "test": test_split}, cache)


class DatasetNotFoundError(DataError):
    """A dataset config that is not built in the data directory, or is no config at all."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__([(path, problem)])
        self.args = (f"{os.fspath(path)}: {problem}",)  # one line, not DataError's list

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return (DatasetNotFoundError, self.problems[0])


def _how_to_build(config: str, registered: list[str], data_dir: str) -> str:
    """Why `config` cannot be opened, with the command that builds it (a config that exists)."""
    build = f"python -m data_builders.pisa --manual_dir <your videos> --data_dir {data_dir}"
    base = max((n for n in registered if config.startswith(n + "_")), key=len, default=None)
    if config.startswith("synthetic_") and config in registered:
        how = (f"train.py --dataset synthetic --dataset_config {config[len('synthetic_'):]} "
               f"--data_dir {data_dir} builds it on first use")
    elif config in registered:
        how = f"build it with {build} --config {config}"
    elif base is not None:  # <config>_<annotations file>: built from the user's annotations
        how = (f"it is config {base} built from your annotations file "
               f"{config[len(base) + 1:]}.json: {build} --config {base} --annotations <that file>")
    else:
        return (f"{config!r} is not a config of the pisa dataset builder: choose one of "
                f"{', '.join(registered)} (or <config>_<annotations file> for one built from your "
                f"own annotations)")
    return f"dataset config {config!r} is not built here; {how}"
