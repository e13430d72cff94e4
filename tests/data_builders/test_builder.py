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


def _two_videos_of_160_frame_samples(tmp_path, write_coded_video, write_annotations):
    """Videos 1 (train, 2 samples) and 2 (test, 1 sample) with PISA-length samples."""
    write_coded_video(tmp_path / "videos" / "1.mp4", 322, 30)
    write_coded_video(tmp_path / "videos" / "2.mp4", 162, 30)
    return write_annotations(tmp_path / "own.json", {
        "train": records(1, 3, 30.0, 2, 160), "test": records(2, 8, 30.0, 1, 160)})


def test_demo_config_keeps_two_clips_of_eight_and_the_whole_sample_s_sound(
        tmp_path, write_coded_video, write_annotations, capsys):
    from pisa_jax.data.dataset import open_dataset
    from pisa_jax.media import decode
    from pisa_jax.media.spectrogram import frames_spectrogram
    path = _two_videos_of_160_frame_samples(tmp_path, write_coded_video, write_annotations)
    assert main(["--manual_dir", str(tmp_path / "videos"), "--data_dir", str(tmp_path / "d"),
                 "--config", "consecutive_demo", "--annotations", path,
                 "--num_workers", "1"]) == 0
    assert "pisa/consecutive_demo_own/1.0.0" in capsys.readouterr().out
    ds = open_dataset("consecutive_demo_own", tmp_path / "d")   # as training opens it
    assert (ds.clips_per_sample, ds.clip_length, ds.image_size, ds.spectrogram_shape,
            ds.annotated_frames) == (2, 8, 32, (32, 32), 160)
    audio = decode.read_audio(tmp_path / "videos" / "1.mp4", SR)
    for key, sample in by_key(ds.train).items():
        first = 160 * int(key.split("_")[1])
        assert sample["video"].shape == (2, 8, 32, 32, 3)
        # every 10th frame, at the centre of each tenth of the sample (codes count mod 256)
        np.testing.assert_array_equal(read_codes(sample["video"].reshape(-1, 32, 32, 3)),
                                      (first + np.arange(5, 160, 10)) % 256)
        # the spectrogram hears all 160 frames (5.3 s), not only the 16 kept
        expected = frames_spectrogram(audio, SR, np.arange(first, first + 160), 30.0, 32)
        np.testing.assert_allclose(sample["spectrogram"], expected, atol=1e-3)


def test_own_sample_shape_from_flags_and_shapes_that_do_not_fit(
        tmp_path, write_coded_video, write_annotations, capsys):
    path = _two_videos_of_160_frame_samples(tmp_path, write_coded_video, write_annotations)
    common = ["--manual_dir", str(tmp_path / "videos"), "--data_dir", str(tmp_path / "d"),
              "--annotations", path, "--num_workers", "1"]
    assert main(common + ["--config", "parmar_consecutive", "--clips_per_sample", "4",
                          "--clip_length", "4", "--image_size", "16",
                          "--spectrogram_size", "24"]) == 0
    name = "parmar_consecutive_own_4x4_16px_24spec"
    assert f"pisa/{name}/1.0.0" in capsys.readouterr().out
    sample = open_path(tmp_path / "d" / "pisa" / name / "1.0.0").test[0]
    assert sample["video"].shape == (4, 4, 16, 16, 3)
    assert sample["spectrogram"].shape == (4, 24, 24)       # one per clip: a quarter each
    np.testing.assert_array_equal(read_codes(sample["video"].reshape(-1, 16, 16, 3)),
                                  np.arange(5, 160, 10))
    assert main(common + ["--clips_per_sample", "3"]) == 1
    err = capsys.readouterr().err
    assert "--clips_per_sample 3 --clip_length 16: cannot be kept from config consecutive_own's " \
           "160-frame samples" in err and "Traceback" not in err
    assert not (tmp_path / "d" / "pisa" / "consecutive_own_3x16_112px_224spec").exists()


def test_help_lists_every_registered_config(capsys):
    from data_builders.pisa import Builder
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for config in Builder.BUILDER_CONFIGS:
        assert f"\n  {config.name} " in out
    assert " 2 x 8  @  32px  32        Paper layout: one spectrogram per sample, consecutive" in out


def test_the_dataset_records_the_frame_rates_of_its_videos(synthetic_tiny):
    """A sample spans frames: the rates say which seconds it covers (predict matches them)."""
    from pisa_jax.data.dataset import open_dataset
    assert open_dataset("synthetic_tiny", synthetic_tiny.data_dir).framerates == (15.0,)


def test_a_build_leaves_nothing_in_the_temporary_directory(tmp_path, write_coded_video,
                                                           write_annotations, small_config,
                                                           monkeypatch):
    import tempfile
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    write_coded_video(tmp_path / "videos" / "1.mp4", 10, 24)
    write_coded_video(tmp_path / "videos" / "2.mp4", 10, 24)
    splits = {"train": records(1, 3, 24, 1, 8), "test": records(2, 5, 24, 1, 8)}
    config = small_config(write_annotations(tmp_path / "mine.json", splits))
    result = build_dataset(config, tmp_path / "videos", tmp_path / "data", num_workers=1)
    assert result.split_sizes == {"train": 1, "test": 1}
    assert list(temp.iterdir()) == []   # TFDS made an empty directory here per unbuilt dataset
