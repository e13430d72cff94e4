"""Finding each annotated video in the manual folder (layouts a, b, c of the README).

(a) `<video_id>.<mp4|mkv|webm|...>`: one trimmed video per PISA video id (Parmar's processed
    release, or the user's own videos); used as it is (full frame, frame 0 = first frame).
(b) `<video_id>/` holding the video's frames as images (frame i = i-th file in natural
    order: 2.jpg before 10.jpg) and `<video_id>.wav` somewhere in the folder tree.
(c) `<youtube_id>.<ext>` (or yt-dlp's `Title [<youtube_id>].<ext>`): the untrimmed YouTube
    recording, trimmed at the raw annotations' start time and cropped with their crop box.
Files are found anywhere below the manual folder; (a) wins over (b) over (c) per video.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence

from data_builders.pisa.annotation_files import RawVideo, Sample

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg",
                    ".ts", ".3gp", ".ogv", ".wmv"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp"}


@dataclasses.dataclass(frozen=True)
class VideoJob:
    """Everything needed to turn one annotated video into its samples."""
    video_id: int
    split: str
    layout: str                    # "video" (a), "frames" (b) or "youtube" (c)
    path: str                      # video file, or frame folder
    audio_path: str                # same as path, or the .wav of a frame folder
    framerate: float               # annotated frame rate: all sample timing uses it
    samples: tuple[Sample, ...]
    start_s: float = 0.0           # trim start (layout c)
    crop: tuple[int, int, int, int] | None = None   # in decoded-frame pixels
    crop_reference_height: int | None = None        # frame height the raw crop box was drawn on

    @property
    def frames_needed(self) -> int:
        return max(int(s.frames.max()) for s in self.samples) + 1


def natural_key(name: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _index(manual_dir: str):
    """Maps stems to video files, digit-named folders to image folders, stems to wavs."""
    videos, folders, wavs = {}, {}, {}
    for root, dirs, files in os.walk(manual_dir):
        dirs.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            path = os.path.join(root, name)
            if ext.lower() in VIDEO_EXTENSIONS:
                videos.setdefault(stem, []).append(path)
                tagged = re.search(r"\[([A-Za-z0-9_-]{11})\]$", stem)  # yt-dlp default name
                if tagged and tagged.group(1) != stem:
                    videos.setdefault(tagged.group(1), []).append(path)
            elif ext.lower() == ".wav":
                wavs.setdefault(stem, []).append(path)
        base = os.path.basename(root)
        if base.isdigit() and any(os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
                                  for f in files):
            folders.setdefault(str(int(base)), []).append(root)
    return videos, folders, wavs


def list_frame_images(folder: str) -> list[str]:
    names = [n for n in os.listdir(folder) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def crop_reference_heights(raw: Mapping[int, RawVideo]) -> dict[str, int]:
    """Frame height each YouTube recording's crop boxes were drawn on (an inference).

    PISA's boxes all fit a 640x360 frame except those of two recordings (video ids 1-5),
    which reach x2 = 820, y2 = 706 and fit 1280x720: read as 360p and 720p frames.
    """
    heights: dict[str, int] = {}
    for video in raw.values():
        x1, y1, x2, y2 = video.crop
        height = 360 if x2 <= 640 and y2 <= 360 else 720 if x2 <= 1280 and y2 <= 720 else 1080
        heights[video.youtube_id] = max(height, heights.get(video.youtube_id, 0))
    return heights


def plan_jobs(splits: Mapping[str, Sequence[Sample]], manual_dir: str,
              raw: Mapping[int, RawVideo] | None):
    """-> (jobs, problems): a VideoJob per annotated video found, (video_id, path, problem)
    per video not found."""
    videos, folders, wavs = _index(manual_dir)
    reference = crop_reference_heights(raw) if raw else {}
    jobs, problems = [], []
    for split, samples in splits.items():
        by_video: dict[int, list[Sample]] = {}
        for sample in samples:
            by_video.setdefault(sample.video_id, []).append(sample)
        for video_id, own in by_video.items():
            common = dict(video_id=video_id, split=split, framerate=own[0].framerate,
                          samples=tuple(own))
            name = str(video_id)
            youtube = raw.get(video_id) if raw else None
            if name in videos:
                if len(videos[name]) > 1:
                    problems.append((video_id, videos[name][0], f"video {video_id}: several "
                                     f"files {videos[name]}; keep one"))
                    continue
                jobs.append(VideoJob(layout="video", path=videos[name][0],
                                     audio_path=videos[name][0], **common))
            elif name in folders:
                if name not in wavs:
                    problems.append((video_id, folders[name][0], f"video {video_id}: frame folder "
                                     f"without {video_id}.wav"))
                    continue
                jobs.append(VideoJob(layout="frames", path=folders[name][0],
                                     audio_path=wavs[name][0], **common))
            elif youtube and youtube.youtube_id in videos:
                path = videos[youtube.youtube_id][0]
                jobs.append(VideoJob(layout="youtube", path=path, audio_path=path,
                                     start_s=youtube.start_s, crop=youtube.crop,
                                     crop_reference_height=reference[youtube.youtube_id],
                                     **common))
            else:
                hint = f" or {youtube.youtube_id}.<ext>" if youtube else ""
                problems.append((video_id, os.path.join(manual_dir, f"{video_id}.mp4"),
                                 f"video {video_id} ({split}, {len(own)} samples) is missing: "
                                 f"no {video_id}.<ext>, no {video_id}/ frame folder{hint}"))
    return jobs, problems
