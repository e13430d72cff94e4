"""PISA (Piano Skills Assessment) as a TFDS dataset, written as array_record, no TensorFlow.

Build: `python -m data_builders.pisa --manual_dir DIR` (see README.md), or
    Builder(config="consecutive", data_dir=..., file_format="array_record")
        .download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=DIR, try_download_gcs=False))
Importing `data_builders.pisa` registers the builder, so `tfds.builder("pisa/consecutive")` and
`tfds.data_source("pisa/consecutive", split="train")` find it (pisa_jax.data.open_dataset).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from data_builders.pisa import checks, extract, layouts
from data_builders.pisa.parallel import run_parallel
from data_builders.pisa import annotation_files
from data_builders.pisa.synthetic import SIZES as SYNTHETIC_SIZES
from data_builders.pisa.synthetic import config_name as synthetic_config_name
from pisa_jax.errors import DataError

SKIPPED_FILE = "skipped_samples.json"

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
The PISA videos cannot be redistributed: download them yourself and put them in the manual
folder (--manual_dir) in one of these layouts (they may be mixed, and files may sit in
sub-folders):
  (a) <video_id>.mp4 (or .mkv, .webm, ...): one trimmed video per PISA video id (1..61), e.g.
      the processed videos of Parmar's release, converted to video files;
  (b) <video_id>/ holding the frames as images (Parmar's processed frames) and <video_id>.wav;
  (c) the untrimmed YouTube recordings, named <youtube_id>.<ext> or yt-dlp's default
      "<title> [<youtube_id>].<ext>"; the builder trims them at the start times and crops them
      with the boxes of the raw annotations. The 40 YouTube ids are in
      data_builders/pisa/annotations/raw_annotations.json ("youtube link"), e.g.
      yt-dlp -f "bv*[height<=360]+ba/b[height<=360]" -o "%(id)s.%(ext)s" <link>
      (the crop boxes were drawn on 360p frames, 720p for video ids 1-5; other resolutions
      are handled by scaling the boxes with the frame height).
"""


@dataclasses.dataclass(eq=False)
class PisaConfig(tfds.core.BuilderConfig):
    """What a stored sample looks like and which annotations make the splits."""
    sampling: str = "consecutive"        # or "unidist" (PISA's two schemes, same frames)
    image_size: int = 112
    clips_per_sample: int = 10
    clip_length: int = 16
    spectrogram_size: int = 224
    spectrogram_per_clip: bool = False   # True: Parmar's one spectrogram per clip
    annotations: str | None = None       # None: PISA's shipped annotations; relative: in manual_dir
    split_by: str = "official"           # or "source": no YouTube recording in both splits
    # Frames of an annotated sample, when a stored sample keeps fewer of them (the *_demo
    # configs: 160 -> 2 clips x 8, extract.select_frames); None: every annotated frame is stored.
    annotated_frames: int | None = None

    def layout(self) -> extract.Layout:
        return extract.Layout(self.image_size, self.clips_per_sample, self.clip_length,
                              self.spectrogram_size, self.spectrogram_per_clip)

    @property
    def frames_per_annotation(self) -> int:
        return self.annotated_frames or self.clips_per_sample * self.clip_length


# Smaller stored samples of PISA-layout videos, for training without an accelerator: config
# <name>_<size> for every PISA config. "demo" has the synthetic demo's shapes (2 clips x 8
# frames of 32x32, 32x32 spectrograms), so the demo preset's recipe trains on it as it is.
SMALL_SIZES = {"demo": SYNTHETIC_SIZES["demo"]}


def resized_config(config: PisaConfig, *, clips_per_sample: int, clip_length: int,
                   image_size: int, spectrogram_size: int, name: str | None = None) -> PisaConfig:
    """`config` storing samples of another shape: the same annotations and the same seconds of
    audio, `clips_per_sample` x `clip_length` frames kept from each annotated sample
    (extract.select_frames). Default name: <config>_<clips>x<length>_<size>px_<size>spec."""
    frames = config.frames_per_annotation
    shape = dict(clips_per_sample=clips_per_sample, clip_length=clip_length,
                 image_size=image_size, spectrogram_size=spectrogram_size)
    problems = [(f"--{key}", f"{value}: expected an integer >= 1") for key, value in shape.items()
                if not isinstance(value, int) or value < 1]
    if not problems and (frames % clips_per_sample or frames // clips_per_sample < clip_length):
        problems.append((f"--clips_per_sample {clips_per_sample} --clip_length {clip_length}",
                         f"cannot be kept from config {config.name}'s {frames}-frame samples "
                         f"(the clips must divide them into parts of at least {clip_length})"))
    if problems:
        raise DataError(problems, header="the sample shape does not fit:")
    name = name or (f"{config.name}_{clips_per_sample}x{clip_length}_{image_size}px_"
                    f"{spectrogram_size}spec")
    return dataclasses.replace(
        config, name=name, annotated_frames=frames, **shape,
        description=f"{config.description} Stored smaller: {clips_per_sample} clips x "
                    f"{clip_length} frames spread over each {frames}-frame sample, "
                    f"{image_size}x{image_size}, spectrogram {spectrogram_size}x"
                    f"{spectrogram_size} of the whole sample.")


def small_config(config: PisaConfig, size: str) -> PisaConfig:
    """`config` at a named small size: config <name>_<size> (consecutive_demo ...)."""
    shape = SMALL_SIZES[size]
    return resized_config(config, clips_per_sample=shape.clips_per_sample,
                          clip_length=shape.clip_length, image_size=shape.image_size,
                          spectrogram_size=shape.spectrogram_size, name=f"{config.name}_{size}")


def _configs() -> list[PisaConfig]:
    configs = []
    for sampling in ("consecutive", "unidist"):
        configs += [
            PisaConfig(name=sampling, sampling=sampling, description=(
                f"Paper layout: one spectrogram per sample, {sampling} sampling.")),
            PisaConfig(name=f"parmar_{sampling}", sampling=sampling, spectrogram_per_clip=True,
                       description=f"Parmar's layout: one spectrogram per clip, {sampling}."),
            PisaConfig(name=f"{sampling}_by_source", sampling=sampling, split_by="source",
                       description=f"Paper layout, {sampling}, split by YouTube recording."),
        ]
    configs += [small_config(config, size) for size in SMALL_SIZES for config in list(configs)]
    for size, shape in SYNTHETIC_SIZES.items():  # rendered into manual_dir by ensure_synthetic
        configs.append(PisaConfig(
            name=synthetic_config_name(size), sampling="consecutive",
            image_size=shape.image_size, clips_per_sample=shape.clips_per_sample,
            clip_length=shape.clip_length, spectrogram_size=shape.spectrogram_size,
            annotations="annotations", description=f"The embedded synthetic dataset ({size})."))
    return configs


class Builder(tfds.core.GeneratorBasedBuilder):
    """PISA: 992 samples of 160 frames (10 clips x 16) + audio, player skill level 0..9."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = "consecutive"
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def __init__(self, *, skip_bad: bool = False, num_workers: int | None = None, **kwargs):
        self._skip_bad = skip_bad
        self._num_workers = num_workers or os.cpu_count() or 1
        self._checked = None  # set by data_builders.pisa.prepare.build, which checks first
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        frames = c.clips_per_sample * c.clip_length
        spec_shape = c.layout().spectrogram_shape
        zlib = tfds.features.Encoding.ZLIB
        info = self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "video": tfds.features.Tensor(shape=(frames, c.image_size, c.image_size, 3),
                                              dtype=np.uint8, encoding=zlib),
                "spectrogram": tfds.features.Tensor(shape=spec_shape, dtype=np.float16,
                                                    encoding=zlib),
                "player_level": tfds.features.ClassLabel(num_classes=10),
                "song_level": np.int32,
                "video_id": np.int32,
                "sample_idx": np.int32,
                "framerate": np.float32,
            }),
            supervised_keys=None,
            homepage="https://github.com/ParitoshParmar/Piano-Skills-Assessment",
            metadata=tfds.core.MetadataDict({
                "sampling": c.sampling, "image_size": c.image_size,
                "clips_per_sample": c.clips_per_sample, "clip_length": c.clip_length,
                "spectrogram_size": c.spectrogram_size,
                "spectrogram_per_clip": c.spectrogram_per_clip, "split_by": c.split_by,
                "annotated_frames": c.frames_per_annotation}),
        )
        # For a dataset not yet built, TFDS would make a temporary directory (never removed) to
        # copy precomputed metadata from its GCS bucket into; PISA has none there.
        info.initialize_from_bucket = lambda: None
        return info

    def _annotations_path(self, manual_dir: str) -> str | None:
        annotations = self.builder_config.annotations
        if annotations is None or os.path.isabs(annotations):
            return annotations
        return os.path.join(manual_dir, annotations)

    def _load_splits(self, manual_dir: str):
        c = self.builder_config
        annotations = self._annotations_path(manual_dir)
        splits = annotation_files.load_annotations(annotations, c.sampling)
        frames = c.frames_per_annotation
        source = annotations or annotation_files.shipped_annotations_dir()
        shape = f"{c.clips_per_sample} clips x {c.clip_length}" + (
            f", kept from each sample's {frames}" if c.annotated_frames else "")
        wrong = [(source, f"sample {s.key} has {s.frames.size} frames, config {c.name} needs "
                  f"{frames} ({shape})")
                 for ss in splits.values() for s in ss if s.frames.size != frames]
        if wrong:
            raise DataError(wrong, header="annotations do not fit the config:")
        # raw_annotations.json beside the sample files (a file path has none beside it)
        folder = annotations or annotation_files.shipped_annotations_dir()
        raw_path = os.path.join(folder, "raw_annotations.json")
        raw = annotation_files.load_raw_annotations(raw_path) if os.path.isfile(raw_path) else None
        if c.split_by == "source":
            if raw is None:
                raise DataError([(raw_path, "split_by='source' needs raw_annotations.json")])
            splits = annotation_files.split_by_source(splits, raw)
        return splits, raw

    def check(self, manual_dir: str):
        """Finds and checks every annotated video; writes nothing.

        -> (splits, usable jobs, problems [(path, problem)], skipped sample records).
        """
        if not os.path.isdir(manual_dir):
            raise DataError([(manual_dir, "manual folder not found")])
        splits, raw = self._load_splits(manual_dir)
        jobs, missing = layouts.plan_jobs(splits, manual_dir, raw)
        problems = [(path, problem) for _, path, problem in missing]
        bad = {video_id: [problem] for video_id, _, problem in missing}
        usable = []
        for job, found in run_parallel(checks.check_job, jobs, self._num_workers,
                                       "checking videos"):
            problems += found
            if found:
                bad[job.video_id] = [problem for _, problem in found]
            else:
                usable.append(job)
        skipped = [{"key": s.key, "split": split, "problems": bad[s.video_id]}
                   for split, samples in splits.items() for s in samples if s.video_id in bad]
        return splits, usable, problems, skipped

    def _split_generators(self, dl_manager):
        checked = self._checked or self.check(os.fspath(dl_manager.manual_dir))
        splits, usable, problems, skipped = checked
        if problems and not self._skip_bad:
            raise DataError(problems, header=f"{len(problems)} problem(s); nothing was written "
                            "(--skip_bad builds the rest):")
        # self.data_path is TFDS's temporary folder here: the list appears with the dataset.
        (self.data_path / SKIPPED_FILE).write_text(json.dumps(skipped, indent=1))
        # The annotated frame rates of the videos stored: a sample spans frames, so a model
        # trained on them expects recordings at these rates (predict resamples to them).
        self.info.metadata["framerates"] = sorted({round(float(job.framerate), 3)
                                                   for job in usable})
        generators = {}
        for split in splits:
            split_jobs = [job for job in usable if job.split == split]
            if not split_jobs:
                raise DataError([(split, "no usable video left in this split")])
            generators[split] = self._generate_examples(split_jobs)
        return generators

    def _generate_examples(self, jobs) -> Iterator[tuple[str, dict]]:
        layout = self.builder_config.layout()
        work = [(job, layout) for job in jobs]
        for examples in run_parallel(_extract, work, self._num_workers, "decoding videos"):
            yield from examples


def _extract(job_and_layout):
    return extract.extract_job(*job_and_layout)
