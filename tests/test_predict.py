"""python -m pisa_jax.predict cuts a recording like the builder and scores each sample."""
import numpy as np
import pytest

from pisa_jax.data.dataset import open_dataset
from pisa_jax.media.encode import write_video
from pisa_jax.predict import PredictError, cut_samples, main, predict_recording
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
