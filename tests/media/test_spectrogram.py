"""Spectrograms: the paper's recipe computed directly with librosa, alignment, Parmar's layout."""
import librosa
import numpy as np
import pytest

from data_helpers import SR, coded_frames
from pisa_jax.media import decode as media, encode
from pisa_jax.media.spectrogram import (frames_audio, frames_spectrogram, resize_bilinear,
                                       sample_spectrogram)


def direct(audio, first, last, fps, size, **mel):
    """SPEC section 2 written out with librosa, independent of the module's helpers."""
    y = audio[int(round(first * SR / fps)):int(round((last + 1) * SR / fps))]
    power = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=2048, hop_length=512, n_mels=128,
                                           **mel)
    db = librosa.power_to_db(power, ref=np.max)
    unit = (db - db.min()) / (db.max() - db.min())
    return resize_bilinear(unit, size, size)


def test_equals_direct_librosa():
    audio = np.random.default_rng(0).standard_normal(8 * SR).astype(np.float32)
    out = sample_spectrogram(audio, SR, 40, 199, 29.97, size=224)
    assert out.shape == (224, 224) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out, direct(audio, 40, 199, 29.97, 224), atol=1e-6)


def test_per_clip_is_parmars_recipe():
    audio = np.random.default_rng(1).standard_normal(4 * SR).astype(np.float32)
    out = sample_spectrogram(audio, SR, 0, 79, 25, size=32, per_clip=True, clips=5,
                             clip_length=16)
    assert out.shape == (5, 32, 32)
    np.testing.assert_allclose(out[2], direct(audio, 32, 47, 25, 32, fmin=20, fmax=8300),
                               atol=1e-6)


def test_unidist_frames_take_each_clips_audio():
    audio = np.arange(10 * SR, dtype=np.float32)
    frames = np.concatenate([np.arange(0, 16), np.arange(100, 116)])
    piece = frames_audio(audio, SR, frames, 25)
    assert piece.size == 32 * SR // 25
    assert piece[0] == 0 and piece[16 * SR // 25] == 100 * SR // 25


def test_resize_matches_pil_bilinear():
    image_module = pytest.importorskip("PIL.Image")
    image = np.random.default_rng(2).random((128, 470)).astype(np.float32)
    ours = resize_bilinear(image, 224, 224)
    theirs = np.asarray(image_module.fromarray(image, mode="F").resize(
        (224, 224), image_module.BILINEAR))
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_silence_gives_zeros_not_nan():
    out = sample_spectrogram(np.zeros(SR, np.float32), SR, 0, 15, 25, size=16)
    assert np.all(out == 0)


@pytest.mark.parametrize("fps", [25, 29.97])
def test_click_lands_in_its_columns(tmp_path, fps):
    """A click at video frame c of a sample starting at frame a lands at column
    (c - a) / frames * size of its spectrogram, after AAC encoding and decoding."""
    n, first, frames, click_frame, size = 200, 20, 160, 100, 64
    audio = np.zeros(int(n / fps * SR), np.float32)
    start = int(round(click_frame * SR / fps))
    audio[start:start + 64] = np.hanning(64)
    path = tmp_path / "click.mp4"
    encode.write_video(path, coded_frames(n), fps, audio, SR)
    decoded = media.read_audio(path, SR)
    out = frames_spectrogram(decoded, SR, np.arange(first, first + frames), fps, size)
    column = int(np.argmax(out.mean(axis=0)))
    assert abs(column - (click_frame - first) / frames * size) <= 1.5
