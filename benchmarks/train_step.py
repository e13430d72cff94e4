"""Benchmark: seconds per training step and samples/s of the real data-parallel train step.

Random uint8 inputs of the shapes a dataset would give, already on the devices, so the figure is
the step itself (the input pipeline has its own benchmark; --data_on_device gathers each batch
inside the step from a split in device memory, as training does on a GPU). Compiled with the
project's XLA options (--xla_defaults: without them), on the allocator the training commands
pick (pisa_jax.malloc; PISA_JAX_MALLOC=system for the system's). Prints one line per setting,
model FLOP/s from XLA's cost analysis (and % of the GPU's peak) and the peak device memory
where the backend reports it. Example (GPU, the paper's shapes):

    python benchmarks/train_step.py --depths 18,18 --batch_size 4 --precision float32
    python benchmarks/train_step.py --depths 18,18 --batch_size 32 --precision bfloat16
    python benchmarks/train_step.py --visual_backbone c3d --depths 18,18   # Table 5's C3D + R18-2D
    python benchmarks/train_step.py --batch_size 32 --precision bfloat16 \
        --conv_lowering native --xla_option xla_gpu_force_conv_nhwc=true

CPU-sized check: python benchmarks/train_step.py --clips 2 --clip_length 8 --image_size 32 \
    --spectrogram_size 32 --base_width 8 --batch_size 8 --steps 3
The PyTorch model next to it: benchmarks/compare_frameworks.py (same flags).
"""
from __future__ import annotations

import argparse
import time

from pisa_jax import malloc

malloc.restart_with_faster_malloc()  # as the training commands do, before JAX loads

import jax  # noqa: E402

from jax_step import JaxStep, add_step_flags, flops_text  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_flags(p)
    return p.parse_args()


def main():
    args = parse_args()
    step = JaxStep(args)
    t0 = time.perf_counter()
    for _ in range(2):
        step.run()
    compile_s = step.compile_s + time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step.run()
    per_step = (time.perf_counter() - t0) / args.steps
    samples_s = args.batch_size / per_step
    devices = step.devices
    peak = step.device_peak_bytes()
    visual = "c3d" if args.visual_backbone == "c3d" else f"r{step.config.depths[0]}"
    rate = flops_text(step.flops_per_step(), per_step, devices[0], args.precision, len(devices))
    print(f"device={devices[0].device_kind} x{len(devices)} visual={visual} "
          f"aural=r{step.config.depths[1]} precision={args.precision} batch={args.batch_size} "
          f"clip={args.clips}x{args.clip_length}x{args.image_size}^2 "
          f"spec={args.spectrogram_size}^2 width={args.base_width} "
          f"lowering={args.conv_lowering} xla_options={step.options or 'none'}"
          f"{' data_on_device' if args.data_on_device else ''} jax={jax.__version__}")
    print(malloc.describe())
    print(f"warm-up (2 steps, incl. compile) {compile_s:.1f} s | {per_step * 1e3:.1f} ms/step | "
          f"{samples_s:.1f} samples/s | {args.epoch_samples / samples_s:.1f} s per "
          f"{args.epoch_samples}-sample epoch | "
          f"model {rate}"
          f" | peak device memory {'n/a' if peak is None else f'{peak / 2**30:.2f} GiB'}")


if __name__ == "__main__":
    main()
