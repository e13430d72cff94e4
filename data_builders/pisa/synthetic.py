"""The embedded synthetic dataset: piano-like performances rendered as real mp4 files (H.264 +
AAC) with annotations in PISA's schema, built by the same TFDS builder as PISA (layout a).

This module renders; `data_builders.pisa.build.ensure_synthetic` renders and builds on first use:
    ensure_synthetic(size="demo")          # -> <data_dir>/pisa/synthetic_demo/<version>
    pisa_jax.data.open_dataset("synthetic_demo")

Sizes: "demo" (CPU demo: 270 train / 100 test samples of 2 clips x 8 frames, 32x32 frames,
32x32 spectrograms), "full" (the paper's shapes: 10 clips x 16 frames, 112x112, 224x224; same
sample counts), "tiny" (for tests: 20 / 10 samples, demo shapes). Train and test videos are
different performances (as in PISA, no video is in both splits).
"""
from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from data_builders.pisa.synthetic_render import render_video
from pisa_jax.media import encode
from pisa_jax.media.spectrogram import SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class SyntheticSize:
    render_size: int             # rendered frame size; the builder resizes to image_size
    fps: float
    clips_per_sample: int
    clip_length: int
    image_size: int
    spectrogram_size: int
    train_videos_per_level: int
    train_samples_per_video: int
    test_videos_per_level: int
    test_samples_per_video: int


SIZES = {
    "demo": SyntheticSize(64, 15.0, 2, 8, 32, 32, 3, 9, 1, 10),
    "full": SyntheticSize(128, 25.0, 10, 16, 112, 224, 3, 9, 1, 10),
    "tiny": SyntheticSize(64, 15.0, 2, 8, 32, 32, 1, 2, 1, 1),
}


def config_name(size: str, seed: int = 0) -> str:
    """The builder config of a synthetic size: synthetic_demo, synthetic_full_seed3 ..."""
    return f"synthetic_{size}" + (f"_seed{seed}" if seed else "")


def _video_plan(size: SyntheticSize, seed: int) -> list[tuple[int, str, int, int]]:
    """[(video_id, split, level, samples)]; ids shuffled by seed so ids do not reveal levels."""
    plan = [(split, level, samples) for level in range(10)
            for split, videos, samples in (
                ("train", size.train_videos_per_level, size.train_samples_per_video),
                ("test", size.test_videos_per_level, size.test_samples_per_video))
            for _ in range(videos)]
    ids = np.random.default_rng([seed, 0]).permutation(len(plan)) + 1
    return [(int(i), *entry) for i, entry in zip(ids, plan)]


def _sample_frames(scheme: str, sample: int, samples: int, size: SyntheticSize) -> list[int]:
    """PISA's two frame layouts: consecutive runs, or clips spread evenly over the video."""
    per_sample, clip = size.clips_per_sample * size.clip_length, size.clip_length
    if scheme == "consecutive":
        return list(range(sample * per_sample, (sample + 1) * per_sample))
    return [c * clip * samples + sample * clip + f
            for c in range(size.clips_per_sample) for f in range(clip)]


def _render_one(args) -> None:
    video_id, level, samples, size, seed, folder = args
    rng = np.random.default_rng([seed, video_id])
    num_frames = samples * size.clips_per_sample * size.clip_length + 4  # a short tail
    frames, audio = render_video(level, num_frames, size.fps, size.render_size, rng)
    encode.write_video(folder / f"{video_id}.mp4", frames, size.fps, audio, SAMPLE_RATE)


def generate(folder: str | os.PathLike, size: str = "demo", seed: int = 0,
             num_workers: int | None = None) -> Path:
    """Renders the videos into <folder>/videos and PISA-schema annotations into
    <folder>/annotations (annotations_{consecutive,unidist}_{train,test}.json)."""
    spec, folder = SIZES[size], Path(folder)
    plan = _video_plan(spec, seed)
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    song_levels = np.random.default_rng([seed, 1]).integers(0, 9, len(plan) + 1)
    work = [(vid, level, n, spec, seed, folder / "videos") for vid, _, level, n in plan]
    with futures.ThreadPoolExecutor(num_workers or os.cpu_count() or 1) as pool:
        list(pool.map(_render_one, work))  # ffmpeg encodes in its own processes
    for scheme in ("consecutive", "unidist"):
        for split in ("train", "test"):
            records = [{"key": f"{vid}_{j}", "video_id": vid, "sample_idx": j,
                        "player_level": level, "song_level": int(song_levels[vid]),
                        "framerate": spec.fps, "frames": _sample_frames(scheme, j, n, spec)}
                       for vid, s, level, n in plan if s == split for j in range(n)]
            path = folder / "annotations" / f"annotations_{scheme}_{split}.json"
            path.write_text(json.dumps(records))
    return folder
