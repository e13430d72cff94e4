"""One video -> its samples: frames decoded once (streaming), audio once, a spectrogram per
sample (or per clip). Runs in a worker thread; imports neither TFDS nor JAX.

A stored sample may be smaller than an annotated one (the `*_demo` configs keep 2 clips x 8
frames of PISA's 160): `select_frames` then spreads the stored clips over the annotated frames.
The spectrogram always hears every annotated frame, so a small sample covers the same seconds of
the performance as the paper's, at a lower frame rate.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from data_builders.pisa.checks import audio_samples_needed
from data_builders.pisa.layouts import VideoJob, list_frame_images
from pisa_jax.media import decode as media
from pisa_jax.media.spectrogram import SAMPLE_RATE, frames_spectrogram


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a stored sample looks like (the builder config's shape fields)."""
    image_size: int
    clips_per_sample: int
    clip_length: int
    spectrogram_size: int
    spectrogram_per_clip: bool

    @property
    def spectrogram_shape(self) -> tuple[int, ...]:
        """[F, F], or [clips, F, F] with one spectrogram per clip."""
        square = (self.spectrogram_size,) * 2
        return (self.clips_per_sample, *square) if self.spectrogram_per_clip else square


def select_frames(annotated: np.ndarray, clips: int, clip_length: int) -> np.ndarray:
    """An annotated sample's frames [N] -> the frames to store [clips * clip_length].

    Clip c takes part c of the annotated frames (positions [c N/clips, (c+1) N/clips)) and
    keeps clip_length frames evenly spaced in it, at the centres of equal slices: PISA's 160
    consecutive frames -> 2 clips of frames 5, 15, ..., 75 and 85, ..., 155 (every 10th). With
    N = clips * clip_length it keeps every frame. N must divide by clips into parts of at least
    clip_length frames (the builder checks the annotations first)."""
    annotated = np.asarray(annotated)
    part = annotated.size // clips
    if part * clips != annotated.size or part < clip_length:
        raise ValueError(f"{annotated.size} annotated frames cannot make {clips} clips of "
                         f"{clip_length}")
    within = (np.arange(clip_length) * part + part // 2) // clip_length   # slice centres
    return annotated[(np.arange(clips)[:, None] * part + within[None, :]).reshape(-1)]


def _frames(job: VideoJob, wanted: np.ndarray, size: int) -> np.ndarray:
    if job.layout == "frames":
        images = list_frame_images(job.path)
        return media.read_image_frames([images[i] for i in wanted], size, job.crop)
    return media.read_frames(job.path, wanted, size, job.crop, start_time=job.start_s)


def extract_job(job: VideoJob, layout: Layout, *, audio: bool = True) -> list[tuple[str, dict]]:
    """-> [(key, example)] for every sample of the video, in annotation order.

    audio=False (a visual-only model's prediction) reads no sound: zero spectrograms."""
    stored = [select_frames(s.frames, layout.clips_per_sample, layout.clip_length)
              for s in job.samples]
    wanted = np.unique(np.concatenate(stored))
    frames = _frames(job, wanted, layout.image_size)          # [len(wanted), S, S, 3]
    if audio:
        sound = media.read_audio(job.audio_path, SAMPLE_RATE, start_time=job.start_s)
        needed = audio_samples_needed(job) + 1
        if sound.size < needed:  # within the checked slack: pad the last few ms with silence
            sound = np.pad(sound, (0, needed - sound.size))
    examples = []
    for sample, sample_frames in zip(job.samples, stored):
        # the audio of every annotated frame: per clip, of that clip's part of them
        spectrogram = frames_spectrogram(
            sound, SAMPLE_RATE, sample.frames, job.framerate, layout.spectrogram_size,
            layout.spectrogram_per_clip, layout.clips_per_sample,
            sample.frames.size // layout.clips_per_sample) if audio \
            else np.zeros(layout.spectrogram_shape, np.float32)
        examples.append((sample.key, {
            "video": frames[np.searchsorted(wanted, sample_frames)],   # [T, S, S, 3] uint8
            "spectrogram": spectrogram.astype(np.float16),
            "player_level": sample.player_level,
            "song_level": np.int32(sample.song_level),
            "video_id": np.int32(sample.video_id),
            "sample_idx": np.int32(sample.sample_idx),
            "framerate": np.float32(job.framerate),
        }))
    return examples
