"""The TFDS builder on tiny generated videos: layouts, shapes, labels, exact frames."""
import json

import numpy as np
import pytest

from data_builders.pisa.__main__ import main
from data_builders.pisa.build import build_dataset
from data_helpers import SR, coded_frames, read_codes, records, tone, write_jpegs
from pisa_jax.data.dataset import open_path
from pisa_jax.media import encode


def by_key(source):
    samples = (source[i] for i in range(len(source)))
    return {f"{s['video_id']}_{s['sample_idx']}": s for s in samples}


@pytest.mark.parametrize("per_clip", [False, True])
def test_frame_rates_sizes_and_labels(tmp_path, write_coded_video, write_annotations,
                                      small_config, per_clip):
    videos = {1: (24, 48, 64, "train", 2, 3), 2: (25, 54, 96, "train", 5, 2),
              3: (29.97, 54, 96, "test", 7, 2), 4: (30, 48, 64, "test", 9, 1)}
    splits = {"train": [], "test": []}
    for vid, (fps, h, w, split, level, n) in videos.items():
        write_coded_video(tmp_path / "videos" / f"{vid}.mp4", 8 * n + 2, fps, h, w)
        scheme = "unidist" if vid == 3 else "consecutive"
        splits[split] += records(vid, level, fps, n, 8, song_level=vid, scheme=scheme)
    config = small_config(write_annotations(tmp_path / "mine.json", splits),
                          spectrogram_per_clip=per_clip)
    result = build_dataset(config, tmp_path / "videos", tmp_path / "data", num_workers=2)
    assert result.split_sizes == {"train": 5, "test": 3} and result.skipped == []
    ds = open_path(result.path)
    assert ds.spectrogram_shape == ((2, 16, 16) if per_clip else (16, 16))
    for split, source in (("train", ds.train), ("test", ds.test)):
        for key, sample in by_key(source).items():
            record = next(r for r in splits[split] if r["key"] == key)
            assert sample["video"].shape == (2, 4, 32, 32, 3) and sample["video"].dtype == np.uint8
            assert sample["spectrogram"].dtype == np.float16
            assert sample["spectrogram"].shape == ds.spectrogram_shape
            assert 0 <= sample["spectrogram"].min() and sample["spectrogram"].max() <= 1
            assert sample["label"] == record["player_level"]
            assert sample["song_level"] == record["song_level"]
            assert sample["framerate"] == pytest.approx(record["framerate"])
            codes = read_codes(sample["video"].reshape(-1, 32, 32, 3))
            np.testing.assert_array_equal(codes, record["frames"])   # exactly those frames


def test_frame_folders_and_untrimmed_youtube_videos(tmp_path, write_annotations, small_config):
    manual = tmp_path / "manual"
    # (b) video 1: frames 0.jpg .. 19.jpg (natural order) + 1.wav
    write_jpegs(manual / "frames" / "1", coded_frames(20))
    encode.write_wav(manual / "audio" / "1.wav", tone(SR), SR)
    # (c) video 2: an untrimmed 128x72 recording; the raw crop box (drawn on 360p) scaled by 0.2
    box = (64, 36, 128, 72)
    frames = coded_frames(50 + 20, 72, 128, box)
    encode.write_video(manual / "Some title [abcdefghijk].mp4", frames, 25, tone(3 * SR), SR)
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    (annotations / "annotations_consecutive_train.json").write_text(
        json.dumps(records(1, 4, 25.0, 2, 8)))
    (annotations / "annotations_consecutive_test.json").write_text(
        json.dumps(records(2, 6, 25.0, 2, 8)))
    (annotations / "raw_annotations.json").write_text(json.dumps([
        {"video_id": 2, "youtube link": "https://youtu.be/abcdefghijk",
         "crop": "320, 180, 640, 360",
         "framerate": 25, "start_time": "0:02", "level_player": 7, "level_song": 1}]))
    result = build_dataset(small_config(str(annotations)), manual, tmp_path / "data", num_workers=1)
    ds = open_path(result.path)
    for key, sample in by_key(ds.train).items():
        start = int(key.split("_")[1]) * 8
        codes = read_codes(sample["video"].reshape(-1, 32, 32, 3))
        np.testing.assert_array_equal(codes, np.arange(start, start + 8))
    for key, sample in by_key(ds.test).items():
        start = 50 + int(key.split("_")[1]) * 8      # trimmed at 2 s = frame 50
        codes = read_codes(sample["video"].reshape(-1, 32, 32, 3))
        np.testing.assert_array_equal(codes, np.arange(start, start + 8))


def test_command_line(tmp_path, write_coded_video, write_annotations, capsys):
    for vid in (1, 2):
        write_coded_video(tmp_path / "videos" / f"{vid}.mp4", 162, 30)
    path = write_annotations(tmp_path / "own.json", {
        "train": records(1, 3, 30.0, 1, 160), "test": records(2, 8, 30.0, 1, 160)})
    assert main(["--manual_dir", str(tmp_path / "videos"), "--data_dir", str(tmp_path / "d"),
                 "--annotations", path, "--num_workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "pisa/consecutive_own/1.0.0" in out and "train: 1 samples" in out
    sample = open_path(tmp_path / "d" / "pisa" / "consecutive_own" / "1.0.0").train[0]
    assert sample["video"].shape == (10, 16, 112, 112, 3)
    assert sample["spectrogram"].shape == (224, 224)
