"""PISA annotations: reading and checking the sample JSON and the raw per-video table.

Sample annotations (schema of PISA's Ready2Use files, described in data_builders/pisa/README.md):
a JSON list of records {"key": "40_0", "video_id": 40, "sample_idx": 0, "player_level": 8,
"song_level": 2, "framerate": 29.97, "frames": [160 ints]}. `annotations` given to the builder
is either a directory holding annotations_<sampling>_<split>.json (or Parmar's .pkl of the
same name, read by a restricted unpickler) for splits train and test, or one JSON file holding
a list of records (one split, "train") or an object {split_name: [records]}.

Raw annotations (raw_annotations.json, one record per video): YouTube link, crop box
"x1, y1, x2, y2", trim start "m:ss" (stored as "H:MM" in the spreadsheet, but minutes and
seconds: frame_start = seconds * framerate) and the levels.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from data_builders.pisa.pickles import load_ready2use
from pisa_jax.errors import DataError

SPLITS = ("train", "test")
_FIELDS = {"video_id": int, "sample_idx": int, "player_level": int, "song_level": int,
           "framerate": (int, float), "frames": list}


@dataclasses.dataclass(frozen=True)
class Sample:
    video_id: int
    sample_idx: int
    player_level: int     # 0..9, the label
    song_level: int
    framerate: float      # annotated frame rate of the video
    frames: np.ndarray    # int64 [frames_per_sample], 0-based frame indices of the video

    @property
    def key(self) -> str:
        return f"{self.video_id}_{self.sample_idx}"


@dataclasses.dataclass(frozen=True)
class RawVideo:
    video_id: int
    youtube_id: str
    crop: tuple[int, int, int, int]   # x1, y1, x2, y2 (pixels, x2/y2 exclusive)
    start_s: float                    # trim start in the YouTube recording
    framerate: float


def shipped_annotations_dir() -> Path:
    """PISA's annotations as shipped inside this package (data_builders/pisa/annotations)."""
    return Path(__file__).parent / "annotations"


def _check_record(record, where: str, problems: list) -> Sample | None:
    if not isinstance(record, dict):
        problems.append((where, f"a record must be an object, got {type(record).__name__}"))
        return None
    bad = [f"{name} ({kind.__name__ if isinstance(kind, type) else 'number'})"
           for name, kind in _FIELDS.items()
           if not isinstance(record.get(name), kind) or isinstance(record.get(name), bool)]
    if bad:
        problems.append((where, "missing or wrong type: " + ", ".join(bad)))
        return None
    frames = record["frames"]
    if not frames or not all(isinstance(f, (int, np.integer)) and f >= 0 for f in frames):
        problems.append((where, "frames must be a non-empty list of integers >= 0"))
        return None
    sample = Sample(record["video_id"], record["sample_idx"], record["player_level"],
                    record["song_level"], float(record["framerate"]),
                    np.asarray(frames, np.int64))
    if not 0 <= sample.player_level <= 9:
        problems.append((where, f"player_level {sample.player_level} not in 0..9"))
    if sample.framerate <= 0 or sample.song_level < 0:
        problems.append((where, "framerate must be > 0 and song_level >= 0"))
    if "key" in record and record["key"] != sample.key:
        problems.append((where, f"key {record['key']!r} != video_id_sample_idx {sample.key!r}"))
    return sample


def parse_samples(records, source: str) -> list[Sample]:
    """Checks a list of sample records against the schema; DataError lists every problem."""
    problems: list[tuple[str, str]] = []
    if not isinstance(records, list):
        raise DataError([(source, "expected a JSON list of sample records")])
    samples = [_check_record(r, f"{source} [record {i}]", problems) for i, r in enumerate(records)]
    samples = [s for s in samples if s is not None]
    seen: dict[str, int] = {}
    for sample in samples:
        seen[sample.key] = seen.get(sample.key, 0) + 1
    problems += [(source, f"sample {k} appears {n} times") for k, n in seen.items() if n > 1]
    per_video: dict[int, set] = {}
    for s in samples:
        per_video.setdefault(s.video_id, set()).add((s.player_level, s.song_level, s.framerate))
    problems += [(source, f"video {v}: levels/framerate differ between its samples")
                 for v, values in per_video.items() if len(values) > 1]
    if problems:
        raise DataError(problems, header=f"annotations do not match the PISA schema ({source}):")
    return samples


def _read_file(path: Path):
    if path.suffix == ".pkl":
        return load_ready2use(path)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError([(path, f"not readable as JSON: {error}")]) from None


def load_annotations(path: str | os.PathLike | None = None,
                     sampling: str = "consecutive") -> dict[str, list[Sample]]:
    """{split: [Sample]} from a directory, a JSON file, or (None) PISA's shipped annotations."""
    path = Path(path) if path is not None else shipped_annotations_dir()
    if path.is_dir():
        splits = {}
        for split in SPLITS:
            found = [path / f"annotations_{sampling}_{split}{ext}" for ext in (".json", ".pkl")]
            found = [f for f in found if f.is_file()]
            if found:
                splits[split] = parse_samples(_read_file(found[0]), os.fspath(found[0]))
        if not splits:
            raise DataError([(path, f"no annotations_{sampling}_{{train,test}}.json in it")])
        return splits
    if not path.is_file():
        raise DataError([(path, "annotation file not found")])
    content = _read_file(path)
    if isinstance(content, list):
        return {"train": parse_samples(content, os.fspath(path))}
    if isinstance(content, Mapping) and content:
        return {str(split): parse_samples(records, f"{path} [{split}]")
                for split, records in content.items()}
    raise DataError([(path, "expected a list of records or {split: [records]}")])


def parse_crop(text: str) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (int(v) for v in re.split(r"\s*,\s*", text.strip()))
    if not (0 <= x1 < x2 and 0 <= y1 < y2):
        raise ValueError(f"crop {text!r} is not x1, y1, x2, y2 with x1 < x2, y1 < y2")
    return x1, y1, x2, y2


def parse_minutes_seconds(text: str) -> float:
    """'1:35' -> 95.0 (the spreadsheet's 'H:MM' cells are minutes:seconds; '0;00' occurs)."""
    minutes, seconds = re.split(r"[:;]", text.strip())
    return 60.0 * int(minutes) + int(seconds)


def youtube_id(link: str) -> str:
    match = re.search(r"(?:youtu\.be/|[?&]v=)([A-Za-z0-9_-]{11})", link)
    if not match:
        raise ValueError(f"no YouTube id in {link!r}")
    return match.group(1)  # ids are 11 characters; one link has a stray trailing '-'


def load_raw_annotations(path: str | os.PathLike | None = None) -> dict[int, RawVideo]:
    """{video_id: RawVideo} from raw_annotations.json (default: the shipped PISA one)."""
    path = Path(path) if path is not None else shipped_annotations_dir() / "raw_annotations.json"
    rows = _read_file(path)
    videos, problems = {}, []
    for i, row in enumerate(rows if isinstance(rows, list) else []):
        try:
            videos[int(row["video_id"])] = RawVideo(
                int(row["video_id"]), youtube_id(row["youtube link"]), parse_crop(row["crop"]),
                parse_minutes_seconds(row["start_time"]), float(row["framerate"]))
        except (KeyError, TypeError, ValueError) as error:
            problems.append((f"{path} [row {i}]", f"cannot read: {error}"))
    if problems or not videos:
        raise DataError(problems or [(path, "expected a JSON list of video rows")])
    return videos


def split_by_source(splits: dict[str, list[Sample]],
                    raw: Mapping[int, RawVideo]) -> dict[str, list[Sample]]:
    """Train/test split by YouTube recording: no recording on both sides.

    A recording whose segments are in both official splits goes wholly to the split holding
    most of its samples (ties: test). PISA: 544 train / 448 test samples.
    """
    missing = sorted({s.video_id for ss in splits.values() for s in ss} - set(raw))
    if missing:
        raise DataError([("raw annotations", f"no YouTube source for video ids {missing}")])
    counts: dict[str, dict[str, int]] = {}
    for split, samples in splits.items():
        for s in samples:
            per_split = counts.setdefault(raw[s.video_id].youtube_id, {})
            per_split[split] = per_split.get(split, 0) + 1
    home = {src: max(c, key=lambda k: (c[k], k == "test")) for src, c in counts.items()}
    result: dict[str, list[Sample]] = {split: [] for split in splits}
    for split in splits:  # keep the official order within each split
        for s in splits[split]:
            result[home[raw[s.video_id].youtube_id]].append(s)
    return result
