"""Mel spectrograms of a sample's audio: the aural input of the model.

Paper's layout (default): the audio of a sample's frames -> one mel spectrogram (STFT window
2048, hop 512, 128 mel bands, librosa's defaults otherwise: centred frames, Hann window,
fmin 0, fmax sr/2) -> power_to_db(ref=max, top_db=80) -> scaled to [0, 1] by its own min and
max -> resized to size x size. Parmar's layout: one such spectrogram per clip, with fmin 20 Hz,
fmax 8300 Hz. (Min-max scaling removes any dB offset, so `ref` does not change the result.)

Audio of a frame range [first, last]: samples round(first * sr / fps) up to
round((last + 1) * sr / fps), i.e. from the start of the first frame to the end of the last.
Frames that are not consecutive (the unidist scheme) contribute the audio of each run of
consecutive frames, concatenated in order, so a sample's audio is always as long as its frames.

Resize: bilinear with antialiasing, pixel centres aligned (the convention of PIL's BILINEAR
and torchvision's antialiased resize), done in float: rows (mel bands, low to high) 128 ->
size, columns (time) -> size. Output float32 in [0, 1], row 0 = lowest mel band.
"""
from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 44100        # Hz: every recording's audio is resampled to this before the STFT
N_FFT = 2048
HOP_LENGTH = 512
N_MELS = 128
TOP_DB = 80.0
PARMAR_FMIN, PARMAR_FMAX = 20.0, 8300.0


def mel_db(audio: np.ndarray, sample_rate: int, *, fmin: float = 0.0,
           fmax: float | None = None) -> np.ndarray:
    """float audio [n] -> dB mel spectrogram [128, frames] (max = 0 dB, floor -80 dB)."""
    import librosa  # heavy import, only where spectrograms are made
    power = librosa.feature.melspectrogram(
        y=np.asarray(audio, np.float32), sr=sample_rate, n_fft=N_FFT, hop_length=HOP_LENGTH,
        n_mels=N_MELS, fmin=fmin, fmax=fmax)
    return librosa.power_to_db(power, ref=np.max, top_db=TOP_DB)


def scale_unit(db: np.ndarray) -> np.ndarray:
    """Min-max scaling to [0, 1]; a constant input (silence) gives all zeros."""
    low, high = float(db.min()), float(db.max())
    if high - low <= 0.0:
        return np.zeros(db.shape, np.float32)
    return ((db - low) / (high - low)).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] weights of 1-D antialiased linear interpolation, rows sum to 1."""
    scale = in_size / out_size
    support = max(scale, 1.0)  # widen the triangle when shrinking (antialiasing)
    centres = (np.arange(out_size) + 0.5) * scale  # output pixel centres in input coordinates
    inputs = np.arange(in_size) + 0.5
    weights = np.clip(1.0 - np.abs(inputs[None, :] - centres[:, None]) / support, 0.0, None)
    return weights / weights.sum(axis=1, keepdims=True)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """float image [h, w] -> [height, width], antialiased bilinear (see module doc)."""
    rows = _resize_weights(image.shape[0], height)
    cols = _resize_weights(image.shape[1], width)
    return (rows @ image.astype(np.float64) @ cols.T).astype(np.float32)


def frames_audio(audio: np.ndarray, sample_rate: int, frames: np.ndarray,
                 fps: float) -> np.ndarray:
    """The audio of video frames `frames` (any frame indices, in order) -> float32 [n]."""
    frames = np.asarray(frames, np.int64)
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    pieces = []
    for run in np.split(frames, breaks):
        start = int(np.floor(run[0] * sample_rate / fps + 0.5))
        end = int(np.floor((run[-1] + 1) * sample_rate / fps + 0.5))
        if end > audio.shape[0]:
            raise ValueError(f"audio has {audio.shape[0]} samples, frames up to {run[-1]} "
                             f"need {end}")
        pieces.append(audio[start:end])
    return np.concatenate(pieces).astype(np.float32, copy=False)


def frames_spectrogram(audio: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float,
                       size: int = 224, per_clip: bool = False, clips: int = 10,
                       clip_length: int = 16) -> np.ndarray:
    """Spectrogram(s) of the audio of `frames` -> float32 [size, size] or [clips, size, size]."""
    frames = np.asarray(frames, np.int64)
    if not per_clip:
        db = mel_db(frames_audio(audio, sample_rate, frames, fps), sample_rate)
        return resize_bilinear(scale_unit(db), size, size)
    if frames.size != clips * clip_length:
        raise ValueError(f"{frames.size} frames cannot make {clips} clips of {clip_length}")
    out = np.empty((clips, size, size), np.float32)
    for clip, clip_frames in enumerate(frames.reshape(clips, clip_length)):
        db = mel_db(frames_audio(audio, sample_rate, clip_frames, fps), sample_rate,
                    fmin=PARMAR_FMIN, fmax=PARMAR_FMAX)
        out[clip] = resize_bilinear(scale_unit(db), size, size)
    return out


def sample_spectrogram(audio: np.ndarray, sample_rate: int, first_frame: int, last_frame: int,
                       fps: float, size: int = 224, per_clip: bool = False, clips: int = 10,
                       clip_length: int = 16) -> np.ndarray:
    """Spectrogram(s) of consecutive frames first_frame..last_frame (inclusive)."""
    frames = np.arange(first_frame, last_frame + 1)
    return frames_spectrogram(audio, sample_rate, frames, fps, size, per_clip, clips,
                              clip_length)
