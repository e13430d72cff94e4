"""python -m pisa_jax.predict cuts a recording like the builder and scores each sample."""
import subprocess

import numpy as np
import pytest

from pisa_jax.data.dataset import open_dataset
from pisa_jax.media.encode import write_video
from pisa_jax.predict import (PredictError, cut_samples, frame_rate_note, main,
                              predict_recording, rate_to_match)
from pisa_jax.train.state import InputSpec


def _stored_samples(data_dir, video_id):
    """The builder's samples of one video, by sample index: (video, spectrogram) pairs."""
    dataset = open_dataset("synthetic_tiny", data_dir)
    found = {}
    for split in (dataset.train, dataset.test):
        for i in range(len(split)):
            s = split[i]
            if int(s["video_id"]) == video_id:
                found[int(s["sample_idx"])] = (s["video"], s["spectrogram"])
    return [found[k] for k in sorted(found)]


def test_samples_are_cut_exactly_as_the_builder_cuts_them(smoke_run, synthetic_tiny):
    _, workdir, _ = smoke_run
    stored = _stored_samples(synthetic_tiny.data_dir, 1)
    cut = cut_samples(str(synthetic_tiny.manual_dir / "videos" / "1.mp4"), InputSpec.load(workdir))
    # the recording may hold more than was annotated
    assert len(cut["samples"]) == len(cut["seconds"]) >= len(stored) > 0
    for j, (video, spectrogram) in enumerate(stored):
        np.testing.assert_array_equal(cut["samples"][j]["video"], video)
        np.testing.assert_array_equal(cut["samples"][j]["spectrogram"], spectrogram)


def test_prediction_and_cli(smoke_run, synthetic_tiny, capsys):
    _, workdir, _ = smoke_run
    video = str(synthetic_tiny.manual_dir / "videos" / "1.mp4")
    result = predict_recording(video, str(workdir), "latest")
    assert result["head"] == "multimodal" and len(result["samples"]) >= 2
    assert 1 <= result["level"] <= 10 and all(1 <= s["level"] <= 10 for s in result["samples"])
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-5
    assert main([video, "--workdir", str(workdir)]) == 0
    assert "overall level:" in capsys.readouterr().out


def test_the_command_uses_the_compilation_cache_and_keeps_its_json_clean(
        smoke_run, synthetic_tiny, capsys, monkeypatch, tmp_path):
    import json

    import jax
    _, workdir, _ = smoke_run
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv("PISA_JAX_COMPILATION_CACHE", str(tmp_path / "cache"))
    try:
        video = str(synthetic_tiny.manual_dir / "videos" / "1.mp4")
        assert main([video, "--workdir", str(workdir), "--json"]) == 0
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
    assert json.loads(capsys.readouterr().out)["level"] in range(1, 11)


def test_unusable_recordings_are_clear_errors(smoke_run, tmp_path, capsys):
    _, workdir, _ = smoke_run
    spec = InputSpec.load(workdir)
    frames = np.zeros((spec.clips * spec.clip_length - 1, 32, 32, 3), np.uint8)
    write_video(tmp_path / "short.mp4", frames, 15.0, np.zeros(44100, np.float32))
    with pytest.raises(PredictError, match=r"short.mp4: too short: 15 frames.*needs 16 frames"):
        cut_samples(str(tmp_path / "short.mp4"), spec)
    write_video(tmp_path / "silent.mp4", np.zeros((40, 32, 32, 3), np.uint8), 15.0)
    assert main([str(tmp_path / "silent.mp4"), "--workdir", str(workdir)]) == 1
    assert "silent.mp4: has no audio stream" in capsys.readouterr().err


def test_a_run_on_a_demo_config_cuts_recordings_as_that_config_stores_samples(
        tmp_path, write_coded_video, write_annotations):
    from data_builders.pisa.build import build_dataset, make_config
    from data_helpers import records
    video = write_coded_video(tmp_path / "videos" / "1.mp4", 322, 30)
    annotations = write_annotations(tmp_path / "own.json", {"train": records(1, 3, 30.0, 2, 160)})
    built = build_dataset(make_config("consecutive_demo", annotations), tmp_path / "videos",
                          tmp_path / "data", num_workers=1)
    stored = open_dataset(built.path.parent.name, tmp_path / "data", test_split="train")
    spec = InputSpec.of_dataset(stored)       # what training saves as inputs.json
    assert spec.annotated_frames == 160
    cut = cut_samples(str(video), spec)
    assert len(cut["samples"]) == 2 and cut["seconds"][1].tolist() == pytest.approx([160 / 30, 320 / 30])
    for sample in (stored.train[i] for i in range(2)):
        j = int(sample["sample_idx"])
        np.testing.assert_array_equal(cut["samples"][j]["video"], sample["video"])
        np.testing.assert_array_equal(cut["samples"][j]["spectrogram"], sample["spectrogram"])


def _spec(framerates=(15.0,)):
    """The smoke run's input description (2 clips x 8 frames, 32 px), trained at 15 fps."""
    return InputSpec(clips=2, clip_length=8, image_size=32, spectrogram_shape=(32, 32),
                     num_classes=10, framerates=framerates)


def test_sound_that_ends_early_is_an_error_naming_the_file_and_the_times(tmp_path, capsys):
    from pisa_jax.media.decode import ffmpeg_exe
    video = tmp_path / "short_audio.mp4"   # 10 s of picture, 3 s of sound
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=duration=10:size=64x48:rate=15", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=3", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", str(video)], check=True)
    with pytest.raises(PredictError) as error:
        cut_samples(str(video), _spec())
    # samples of 16 frames at 15 fps: 0 and 1 end by 2.13 s, 2 to 8 would hear silence
    assert str(error.value) == (
        f"{video}: the sound ends at 3.00 s but the picture runs to 9.60 s: sample(s) 2-8 "
        f"(2.13-9.60 s) would be scored on silence. Use a recording whose sound covers the "
        f"picture, or cut it to the sound (ffmpeg -i IN -t 3.00 OUT)")


def test_a_recording_at_another_frame_rate_is_resampled_to_the_training_rate(
        tmp_path, write_coded_video):
    from data_helpers import read_codes
    video = str(write_coded_video(tmp_path / "fast.mp4", 64, 30.0))
    cut = cut_samples(video, _spec())
    assert (cut["recorded_fps"], cut["fps"]) == (30.0, 15.0)
    np.testing.assert_allclose(cut["seconds"], [[0, 16 / 15], [16 / 15, 32 / 15]])
    for j, sample in enumerate(cut["samples"]):   # every other frame: the same seconds
        codes = read_codes(sample["video"].reshape(-1, 32, 32, 3))
        assert codes.tolist() == list(range(32 * j, 32 * (j + 1), 2))
    assert "resampled with ffmpeg from the recording's 30 fps to 15 fps" in frame_rate_note(
        30.0, 15.0, (15.0,))
    near = cut_samples(str(write_coded_video(tmp_path / "near.mp4", 32, 15.2)), _spec())
    assert near["fps"] == near["recorded_fps"] == pytest.approx(15.2)   # within 3 %: as it is


def test_the_training_rate_to_match(tmp_path):
    pisa = (23.98, 24.0, 25.0, 29.97, 30.0)
    assert rate_to_match(60.0, pisa) == 30.0          # several rates: the nearest
    assert rate_to_match(29.97, pisa) is None and rate_to_match(12.0, pisa) == 23.98
    assert rate_to_match(60.0, None) is None           # a run from before rates were recorded
    note = frame_rate_note(60.0, 60.0, None)
    assert "does not record the frame rate it was trained at" in note
    (tmp_path / "inputs.json").write_text(   # an old run's inputs.json still loads
        '{"clips": 2, "clip_length": 8, "image_size": 32, "spectrogram_shape": [32, 32], '
        '"num_classes": 10}')
    assert InputSpec.load(tmp_path).framerates is None


def test_a_run_records_the_frame_rates_it_was_trained_at(smoke_run):
    _, workdir, _ = smoke_run
    assert InputSpec.load(workdir).framerates == (15.0,)
