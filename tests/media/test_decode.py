"""Decoding: exact frame indexing, crop, trim, audio, and clear errors for bad files."""
import subprocess

import numpy as np
import pytest

from data_helpers import SR, coded_frames, read_codes, write_jpegs
from pisa_jax.media import decode as media, encode
from pisa_jax.errors import MediaError


@pytest.mark.parametrize("fps", [24, 25, 29.97, 30])
def test_frames_are_the_annotated_ones(tmp_path, write_coded_video, fps):
    path = write_coded_video(tmp_path / "v.mp4", 60, fps)
    info = media.probe(path)
    assert (info.num_frames, info.width, info.height, info.has_audio) == (60, 64, 48, True)
    assert info.fps == pytest.approx(fps, abs=0.01)
    wanted = [0, 5, 5, 59, 37, 38, 1]   # any order, repeats
    frames = media.read_frames(path, wanted, 32)
    assert frames.shape == (7, 32, 32, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(read_codes(frames), wanted)


def test_trim_and_crop(tmp_path):
    box = (32, 16, 96, 64)   # the code is drawn only inside the box, its inverse outside
    path = tmp_path / "v.mp4"
    encode.write_video(path, coded_frames(40, 72, 128, box), 25)
    frames = media.read_frames(path, [0, 3], 32, crop=box, start_time=10 / 25 + 0.001)
    np.testing.assert_array_equal(read_codes(frames), [11, 14])   # first frame after 0.401 s
    uncropped = media.read_frames(path, [0], 32)
    assert read_codes(uncropped)[0] != 0


@pytest.mark.parametrize("extension", ["jpg", "png"])
def test_image_folder_frames(tmp_path, extension):
    paths = write_jpegs(tmp_path / "frames", coded_frames(12), extension)
    out = media.read_image_frames([paths[i] for i in (3, 11, 0)], 32)
    np.testing.assert_array_equal(read_codes(out), [3, 11, 0])


def test_image_folder_of_mixed_formats_is_refused(tmp_path):
    jpegs = write_jpegs(tmp_path / "a", coded_frames(2))
    pngs = write_jpegs(tmp_path / "b", coded_frames(2), "png")
    with pytest.raises(MediaError, match="mixed formats"):
        media.read_image_frames([jpegs[0], pngs[1]], 32)


def test_audio_is_mono_float_at_44k_and_aligned(tmp_path):
    n, fps = 50, 25
    audio = np.zeros(n * SR // fps, np.float32)
    click = 30 * SR // fps
    audio[click:click + 100] = 0.9
    path = tmp_path / "v.mp4"
    encode.write_video(path, coded_frames(n), fps, audio, SR)
    decoded = media.read_audio(path, SR)
    assert decoded.dtype == np.float32 and abs(decoded.size - audio.size) <= 1024
    assert abs(int(np.argmax(np.abs(decoded) > 0.3)) - click) <= 2   # AAC delay is compensated
    trimmed = media.read_audio(path, SR, start_time=10 / fps)
    assert abs(int(np.argmax(np.abs(trimmed) > 0.3)) - (click - 10 * SR // fps)) <= 2


def test_stereo_is_averaged(tmp_path):
    t = np.arange(SR) / SR
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 440 * t)
    encode.write_wav(tmp_path / "s.wav", np.stack([left, right], 1), SR)
    decoded = media.read_audio(tmp_path / "s.wav", SR)
    np.testing.assert_allclose(decoded, (left + right) / 2, atol=2e-4)


def test_bad_files_raise_media_error_naming_the_file(tmp_path, write_coded_video):
    with pytest.raises(MediaError, match="file not found"):
        media.probe(tmp_path / "missing.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(MediaError, match="cannot open") as error:
        media.probe(garbage)
    assert str(garbage) in str(error.value)
    silent = write_coded_video(tmp_path / "silent.mp4", 10, 25, audio=False)
    assert not media.probe(silent).has_audio
    with pytest.raises(MediaError, match="no audio stream"):
        media.read_audio(silent, SR)
    with pytest.raises(MediaError, match="only 10 frames decode"):
        media.read_frames(silent, [12], 32)


def test_truncated_video_is_detected(tmp_path):
    path = tmp_path / "v.mp4"
    encode.write_video(path, coded_frames(100), 25, np.zeros(4 * SR, np.float32))
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"   # the index (moov) is at the end: cut files cannot open
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="cannot open"):
        media.probe(cut)
    front = tmp_path / "front.mp4"   # index first (faststart): the header promises more frames
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-i", str(path), "-c", "copy",
                    "-movflags", "+faststart", str(front)], check=True)
    cut.write_bytes(front.read_bytes()[: len(data) // 2])
    with pytest.raises(MediaError, match="truncated"):
        media.probe(cut)
