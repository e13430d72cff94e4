"""Bad input: every problem listed with its file, nothing written; --skip_bad; interruptions."""
import json
import os
import subprocess
import sys

import pytest

from data_builders.pisa import extract
from data_builders.pisa.build import build_dataset
from data_helpers import records, write_jpegs, coded_frames
from pisa_jax.data.dataset import open_path
from pisa_jax.media import encode
from pisa_jax.errors import DataError


@pytest.fixture
def bad_manual_dir(tmp_path, write_coded_video):
    """Videos 1 and 9 are fine; 2..8 each have one problem."""
    videos = tmp_path / "videos"
    write_coded_video(videos / "1.mp4", 20, 25)
    write_coded_video(videos / "9.mp4", 20, 25)
    whole = write_coded_video(tmp_path / "whole.mp4", 200, 25)
    subprocess.run([encode.ffmpeg_exe(), "-v", "error", "-i", str(whole), "-c", "copy",
                    "-movflags", "+faststart", str(tmp_path / "front.mp4")], check=True)
    data = (tmp_path / "front.mp4").read_bytes()
    (videos / "2.mp4").write_bytes(data[: len(data) // 3])          # truncated
    write_coded_video(videos / "3.mp4", 20, 25, audio=False)         # no audio stream
    write_coded_video(videos / "4.mp4", 12, 25)                      # too short
    # 5: missing
    write_coded_video(videos / "6.mp4", 20, 25)                      # annotated as 30 fps
    write_jpegs(videos / "7", coded_frames(20))                      # unreadable wav
    (videos / "7.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (videos / "8.mp4").write_bytes(whole.read_bytes()[:3000])        # cannot be opened
    splits = {"train": [r for v in (1, 2, 3, 4, 5) for r in records(v, 2, 25.0, 2, 8)],
              "test": [r for v in (6, 7, 8, 9) for r in
                       records(v, 5, 30.0 if v == 6 else 25.0, 2, 8)]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(splits))
    return videos, str(path)


EXPECTED = {"2.mp4": "truncated", "3.mp4": "no audio stream", "4.mp4": "too short",
            "5.mp4": "is missing", "6.mp4": "far from the annotated 30",
            "7.wav": "audio", "8.mp4": "cannot open"}


def test_every_problem_is_listed_and_nothing_written(tmp_path, bad_manual_dir, small_config):
    videos, annotations = bad_manual_dir
    with pytest.raises(DataError) as error:
        build_dataset(small_config(annotations), videos, tmp_path / "data", num_workers=2)
    problems = error.value.problems
    for name, words in EXPECTED.items():
        assert any(path.endswith(name) and words in problem for path, problem in problems), name
    assert not any(path.endswith(("1.mp4", "9.mp4")) for path, _ in problems)
    assert "nothing was written" in str(error.value)
    assert not (tmp_path / "data").exists()


def test_skip_bad_builds_the_rest_and_lists_what_it_skipped(tmp_path, bad_manual_dir,
                                                            small_config):
    videos, annotations = bad_manual_dir
    result = build_dataset(small_config(annotations), videos, tmp_path / "data", skip_bad=True,
                   num_workers=1)
    assert result.split_sizes == {"train": 2, "test": 2}
    listed = json.loads((result.path / "skipped_samples.json").read_text())
    assert listed == result.skipped
    assert sorted(s["key"] for s in listed) == sorted(f"{v}_{j}" for v in range(2, 9)
                                                      for j in range(2))
    assert all(s["problems"] for s in listed)


def test_annotations_that_do_not_fit_the_config(tmp_path, write_coded_video, small_config):
    write_coded_video(tmp_path / "videos" / "1.mp4", 20, 25)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"train": records(1, 2, 25.0, 1, 6)}))   # 6 frames, config 8
    with pytest.raises(DataError, match="has 6 frames"):
        build_dataset(small_config(str(path)), tmp_path / "videos", tmp_path / "data")
    path.write_text(json.dumps({"train": [{"video_id": "one"}]}))
    with pytest.raises(DataError, match="PISA schema"):
        build_dataset(small_config(str(path)), tmp_path / "videos", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def good_dataset(tmp_path, write_coded_video):
    for vid in (1, 2, 3):
        write_coded_video(tmp_path / "videos" / f"{vid}.mp4", 20, 25)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"train": records(1, 2, 25.0, 2, 8) + records(2, 3, 25.0, 2, 8),
                                "test": records(3, 4, 25.0, 2, 8)}))
    return str(path)


def test_failed_build_leaves_nothing_that_loads(tmp_path, write_coded_video, small_config,
                                               monkeypatch):
    config = small_config(good_dataset(tmp_path, write_coded_video))
    calls = []

    def failing(job, layout):
        calls.append(job.video_id)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(job, layout)
    real = extract.extract_job
    monkeypatch.setattr(extract, "extract_job", failing)
    with pytest.raises(OSError, match="simulated"):
        build_dataset(config, tmp_path / "videos", tmp_path / "data", num_workers=1)
    folder = tmp_path / "data" / "pisa" / config.name
    assert not (folder / "1.0.0").exists() and not list(folder.glob("incomplete*"))
    with pytest.raises(DataError, match="no finished dataset"):
        open_path(folder / "1.0.0")
    monkeypatch.setattr(extract, "extract_job", real)
    assert build_dataset(config, tmp_path / "videos", tmp_path / "data").split_sizes["test"] == 2


def test_killed_build_leaves_nothing_that_loads(tmp_path, write_coded_video, small_config):
    config = small_config(good_dataset(tmp_path, write_coded_video))
    script = f"""
import os, dataclasses
from data_builders.pisa import extract
from data_builders.pisa.build import build_dataset, make_config
real = extract.extract_job
calls = []
def dies(job, layout):
    calls.append(1)
    if len(calls) == 2:
        os._exit(9)          # as if killed in the middle of writing
    return real(job, layout)
extract.extract_job = dies
config = dataclasses.replace(make_config("consecutive", {config.annotations!r}),
    image_size=32, clips_per_sample=2, clip_length=4, spectrogram_size=16)
build_dataset(config, {str(tmp_path / 'videos')!r}, {str(tmp_path / 'data')!r}, num_workers=1)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 9, done.stderr.decode()[-2000:]
    folder = tmp_path / "data" / "pisa" / config.name
    assert list(folder.glob("incomplete*"))      # TFDS's temporary folder stays behind ...
    with pytest.raises(DataError, match="no finished dataset"):
        open_path(folder / "1.0.0")                 # ... but nothing loads as a dataset
    assert build_dataset(config, tmp_path / "videos", tmp_path / "data").split_sizes["train"] == 4
