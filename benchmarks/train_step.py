"""Benchmark: seconds per training step and samples/s of the real pmap'd train step.

Random uint8 inputs of the shapes a dataset would give, already on the devices, so the figure is
the step itself (the input pipeline has its own benchmark). Prints one line per setting and the
peak device memory where the backend reports it. Example (GPU, the paper's shapes):

    python benchmarks/train_step.py --depths 18,18 --batch_size 4 --precision float32
    python benchmarks/train_step.py --depths 18,18 --batch_size 32 --precision bfloat16
    python benchmarks/train_step.py --visual_backbone c3d --depths 18,18   # Table 5's C3D + R18-2D

CPU-sized check: python benchmarks/train_step.py --clips 2 --clip_length 8 --image_size 32 \
    --spectrogram_size 32 --base_width 8 --batch_size 8 --steps 3
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from pisa_jax.data.pipeline import prefetch_to_device
from pisa_jax.models import VISUAL_BACKBONES
from pisa_jax.train.config import PRECISIONS, TrainConfig
from pisa_jax.train.distributed import replicate
from pisa_jax.train.state import InputSpec, create_run
from pisa_jax.train.steps import make_train_step


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depths", default="18,18", help="visual,aural depth")
    p.add_argument("--visual_backbone", default="resnet3d", choices=VISUAL_BACKBONES,
                   help="c3d: Parmar's baseline (the visual depth is then unused)")
    p.add_argument("--batch_size", type=int, default=4, help="global batch in samples")
    p.add_argument("--precision", default="float32", choices=PRECISIONS)
    p.add_argument("--clips", type=int, default=10, help="clips per sample")
    p.add_argument("--clip_length", type=int, default=16, help="frames per clip")
    p.add_argument("--image_size", type=int, default=112)
    p.add_argument("--spectrogram_size", type=int, default=224)
    p.add_argument("--base_width", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed steps (after 2 warm-up steps)")
    p.add_argument("--epoch_samples", type=int, default=516, help="samples per epoch, for s/epoch")
    return p.parse_args()


def main():
    args = parse_args()
    depths = tuple(int(d) for d in args.depths.split(","))
    config = TrainConfig(depths=depths, precision=args.precision, batch_size=args.batch_size,
                         base_width=args.base_width, visual_backbone=args.visual_backbone)
    devices = jax.local_devices()
    if args.batch_size % len(devices):
        raise SystemExit(f"error: batch {args.batch_size} does not split over {len(devices)} devices")
    per_device = args.batch_size // len(devices)

    spec_shape = (args.spectrogram_size, args.spectrogram_size)
    spec = InputSpec(args.clips, args.clip_length, args.image_size, spec_shape, num_classes=10)
    run = create_run(config, spec)  # the training's own model, optimiser and initial state
    state = replicate(run.state)
    step = make_train_step(run.model, run.tx, config)

    rng = np.random.default_rng(0)
    lead = (len(devices), per_device)
    batch = {
        "video": rng.integers(0, 256, lead + (args.clips, args.clip_length, args.image_size,
                                              args.image_size, 3), dtype=np.uint8),
        "spectrogram": rng.integers(0, 256, lead + spec_shape, dtype=np.uint8),
        "label": rng.integers(0, 10, lead).astype(np.int32),
        "mask": np.ones(lead, bool),
    }
    batch = next(prefetch_to_device(iter([batch])))

    t0 = time.perf_counter()
    for _ in range(2):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    per_step = (time.perf_counter() - t0) / args.steps
    samples_s = args.batch_size / per_step
    stats = devices[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    visual = "c3d" if args.visual_backbone == "c3d" else f"r{depths[0]}"
    print(f"device={devices[0].device_kind} x{len(devices)} visual={visual} aural=r{depths[1]} "
          f"precision={args.precision} batch={args.batch_size} "
          f"clip={args.clips}x{args.clip_length}x{args.image_size}^2 spec={args.spectrogram_size}^2 "
          f"width={args.base_width}")
    print(f"warm-up (2 steps, incl. compile) {compile_s:.1f} s | {per_step * 1e3:.1f} ms/step | "
          f"{samples_s:.1f} samples/s | {args.epoch_samples / samples_s:.1f} s per "
          f"{args.epoch_samples}-sample epoch | peak device memory "
          f"{'n/a' if peak is None else f'{peak / 2**30:.2f} GiB'}")


if __name__ == "__main__":
    main()
