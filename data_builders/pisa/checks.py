"""Checking every video before anything is written: decodable, long enough, right frame rate,
audio present and long enough, crop box inside the frame.

Each check decodes the video stream once without output (exact frame count; a truncated file
decodes fewer frames than its header promises) and the audio stream once.
"""
from __future__ import annotations

import dataclasses

from data_builders.pisa.layouts import VideoJob, list_frame_images
from pisa_jax.errors import MediaError
from pisa_jax.media import decode as media
from pisa_jax.media.spectrogram import SAMPLE_RATE

FPS_TOLERANCE = 0.03        # relative; PISA annotates e.g. 29.97 for 30000/1001 containers
AUDIO_SLACK_S = 0.1         # audio may end this much before the last frame (zero-padded)


def audio_samples_needed(job: VideoJob) -> int:
    return int(round(job.frames_needed * SAMPLE_RATE / job.framerate))


def _scaled_crop(job: VideoJob, width: int, height: int):
    """The raw crop box in this file's pixels (boxes were drawn on a reference height)."""
    if job.crop is None or job.crop_reference_height is None:
        return job.crop
    scale = height / job.crop_reference_height
    return tuple(int(round(v * scale)) for v in job.crop)


def _check_video(job: VideoJob, problems: list) -> VideoJob:
    info = media.probe(job.path, count_frames=True)
    if abs(info.fps - job.framerate) > FPS_TOLERANCE * job.framerate:
        problems.append((job.path, f"video {job.video_id}: container frame rate {info.fps:g} is "
                                   f"far from the annotated {job.framerate:g}"))
    skipped = int(round(job.start_s * info.fps))
    if info.num_frames - skipped < job.frames_needed:
        after = f" after {job.start_s:g} s" if job.start_s else ""
        problems.append((job.path, f"video {job.video_id}: too short: {info.num_frames - skipped}"
                                   f" frames{after}, annotations need {job.frames_needed}"))
    if not info.has_audio:
        problems.append((job.path, f"video {job.video_id}: no audio stream"))
    crop = _scaled_crop(job, info.width, info.height)
    if crop is not None and (crop[2] > info.width or crop[3] > info.height):
        problems.append((job.path, f"video {job.video_id}: crop box {crop} (raw {job.crop}) "
                                   f"outside the {info.width}x{info.height} frame"))
    return dataclasses.replace(job, crop=crop)


def _check_frames(job: VideoJob, problems: list) -> VideoJob:
    images = list_frame_images(job.path)
    if len(images) < job.frames_needed:
        problems.append((job.path, f"video {job.video_id}: too short: {len(images)} frame images"
                                   f", annotations need {job.frames_needed}"))
    if images:
        media.read_image_frames(images[:1], 8)  # decodable at all?
    return job


def check_job(job: VideoJob) -> tuple[VideoJob, list[tuple[str, str]]]:
    """-> (job with its crop box in file pixels, problems). Runs in a worker thread."""
    problems: list[tuple[str, str]] = []
    try:
        if job.layout == "frames":
            job = _check_frames(job, problems)
        else:
            job = _check_video(job, problems)
    except MediaError as error:
        problems.append((error.path, f"video {job.video_id}: {error.problem}"))
        return job, problems
    if any("no audio stream" in p for _, p in problems):
        return job, problems
    try:
        audio = media.read_audio(job.audio_path, SAMPLE_RATE, start_time=job.start_s)
    except MediaError as error:
        problems.append((error.path, f"video {job.video_id}: audio: {error.problem}"))
        return job, problems
    needed = audio_samples_needed(job)
    if audio.size < needed - AUDIO_SLACK_S * SAMPLE_RATE:
        problems.append((job.audio_path, f"video {job.video_id}: audio too short: "
                                         f"{audio.size / SAMPLE_RATE:.2f} s, annotations need "
                                         f"{needed / SAMPLE_RATE:.2f} s"))
    return job, problems
