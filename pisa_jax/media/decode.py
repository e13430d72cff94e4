"""Video and audio decoding with the ffmpeg binary shipped by imageio-ffmpeg.

Frame i of a video is the i-th frame ffmpeg decodes at the container's native rate: no frame
rate conversion (`-fps_mode passthrough`), so no frame is dropped or duplicated. Each call is
one streaming decode; the frames come out of a pipe as raw RGB and only the requested ones are
kept. Crop and resize happen inside ffmpeg (crop exact to the pixel, then bilinear scaling to
size x size), before the pipe, so a long video costs little memory.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence

import numpy as np

from pisa_jax.errors import MediaError

_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "quad": 4, "4.0": 4, "4.1": 5,
             "5.0": 5, "5.1": 6, "6.0": 6, "6.1": 7, "7.0": 7, "7.1": 8}


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    fps: float          # the container's frame rate (ffmpeg's "fps", else "tbr")
    num_frames: int     # frames that decode (counted), or round(duration * fps) if not counted
    width: int          # as decoded, i.e. after a rotation flag is applied
    height: int
    has_audio: bool
    duration_s: float   # container duration from the header


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    import imageio_ffmpeg  # imported lazily: it probes the platform on import
    return imageio_ffmpeg.get_ffmpeg_exe()


def _header(path: str | os.PathLike) -> str:
    """ffmpeg's description of the input (stderr of `ffmpeg -i path`), or MediaError."""
    if not os.path.isfile(path):
        raise MediaError(path, "file not found")
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", os.fspath(path)],
                            capture_output=True, text=True, errors="replace")
    text = result.stderr
    if "Input #0" not in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1:] or ["?"]
        raise MediaError(path, f"ffmpeg cannot open it ({last[0].strip()})")
    return text


def _audio_channels(header: str) -> int | None:
    match = re.search(r"Stream #\d+:\d+.*?: Audio: [^\n]*?Hz, ([^,\n]+)", header)
    if not match:
        return None
    layout = match.group(1).strip()
    counted = re.match(r"(\d+) channels", layout)
    return int(counted.group(1)) if counted else _CHANNELS.get(layout.split("(")[0])


def _frame_rate(stream_line: str) -> float | None:
    fps = re.search(r"([\d.]+) fps", stream_line)
    if fps:
        return float(fps.group(1))
    tbr = re.search(r"([\d.]+)(k?) tbr", stream_line)
    return float(tbr.group(1)) * (1000 if tbr.group(2) else 1) if tbr else None


def probe(path: str | os.PathLike, count_frames: bool = True) -> VideoInfo:
    """Frame rate, size, frame count and audio presence of a video file.

    With `count_frames` the whole video stream is decoded (no output) to count its frames
    exactly; this also catches truncated or corrupt files, whose header promises more frames
    than decode.
    """
    header = _header(path)
    video = re.search(r"Stream #\d+:\d+.*?: Video: ([^\n]*)", header)
    if not video:
        raise MediaError(path, "has no video stream")
    line = video.group(1)
    size = re.search(r", (\d+)x(\d+)", line)
    fps = _frame_rate(line)
    if not size or fps is None:
        raise MediaError(path, f"cannot read frame size / rate from ffmpeg's header: {line}")
    width, height = int(size.group(1)), int(size.group(2))
    rotation = re.search(r"rotation of (-?[\d.]+) degrees", header)
    if rotation and round(abs(float(rotation.group(1)))) % 180 == 90:
        width, height = height, width  # ffmpeg auto-rotates on decode
    duration = re.search(r"Duration: (\d+):(\d+):([\d.]+)", header)
    duration_s = (int(duration.group(1)) * 3600 + int(duration.group(2)) * 60
                  + float(duration.group(3))) if duration else 0.0
    expected = int(round(duration_s * fps))
    num_frames = _count_frames(path, expected) if count_frames else expected
    has_audio = re.search(r"Stream #\d+:\d+.*?: Audio:", header) is not None
    return VideoInfo(fps, num_frames, width, height, has_audio, duration_s)


def _count_frames(path, expected: int) -> int:
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", os.fspath(path), "-map", "0:v:0",
           "-fps_mode", "passthrough", "-f", "null", "-", "-progress", "pipe:1", "-nostats"]
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    counts = re.findall(r"^frame=(\d+)", result.stdout, flags=re.M)
    error = result.stderr.strip().splitlines()[:1]
    if result.returncode != 0 or not counts:
        raise MediaError(path, f"decoding failed ({error[0] if error else 'no frames'})")
    frames = int(counts[-1])
    # A truncated file keeps its header: it promises more frames than decode.
    if expected > 0 and frames < 0.95 * expected - 2:
        detail = f"; ffmpeg: {error[0]}" if error else ""
        raise MediaError(path, f"truncated or corrupt: the header promises ~{expected} frames, "
                               f"only {frames} decode{detail}")
    return frames


def _filters(size: int, crop: Sequence[int] | None) -> str:
    chain = []
    if crop is not None:
        x1, y1, x2, y2 = (int(v) for v in crop)
        chain.append(f"crop={x2 - x1}:{y2 - y1}:{x1}:{y1}:exact=1")
    chain.append(f"scale={size}:{size}:flags=bilinear")
    return ",".join(chain)


def _stream_rgb(cmd: list[str], path, size: int, wanted: np.ndarray, total: int) -> np.ndarray:
    """Runs ffmpeg writing raw rgb24 size x size frames to stdout; keeps frames `wanted`.

    wanted: sorted unique frame numbers in [0, total). Returns [len(wanted), size, size, 3].
    """
    frame_bytes = size * size * 3
    out = np.empty((len(wanted), size, size, 3), np.uint8)
    with tempfile.TemporaryFile() as errors:  # a file, so a chatty ffmpeg never blocks
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors)
        got, slot = 0, 0
        try:
            while got < total:
                buf = proc.stdout.read(frame_bytes)
                if len(buf) < frame_bytes:
                    break
                if slot < len(wanted) and wanted[slot] == got:
                    out[slot] = np.frombuffer(buf, np.uint8).reshape(size, size, 3)
                    slot += 1
                got += 1
        finally:
            proc.stdout.close()
            proc.wait()
        errors.seek(0)
        message = errors.read().decode(errors="replace").strip().splitlines()[:1]
    if got < total:
        detail = f" (ffmpeg: {message[0]})" if message else ""
        raise MediaError(path, f"only {got} frames decode, {total} needed{detail}")
    return out


def read_frames(path: str | os.PathLike, frame_indices: Sequence[int], size: int,
                crop: Sequence[int] | None = None, *, start_time: float = 0.0) -> np.ndarray:
    """Frames `frame_indices` (any order, repeats allowed) -> uint8 [len, size, size, 3].

    crop: (x1, y1, x2, y2) pixels of the decoded frame, x2/y2 exclusive; None = full frame.
    start_time: seconds; frame 0 is then the first frame at or after it (ffmpeg's accurate
    input seek), which trims an untrimmed recording.
    """
    indices = np.asarray(frame_indices, np.int64)
    if indices.size == 0 or indices.min() < 0:
        raise ValueError("frame_indices must be non-empty and >= 0")
    if not os.path.isfile(path):
        raise MediaError(path, "file not found")
    wanted, inverse = np.unique(indices, return_inverse=True)
    total = int(wanted[-1]) + 1
    seek = ["-ss", f"{start_time:.6f}"] if start_time > 0 else []
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", *seek, "-i", os.fspath(path),
           "-map", "0:v:0", "-an", "-sn", "-fps_mode", "passthrough", "-frames:v", str(total),
           "-vf", _filters(size, crop), "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"]
    return _stream_rgb(cmd, path, size, wanted, total)[inverse]


def read_image_frames(paths: Sequence[str | os.PathLike], size: int,
                      crop: Sequence[int] | None = None) -> np.ndarray:
    """Image files (e.g. a folder of extracted JPEG frames) -> uint8 [len, size, size, 3].

    Decoded by the same ffmpeg filters as videos, so crop and resize are identical.
    """
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise MediaError(missing[0], "image file not found")
    # ffmpeg's image2 demuxer picks the decoder from the extension: keep the images' own.
    extensions = {os.path.splitext(os.fspath(p))[1].lower() for p in paths} or {".jpg"}
    if len(extensions) > 1:
        raise MediaError(os.path.dirname(os.fspath(paths[0])),
                         f"frame images of mixed formats {sorted(extensions)}: use one")
    extension = extensions.pop()
    with tempfile.TemporaryDirectory() as tmp:
        for i, image in enumerate(paths):  # numbered links: one image2 sequence, in order
            os.symlink(os.path.abspath(image), os.path.join(tmp, f"{i:08d}{extension}"))
        cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-f", "image2", "-framerate", "25",
               "-i", os.path.join(tmp, f"%08d{extension}"), "-fps_mode", "passthrough",
               "-vf", _filters(size, crop), "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"]
        folder = os.path.dirname(os.fspath(paths[0])) if paths else "."
        return _stream_rgb(cmd, folder, size, np.arange(len(paths)), len(paths))


def read_audio(path: str | os.PathLike, sample_rate: int, *, start_time: float = 0.0,
               duration: float | None = None) -> np.ndarray:
    """The first audio stream as float32 mono at `sample_rate` (channels averaged).

    Sample 0 is at `start_time` seconds (same seek as `read_frames`).
    """
    header = _header(path)
    channels = _audio_channels(header)
    if not re.search(r"Stream #\d+:\d+.*?: Audio:", header):
        raise MediaError(path, "has no audio stream")
    seek = ["-ss", f"{start_time:.6f}"] if start_time > 0 else []
    limit = ["-t", f"{duration:.6f}"] if duration is not None else []
    # Keep the channel count and average here: ffmpeg's own downmix scales by 1/sqrt(2).
    layout = ["-ac", str(channels)] if channels else ["-ac", "1"]
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", *seek, "-i", os.fspath(path), *limit,
           "-map", "0:a:0", "-vn", *layout, "-ar", str(sample_rate), "-f", "f32le", "pipe:1"]
    result = subprocess.run(cmd, capture_output=True)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()[:1]
        raise MediaError(path, f"audio decoding failed ({message[0] if message else '?'})")
    samples = np.frombuffer(result.stdout, np.float32)
    if channels and channels > 1:
        samples = samples[: samples.size // channels * channels].reshape(-1, channels).mean(1)
    if samples.size == 0:
        raise MediaError(path, "audio stream decodes to no samples")
    return np.ascontiguousarray(samples, np.float32)
