"""Predict the skill level of a new recording with a trained run.

    python -m pisa_jax.predict VIDEO --workdir runs/r18 [--checkpoint best] [--crop x1,y1,x2,y2]

The recording is cut the way the dataset builder cuts PISA's `consecutive` samples (sample j is
frames [j * F, (j + 1) * F) with F = clips x clip_length, 160 at the paper's shapes, and 160 for
a run trained on a *_demo config, whose clips keep 16 of them) and each sample is decoded by the
builder's own code (`data_builders.pisa.extract`): frames resized to the
run's image size after the optional crop box, the audio of the same frames turned into the run's
spectrogram layout, after the builder's checks (decodable, audio present and long enough). Each
sample gets a level from the run's eval step; the recording's level is the argmax of the
samples' mean class probabilities.

A sample spans a number of frames, so it covers the seconds it covered in training only at the
training frame rate (inputs.json records the rates of the training videos). A recording at
another rate (beyond the builder's 3 % tolerance) is first resampled with ffmpeg to the training
rate nearest to its own, and the output says so. Sound that ends before the picture is an error
naming the samples it would leave silent (a few milliseconds are padded, as the builder does).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from pisa_jax import cli
from pisa_jax.errors import UserError


class PredictError(UserError):
    """A recording that cannot be scored (too short, no audio ...), naming the file."""


def rate_to_match(fps: float, framerates) -> float | None:
    """The frame rate to cut a recording of `fps` at: None (its own) when it is within the
    builder's tolerance of a training rate, or when the run did not record its rates; else the
    training rate nearest to `fps` (a sample covers the same seconds only at a training rate; a
    run trained on several rates saw samples of each)."""
    from data_builders.pisa.checks import FPS_TOLERANCE
    if not framerates or any(abs(fps - r) <= FPS_TOLERANCE * r for r in framerates):
        return None
    return min(framerates, key=lambda r: abs(r - fps))


def resample(path: str, fps: float, folder: str) -> str:
    """`path` at `fps` (ffmpeg's fps filter: frames dropped or repeated, timestamps kept, so
    the sound stays in step), losslessly encoded into `folder`; the sound is copied as PCM."""
    import subprocess

    from pisa_jax.media.decode import ffmpeg_exe
    out = os.path.join(folder, "resampled.mkv")
    result = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-i", path, "-map", "0:v:0", "-map",
         "0:a:0?", "-vf", f"fps={fps:g}", "-c:v", "ffv1", "-c:a", "pcm_s16le", out],
        capture_output=True, text=True, errors="replace")
    if result.returncode != 0:
        raise PredictError(f"{path}: cannot resample it to {fps:g} fps with ffmpeg: "
                           f"{(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return out


def cut_samples(path: str, spec, *, crop=None, aural: bool = True) -> dict:
    """The recording's consecutive samples as the builder stores them, at the run's training
    frame rate (resampled when it differs: `rate_to_match`):
    {"samples": [{"video": uint8 [clips, T, S, S, 3], "spectrogram": [H, W] | [clips, H, W],
    "label": 0}], "seconds": float [n, 2] (start, end of each sample), "fps" (of the samples),
    "recorded_fps" (of the file)}."""
    import tempfile

    from pisa_jax.media import decode
    if not os.path.isfile(path):
        raise PredictError(f"{path}: no such file")
    info = decode.probe(path)
    rate = rate_to_match(info.fps, spec.framerates)
    if rate is None:
        return {**_cut(path, path, info, spec, crop, aural), "recorded_fps": info.fps}
    with tempfile.TemporaryDirectory(prefix="pisa_predict_") as folder:
        source = resample(path, rate, folder)
        return {**_cut(path, source, decode.probe(source), spec, crop, aural),
                "recorded_fps": info.fps}


def _cut(name: str, source: str, info, spec, crop, aural: bool) -> dict:
    """cut_samples of `source` (the recording, or its resampled copy); messages name `name`."""
    from data_builders.pisa.annotation_files import Sample
    from data_builders.pisa.checks import check_job
    from data_builders.pisa.extract import Layout, extract_job
    from data_builders.pisa.layouts import VideoJob
    per_sample = spec.annotated_frames or spec.clips * spec.clip_length  # frames one sample spans
    count = info.num_frames // per_sample
    if count == 0:
        raise PredictError(f"{name}: too short: {info.num_frames} frames ({info.duration_s:.1f} s); "
                           f"one sample needs {per_sample} frames ({per_sample / info.fps:.1f} s "
                           f"at {info.fps:g} fps)")
    if aural and not info.has_audio:
        raise PredictError(f"{name}: has no audio stream; this model needs the sound "
                           f"(its modalities include aural)")
    frames = np.arange(count * per_sample).reshape(count, per_sample)
    seconds = np.stack([frames[:, 0], frames[:, -1] + 1], -1) / info.fps     # [n, 2]
    job = VideoJob(video_id=0, split="predict", layout="video", path=source, audio_path=source,
                   framerate=info.fps, crop=crop, samples=tuple(
                       Sample(0, j, 0, 0, info.fps, f) for j, f in enumerate(frames)))
    if aural:
        job, problems = check_job(job)
        if any("audio too short" in p for _, p in problems):
            _short_audio(name, source, seconds)
        if problems:
            raise PredictError(f"{name}: " + "; ".join(
                p.removeprefix("video 0: ").replace(source, name) for _, p in problems))
    layout = Layout(spec.image_size, spec.clips, spec.clip_length, spec.spectrogram_shape[-1],
                    len(spec.spectrogram_shape) == 3)
    examples = [e for _, e in extract_job(job, layout, audio=aural)]
    samples = [{"video": e["video"].reshape(spec.clips, spec.clip_length, *e["video"].shape[1:]),
                "spectrogram": e["spectrogram"], "label": np.int32(0)} for e in examples]
    return {"samples": samples, "fps": info.fps, "seconds": seconds}


def _short_audio(name: str, source: str, seconds: np.ndarray):
    """The error for sound that ends before the picture: which samples would hear silence."""
    from data_builders.pisa.checks import AUDIO_SLACK_S
    from pisa_jax.media import decode
    from pisa_jax.media.spectrogram import SAMPLE_RATE
    sound_s = decode.read_audio(source, SAMPLE_RATE).size / SAMPLE_RATE
    silent = np.flatnonzero(seconds[:, 1] > sound_s + AUDIO_SLACK_S)
    first, last = int(silent[0]), int(silent[-1])
    raise PredictError(
        f"{name}: the sound ends at {sound_s:.2f} s but the picture runs to "
        f"{seconds[-1, 1]:.2f} s: sample(s) {first}-{last} ({seconds[first, 0]:.2f}-"
        f"{seconds[last, 1]:.2f} s) would be scored on silence. Use a recording whose sound "
        f"covers the picture, or cut it to the sound (ffmpeg -i IN -t {sound_s:.2f} OUT)")


def predict_recording(path: str, workdir: str, which: str = "best", *, crop=None,
                      batch_size: int = 8) -> dict:
    """Per-sample and overall predictions of the primary head (levels 1-10)."""
    import jax

    from pisa_jax.cudnn import warn_if_bf16_unsafe
    from pisa_jax.train.checkpoints import load_trained
    from pisa_jax.train.distributed import replicate
    from pisa_jax.train.steps import make_eval_step, predict_split
    if not os.path.isfile(path):
        raise PredictError(f"{path}: no such file")
    run, state = load_trained(workdir, which)
    warn_if_bf16_unsafe(run.config.precision)
    cut = cut_samples(path, run.spec, crop=crop, aural="aural" in run.config.modalities)
    devices = jax.device_count()
    variables = replicate(state.variables)
    probs = predict_split(make_eval_step(run.eval_model, run.config), variables, cut["samples"],
                          global_batch_size=-(-batch_size // devices) * devices).probs
    probs = probs[run.primary]                                          # [n, classes]
    overall = probs.mean(0)
    return {
        "video": path, "workdir": str(workdir), "checkpoint": which, "head": run.primary,
        "frame_rate": frame_rate_note(cut["recorded_fps"], cut["fps"], run.spec.framerates),
        "samples": [{"index": i, "start_s": round(float(s[0]), 3), "end_s": round(float(s[1]), 3),
                     "level": int(p.argmax()) + 1, "probability": float(p.max())}
                    for i, (s, p) in enumerate(zip(cut["seconds"], probs))],
        "level": int(overall.argmax()) + 1,
        "probabilities": {str(c + 1): float(p) for c, p in enumerate(overall)},
    }


def frame_rate_note(recorded: float, used: float, framerates) -> str:
    """What predict did about the recording's frame rate, in a sentence."""
    if not framerates:
        return (f"cut at the recording's {recorded:g} fps: this run does not record the frame "
                f"rate it was trained at (trained before pisa-jax recorded it), so check that "
                f"it was {recorded:g} fps")
    trained = ", ".join(f"{r:g}" for r in framerates)
    if abs(recorded - used) < 1e-6:
        return f"cut at the recording's {recorded:g} fps (trained at {trained} fps)"
    return (f"resampled with ffmpeg from the recording's {recorded:g} fps to {used:g} fps, the "
            f"training rate nearest to it (trained at {trained} fps), so that a sample covers "
            f"the seconds it covered in training")


def format_prediction(result: dict) -> str:
    lines = [f"{result['video']}: {len(result['samples'])} sample(s), {result['head']} head",
             f"frame rate: {result['frame_rate']}"]
    for s in result["samples"]:
        lines.append(f"  sample {s['index']:>3}  {s['start_s']:8.2f}-{s['end_s']:8.2f} s  "
                     f"level {s['level']:>2}  (p={s['probability']:.2f})")
    lines.append(f"overall level: {result['level']}")
    lines.append("class probabilities: " + "  ".join(
        f"{lvl}:{p:.3f}" for lvl, p in result["probabilities"].items()))
    return "\n".join(lines)


def _crop(text: str):
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise argparse.ArgumentTypeError(f"--crop {text!r}: expected x1,y1,x2,y2 with x2>x1, y2>y1")
    return box


def _main(argv=None) -> int:
    parser = cli.argument_parser("python -m pisa_jax.predict", __doc__)
    parser.add_argument("video", help="a recording (any format ffmpeg reads), with its sound")
    parser.add_argument("--workdir", required=True, help="the training run's workdir")
    parser.add_argument("--checkpoint", default="best", choices=("best", "latest"))
    parser.add_argument("--crop", type=_crop, default=None,
                        help="x1,y1,x2,y2 pixel box (forearms, hands, keyboard) before resizing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    from pisa_jax.compile_cache import enable_compilation_cache
    enable_compilation_cache()  # silently: stdout is the result (--json)
    result = predict_recording(args.video, args.workdir, args.checkpoint, crop=args.crop)
    print(json.dumps(result, indent=2) if args.json else format_prediction(result))
    return 0


def main(argv=None) -> int:
    return cli.run(_main, argv)


def command() -> int:
    """The command line's entry point (see `pisa_jax.cli.run_command`)."""
    return cli.run_command(_main)


if __name__ == "__main__":
    sys.exit(command())
