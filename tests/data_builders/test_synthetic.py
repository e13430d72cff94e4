"""The synthetic dataset: deterministic, skill visible and audible, cached after one build."""
import numpy as np

from data_builders.pisa import annotation_files as annotations
from pisa_jax.media import decode as media
from data_builders.pisa.build import ensure_synthetic
from data_builders.pisa.synthetic import SIZES
from data_builders.pisa.synthetic_render import SAMPLE_RATE, render_video, skill_parameters


def render(level, seed=0, frames=30):
    return render_video(level, frames, 15.0, 64, np.random.default_rng(seed))


def test_rendering_is_deterministic_by_seed():
    a, b, c = render(4, seed=1), render(4, seed=1), render(4, seed=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def onsets_per_second(audio):
    """Counts note onsets: rises of the 10 ms energy envelope."""
    frame = SAMPLE_RATE // 100
    energy = np.square(audio[: audio.size // frame * frame]).reshape(-1, frame).mean(1)
    rises = np.flatnonzero((energy[1:] > 2 * energy[:-1]) & (energy[1:] > 0.01 * energy.max()))
    distinct = rises[np.insert(np.diff(rises) > 3, 0, True)]
    return distinct.size / (audio.size / SAMPLE_RATE)


def pressed_fraction(frames):
    """Share of pixels showing a pressed (blue) key."""
    pixels = frames.astype(int)
    return ((pixels[..., 2] - pixels[..., 0]) > 60).mean()


def test_skill_is_seen_and_heard():
    low = [render(0, seed) for seed in range(3)]
    high = [render(9, seed) for seed in range(3)]
    assert min(onsets_per_second(h[1]) for h in high) > 2 * max(onsets_per_second(l[1])
                                                                for l in low)
    assert min(pressed_fraction(h[0]) for h in high) > 2 * max(pressed_fraction(l[0])
                                                              for l in low)
    params = [skill_parameters(level) for level in range(10)]
    for name, sign in (("chord_size", 1), ("chords_per_s", 1), ("jitter_beats", -1),
                       ("wrong_prob", -1), ("shake", -1), ("dynamics", -1)):
        values = sign * np.array([p[name] for p in params])
        assert np.all(np.diff(values) >= 0) and values[-1] > values[0], name


def test_tiny_dataset_is_built_once_and_reused(synthetic_tiny):
    info = synthetic_tiny.path / "dataset_info.json"
    stamp = info.stat().st_mtime_ns
    again = ensure_synthetic(synthetic_tiny.data_dir, size="tiny")
    assert again.path == synthetic_tiny.path and info.stat().st_mtime_ns == stamp
    size = SIZES["tiny"]
    splits = annotations.load_annotations(synthetic_tiny.manual_dir / "annotations")
    assert (len(splits["train"]), len(splits["test"])) == (20, 10)
    train_ids = {s.video_id for s in splits["train"]}
    assert not train_ids & {s.video_id for s in splits["test"]}
    video = synthetic_tiny.manual_dir / "videos" / f"{min(train_ids)}.mp4"
    info = media.probe(video)
    assert info.fps == size.fps and info.has_audio
    frames_per_sample = size.clips_per_sample * size.clip_length
    assert info.num_frames >= size.train_samples_per_video * frames_per_sample
