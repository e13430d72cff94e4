"""One video -> its samples: frames decoded once (streaming), audio once, a spectrogram per
sample (or per clip). Runs in a worker thread; imports neither TFDS nor JAX."""
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


def _frames(job: VideoJob, wanted: np.ndarray, size: int) -> np.ndarray:
    if job.layout == "frames":
        images = list_frame_images(job.path)
        return media.read_image_frames([images[i] for i in wanted], size, job.crop)
    return media.read_frames(job.path, wanted, size, job.crop, start_time=job.start_s)


def extract_job(job: VideoJob, layout: Layout, *, audio: bool = True) -> list[tuple[str, dict]]:
    """-> [(key, example)] for every sample of the video, in annotation order.

    audio=False (a visual-only model's prediction) reads no sound: zero spectrograms."""
    wanted = np.unique(np.concatenate([s.frames for s in job.samples]))
    frames = _frames(job, wanted, layout.image_size)          # [len(wanted), S, S, 3]
    if audio:
        sound = media.read_audio(job.audio_path, SAMPLE_RATE, start_time=job.start_s)
        needed = audio_samples_needed(job) + 1
        if sound.size < needed:  # within the checked slack: pad the last few ms with silence
            sound = np.pad(sound, (0, needed - sound.size))
    examples = []
    for sample in job.samples:
        spectrogram = frames_spectrogram(
            sound, SAMPLE_RATE, sample.frames, job.framerate, layout.spectrogram_size,
            layout.spectrogram_per_clip, layout.clips_per_sample, layout.clip_length) if audio \
            else np.zeros(layout.spectrogram_shape, np.float32)
        examples.append((sample.key, {
            "video": frames[np.searchsorted(wanted, sample.frames)],   # [T, S, S, 3] uint8
            "spectrogram": spectrogram.astype(np.float16),
            "player_level": sample.player_level,
            "song_level": np.int32(sample.song_level),
            "video_id": np.int32(sample.video_id),
            "sample_idx": np.int32(sample.sample_idx),
            "framerate": np.float32(job.framerate),
        }))
    return examples
