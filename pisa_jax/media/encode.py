"""Writing real video files (H.264 + AAC in mp4) from numpy frames and audio.

Used by the synthetic dataset and by the tests: the builder then reads them exactly as it
reads downloaded PISA videos.
"""
from __future__ import annotations

import fractions
import functools
import os
import subprocess
import tempfile

import numpy as np

from pisa_jax.media.decode import ffmpeg_exe


@functools.lru_cache(maxsize=1)
def _video_codec() -> list[str]:
    """libx264 when this ffmpeg has it (imageio-ffmpeg's builds do), else MPEG-4 part 2."""
    encoders = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"],
                              capture_output=True, text=True).stdout
    if " libx264 " in encoders:
        return ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-threads", "1"]
    return ["-c:v", "mpeg4", "-q:v", "2"]


def frame_rate_fraction(fps: float) -> str:
    """29.97 -> '30000/1001' (the NTSC rates video files really use), 25 -> '25/1'."""
    for base in (24, 30, 60):
        if abs(fps - base * 1000 / 1001) < 0.006:
            return f"{base * 1000}/1001"
    rate = fractions.Fraction(fps).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """float audio [n] (mono) or [n, channels] in [-1, 1] -> 16-bit PCM wav."""
    import scipy.io.wavfile  # scipy is a dependency; imported here to keep imports light
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pcm = np.clip(np.asarray(audio, np.float64), -1.0, 1.0) * 32767.0
    scipy.io.wavfile.write(os.fspath(path), sample_rate, np.round(pcm).astype(np.int16))


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float,
                audio: np.ndarray | None = None, sample_rate: int = 44100,
                audio_codec: str = "aac") -> None:
    """uint8 frames [n, h, w, 3] (h, w even) + optional mono audio -> video file at `path`.

    The container's frame rate is exactly `fps` (as a fraction); frame i is frames[i].
    """
    frames = np.ascontiguousarray(frames, np.uint8)
    n, height, width, _ = frames.shape
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        audio_in = []
        if audio is not None:
            wav = os.path.join(tmp, "audio.wav")
            write_wav(wav, audio, sample_rate)
            audio_in = ["-i", wav]
        audio_out = ["-c:a", audio_codec, "-b:a", "96k"] if audio is not None else ["-an"]
        cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-framerate", frame_rate_fraction(fps), "-i", "pipe:0", *audio_in,
               "-map", "0:v:0", *(["-map", "1:a:0"] if audio is not None else []),
               *_video_codec(), "-pix_fmt", "yuv420p", *audio_out, os.fspath(path)]
        result = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {path}: {result.stderr.decode()[-500:]}")
