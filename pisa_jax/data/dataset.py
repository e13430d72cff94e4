"""Opening a built dataset: random-access train/test sources of decoded samples.

    ds = open_dataset("synthetic")                 # demo size, built on first use
    ds = open_dataset("pisa", "consecutive")       # after python -m data_builders.pisa ...
    sample = ds.train[0]   # {"video": uint8 [clips, T, S, S, 3], "spectrogram": float16
                           #  [F, F] or [clips, F, F], "label": int32, "song_level", "video_id",
                           #  "sample_idx": int32, "framerate": float32}

Decoded samples are kept in host memory after their first read when the split fits in a
quarter of the machine's memory (SPEC section 8: PISA's 3.1 GB of training frames are read
every epoch; decompressing them each time costs more than the model step on a GPU).
"""
from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import numpy as np

from pisa_jax.data.errors import DataError

VERSION = "1.0.0"
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
    path: Path
    train: SampleSource
    test: SampleSource
    clips_per_sample: int
    clip_length: int
    image_size: int
    spectrogram_shape: tuple[int, ...]    # (F, F) or (clips, F, F)
    num_classes: int = NUM_CLASSES


def open_path(path: str | os.PathLike, cache: bool | None = None) -> Dataset:
    """A dataset folder <data_dir>/pisa/<config>/<version> -> Dataset."""
    import tensorflow_datasets as tfds
    path = Path(path)
    if not (path / "dataset_info.json").is_file():
        raise DataError([(path, "no finished dataset here (no dataset_info.json)")])
    builder = tfds.builder_from_directory(os.fspath(path))
    meta = builder.info.metadata
    clips, length = int(meta["clips_per_sample"]), int(meta["clip_length"])
    splits = {name: SampleSource(builder.as_data_source(name), clips, length, cache)
              for name in ("train", "test") if name in builder.info.splits}
    if set(splits) != {"train", "test"}:
        raise DataError([(path, f"needs splits train and test, has {sorted(splits)}")])
    spec = tuple(builder.info.features["spectrogram"].shape)
    return Dataset(path, splits["train"], splits["test"], clips, length,
                   int(meta["image_size"]), spec)


def open_dataset(name: str = "synthetic", config: str | None = None,
                 data_dir: str | os.PathLike | None = None,
                 cache: bool | None = None) -> Dataset:
    """name "synthetic": config = size ("demo" default, "full", "tiny"), built on first use in
    data_dir (default $PISA_JAX_DATA or ~/.cache/pisa_jax). name "pisa": config = builder
    config ("consecutive" default), built beforehand with `python -m data_builders.pisa` into
    data_dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)."""
    if name == "synthetic":
        from pisa_jax.data.synthetic import ensure_synthetic
        return open_path(ensure_synthetic(data_dir, size=config or "demo").path, cache)
    if name != "pisa":
        raise ValueError(f"dataset name must be 'synthetic' or 'pisa', got {name!r}")
    from data_builders.pisa.prepare import default_data_dir  # same default as the CLI
    path = Path(data_dir or default_data_dir()) / "pisa" / (config or "consecutive") / VERSION
    if not (path / "dataset_info.json").is_file():
        raise DataError([(path, f"PISA config {config or 'consecutive'} is not built; run "
                                f"python -m data_builders.pisa --manual_dir <videos> "
                                f"--config {config or 'consecutive'} --data_dir <data_dir>")])
    return open_path(path, cache)
