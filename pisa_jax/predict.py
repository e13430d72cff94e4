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


def cut_samples(path: str, spec, *, crop=None, aural: bool = True) -> dict:
    """The recording's consecutive samples as the builder stores them:
    {"samples": [{"video": uint8 [clips, T, S, S, 3], "spectrogram": [H, W] | [clips, H, W],
    "label": 0}], "seconds": float [n, 2] (start, end of each sample), "fps"}."""
    from data_builders.pisa.annotation_files import Sample
    from data_builders.pisa.checks import check_job
    from data_builders.pisa.extract import Layout, extract_job
    from data_builders.pisa.layouts import VideoJob
    from pisa_jax.media import decode
    if not os.path.isfile(path):
        raise PredictError(f"{path}: no such file")
    info = decode.probe(path)
    per_sample = spec.annotated_frames or spec.clips * spec.clip_length  # frames one sample spans
    count = info.num_frames // per_sample
    if count == 0:
        raise PredictError(f"{path}: too short: {info.num_frames} frames ({info.duration_s:.1f} s); "
                           f"one sample needs {per_sample} frames ({per_sample / info.fps:.1f} s "
                           f"at {info.fps:g} fps)")
    if aural and not info.has_audio:
        raise PredictError(f"{path}: has no audio stream; this model needs the sound "
                           f"(its modalities include aural)")
    frames = np.arange(count * per_sample).reshape(count, per_sample)
    job = VideoJob(video_id=0, split="predict", layout="video", path=path, audio_path=path,
                   framerate=info.fps, crop=crop, samples=tuple(
                       Sample(0, j, 0, 0, info.fps, f) for j, f in enumerate(frames)))
    if aural:
        job, problems = check_job(job)
        if problems:
            raise PredictError(f"{path}: " + "; ".join(p for _, p in problems))
    layout = Layout(spec.image_size, spec.clips, spec.clip_length, spec.spectrogram_shape[-1],
                    len(spec.spectrogram_shape) == 3)
    examples = [e for _, e in extract_job(job, layout, audio=aural)]
    samples = [{"video": e["video"].reshape(spec.clips, spec.clip_length, *e["video"].shape[1:]),
                "spectrogram": e["spectrogram"], "label": np.int32(0)} for e in examples]
    return {"samples": samples, "fps": info.fps,
            "seconds": np.stack([frames[:, 0], frames[:, -1] + 1], -1) / info.fps}


def predict_recording(path: str, workdir: str, which: str = "best", *, crop=None,
                      batch_size: int = 8) -> dict:
    """Per-sample and overall predictions of the primary head (levels 1-10)."""
    import jax

    from pisa_jax.train.checkpoints import load_trained
    from pisa_jax.train.distributed import replicate
    from pisa_jax.train.steps import make_eval_step, predict_split
    if not os.path.isfile(path):
        raise PredictError(f"{path}: no such file")
    run, state = load_trained(workdir, which)
    cut = cut_samples(path, run.spec, crop=crop, aural="aural" in run.config.modalities)
    devices = jax.device_count()
    variables = replicate({"params": state.params, "batch_stats": state.batch_stats})
    probs = predict_split(make_eval_step(run.eval_model, run.config), variables, cut["samples"],
                          global_batch_size=-(-batch_size // devices) * devices).probs
    probs = probs[run.primary]                                          # [n, classes]
    overall = probs.mean(0)
    return {
        "video": path, "workdir": str(workdir), "checkpoint": which, "head": run.primary,
        "samples": [{"index": i, "start_s": round(float(s[0]), 3), "end_s": round(float(s[1]), 3),
                     "level": int(p.argmax()) + 1, "probability": float(p.max())}
                    for i, (s, p) in enumerate(zip(cut["seconds"], probs))],
        "level": int(overall.argmax()) + 1,
        "probabilities": {str(c + 1): float(p) for c, p in enumerate(overall)},
    }


def format_prediction(result: dict) -> str:
    lines = [f"{result['video']}: {len(result['samples'])} sample(s), {result['head']} head"]
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
    result = predict_recording(args.video, args.workdir, args.checkpoint, crop=args.crop)
    print(json.dumps(result, indent=2) if args.json else format_prediction(result))
    return 0


def main(argv=None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
