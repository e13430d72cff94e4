"""Predict the skill level of a new recording with a trained run.

    python -m pisa_jax.predict VIDEO --workdir runs/r18 [--checkpoint best] [--crop x1,y1,x2,y2]

The recording is cut the way the dataset builder cuts PISA's `consecutive` samples: sample j is
frames [j * F, (j + 1) * F) with F = clips x clip_length (160 for the paper's shapes), frames
resized to the run's image size (after the optional crop box), the audio of the same frames
turned into the run's spectrogram layout and stored precision (float16). Each sample gets a
level; the recording's level is the argmax of the samples' mean class probabilities.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

SAMPLE_RATE = 44100          # the builder's audio rate (data_builders.pisa.checks)


class PredictError(ValueError):
    """A recording that cannot be scored (too short, no audio ...), naming the file."""


def cut_samples(path: str, spec, *, crop=None, aural: bool = True, visual: bool = True) -> dict:
    """The recording's consecutive samples: {"video": uint8 [n, clips, T, S, S, 3] (or None),
    "spectrogram": float16 [n, H, W] | [n, clips, H, W] (or None), "seconds": [n, 2], "fps"}."""
    from pisa_jax.data import media
    from pisa_jax.data.spectrogram import frames_spectrogram
    info = media.probe(path)
    per_sample = spec.clips * spec.clip_length
    count = info.num_frames // per_sample
    if count == 0:
        raise PredictError(f"{path}: too short: {info.num_frames} frames ({info.duration_s:.1f} s); "
                           f"one sample needs {per_sample} frames ({per_sample / info.fps:.1f} s "
                           f"at {info.fps:g} fps)")
    if aural and not info.has_audio:
        raise PredictError(f"{path}: has no audio stream; this model needs the sound "
                           f"(its modalities include aural)")
    frames = np.arange(count * per_sample).reshape(count, per_sample)
    out = {"fps": info.fps, "video": None, "spectrogram": None,
           "seconds": np.stack([frames[:, 0], frames[:, -1] + 1], -1) / info.fps}
    if visual:
        video = media.read_frames(path, frames.reshape(-1), spec.image_size, crop)
        out["video"] = video.reshape(count, spec.clips, spec.clip_length, *video.shape[1:])
    if aural:
        audio = media.read_audio(path, SAMPLE_RATE)
        needed = int(np.floor(count * per_sample * SAMPLE_RATE / info.fps + 0.5)) + 1
        if audio.size < needed:  # a few ms short at the very end: silence, as the builder does
            audio = np.pad(audio, (0, needed - audio.size))
        per_clip = len(spec.spectrogram_shape) == 3
        out["spectrogram"] = np.stack([
            frames_spectrogram(audio, SAMPLE_RATE, f, info.fps, spec.spectrogram_shape[-1],
                               per_clip, spec.clips, spec.clip_length).astype(np.float16)
            for f in frames])
    return out


def predict_recording(path: str, workdir: str, which: str = "best", *, crop=None,
                      batch_size: int = 8) -> dict:
    """Per-sample and overall predictions of the primary head (levels 1-10)."""
    import jax

    from pisa_jax.data.pipeline import prepare_inputs
    from pisa_jax.evaluate import load_trained
    from pisa_jax.train.setup import normalization
    from pisa_jax.train.state import DTYPES
    if not os.path.isfile(path):
        raise PredictError(f"{path}: no such file")
    run, state = load_trained(workdir, which)
    config, spec = run.config, run.spec
    samples = cut_samples(path, spec, crop=crop, aural="aural" in config.modalities,
                          visual="visual" in config.modalities)
    mean, std = normalization(config)
    variables = {"params": state.params, "batch_stats": state.batch_stats}

    @jax.jit
    def probabilities(variables, batch):
        inputs = prepare_inputs(batch, mean, std, DTYPES[config.precision])
        out = run.eval_model.apply(variables, inputs.get("video"), inputs.get("spectrogram"),
                                   train=False)
        return jax.nn.softmax(out["logits"][run.primary].astype(np.float32), -1)

    count = len(samples["seconds"])
    probs = []
    for start in range(0, count, batch_size):
        # every batch padded to batch_size (repeating its last sample): one compile
        rows = np.minimum(np.arange(start, start + batch_size), count - 1)
        batch = {k: samples[k][rows] for k in ("video", "spectrogram") if samples[k] is not None}
        probs.append(np.asarray(probabilities(variables, batch))[:count - start])
    probs = np.concatenate(probs)                                       # [n, classes]
    overall = probs.mean(0)
    return {
        "video": path, "workdir": str(workdir), "checkpoint": which, "head": run.primary,
        "samples": [{"index": i, "start_s": round(float(s[0]), 3), "end_s": round(float(s[1]), 3),
                     "level": int(p.argmax()) + 1, "probability": float(p.max())}
                    for i, (s, p) in enumerate(zip(samples["seconds"], probs))],
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pisa_jax.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="a recording (any format ffmpeg reads), with its sound")
    parser.add_argument("--workdir", required=True, help="the training run's workdir")
    parser.add_argument("--checkpoint", default="best", choices=("best", "latest"))
    parser.add_argument("--crop", type=_crop, default=None,
                        help="x1,y1,x2,y2 pixel box (forearms, hands, keyboard) before resizing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    from pisa_jax.train.errors import user_errors
    try:
        result = predict_recording(args.video, args.workdir, args.checkpoint, crop=args.crop)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.json else format_prediction(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
