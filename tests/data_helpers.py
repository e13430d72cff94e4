"""Helpers for the data tests: tiny real video files whose frame i shows the number i,
and PISA-schema annotation records for them."""
import numpy as np

from pisa_jax.media.spectrogram import SAMPLE_RATE as SR


def coded_frames(n, height=48, width=64, box=None):
    """uint8 [n, height, width, 3]: frame i shows i as 8 bits in a 2 x 4 grid of big blocks
    (robust to compression and resizing). box=(x1, y1, x2, y2) draws the code only there and
    its inverse elsewhere, to tell a correct crop from a wrong one."""
    x1, y1, x2, y2 = box or (0, 0, width, height)
    frames = np.zeros((n, height, width, 3), np.uint8)
    for i in range(n):
        inner = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
        bh, bw = (y2 - y1) // 2, (x2 - x1) // 4
        for bit in range(8):
            if (i >> bit) & 1:
                r, c = divmod(bit, 4)
                inner[r * bh:(r + 1) * bh, c * bw:(c + 1) * bw] = 255
        if box is not None:
            frames[i] = 255 - np.resize(inner, (height, width, 3))
        frames[i, y1:y2, x1:x2] = inner
    return frames


def read_codes(frames):
    """Inverse of coded_frames for frames resized to any square size: [n] ints."""
    size = frames.shape[1]
    codes = np.zeros(len(frames), int)
    for bit in range(8):
        r, c = divmod(bit, 4)
        y, x = int((r + 0.5) * size / 2), int((c + 0.5) * size / 4)
        codes |= (frames[:, y, x].mean(-1) > 128).astype(int) << bit
    return codes


def tone(n_samples, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(n_samples)).astype(np.float32)


def records(video_id, level, fps, n_samples, frames_per_sample, song_level=1,
            scheme="consecutive"):
    """PISA-schema records for one video (PISA's two frame layouts, 2 clips per sample)."""
    out = []
    clip = frames_per_sample // 2
    for j in range(n_samples):
        if scheme == "consecutive":
            frames = list(range(j * frames_per_sample, (j + 1) * frames_per_sample))
        else:
            frames = [c * clip * n_samples + j * clip + f for c in range(2) for f in range(clip)]
        out.append({"key": f"{video_id}_{j}", "video_id": video_id, "sample_idx": j,
                    "player_level": level, "song_level": song_level, "framerate": fps,
                    "frames": frames})
    return out


def write_jpegs(folder, frames, extension="jpg"):
    """frames -> folder/0.jpg, 1.jpg, ... (unpadded names: natural order matters)."""
    import subprocess
    from pisa_jax.media.decode import ffmpeg_exe
    folder.mkdir(parents=True, exist_ok=True)
    n, height, width, _ = frames.shape
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                    "-s", f"{width}x{height}", "-i", "pipe:0", "-q:v", "2", "-start_number", "0",
                    str(folder / f"%d.{extension}")], input=frames.tobytes(), check=True)
    return [folder / f"{i}.{extension}" for i in range(n)]
