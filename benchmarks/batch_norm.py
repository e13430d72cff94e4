"""Benchmark: one training-mode BatchNorm, forward + backward, Flax's layer against the project's
(`pisa_jax.models.batch_norm`), at the activation shapes of the R18-3D + R18-2D step.

Both are compiled with the project's XLA options and timed interleaved in one process; the
table gives medians in ms, the ratio, and the largest difference of the gradients relative to
their scale. The loss is sum(tanh(y) * w): smooth, so the difference measures the arithmetic
(behind a ReLU, the few elements within rounding of 0 flip and dominate it).

    python benchmarks/batch_norm.py                 # every shape, 7 repeats
    python benchmarks/batch_norm.py --shapes r3d_stem --repeats 11
"""
from __future__ import annotations

import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pisa_jax.models.batch_norm import BatchNorm
from pisa_jax.xla_options import cpu_compiler_options

# name -> activation shape: 2 samples x 2 clips of 16x112x112 (4 clips), 224x224 spectrograms
SHAPES = {
    "r3d_stem": (4, 16, 56, 56, 64),
    "r3d_layer1": (4, 8, 28, 28, 64),
    "r3d_layer2": (4, 4, 14, 14, 128),
    "r2d_stem": (2, 112, 112, 64),
    "r2d_layer1": (2, 56, 56, 64),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--repeats", type=int, default=7)
    return p.parse_args()


def gradient_fn(layer, weight):
    def loss(params, x):
        y, _ = layer.apply({"params": params, "batch_stats": {
            "mean": jnp.zeros(x.shape[-1]), "var": jnp.ones(x.shape[-1])}}, x,
            mutable=["batch_stats"])
        return jnp.sum(jnp.tanh(y) * weight)
    return jax.grad(loss, argnums=(0, 1))


def main():
    args = parse_args()
    layers = {"flax": nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5),
              "project": BatchNorm(use_running_average=False)}
    print(f"jax {jax.__version__} on {jax.default_backend()}, {args.repeats} repeats, "
          "ms per forward + backward (median)")
    print(f"{'shape':12s} {'elements':>10s} {'flax':>8s} {'project':>8s} {'flax/project':>12s} "
          f"{'max rel diff':>12s}")
    rng = np.random.default_rng(0)
    for name in args.shapes.split(","):
        shape = SHAPES[name]
        x = jnp.asarray(rng.standard_normal(shape).astype(np.float32) + 0.5)
        weight = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
        params = {"scale": jnp.asarray(rng.uniform(0.5, 1.5, shape[-1]), jnp.float32),
                  "bias": jnp.zeros(shape[-1], jnp.float32)}
        compiled = {k: jax.jit(gradient_fn(layer, weight)).lower(params, x).compile(
            compiler_options=cpu_compiler_options() or None) for k, layer in layers.items()}
        outputs = {k: jax.block_until_ready(c(params, x)) for k, c in compiled.items()}
        diff = max(float(jnp.max(jnp.abs(a - b)) / (float(jnp.max(jnp.abs(b))) + 1e-12))
                   for a, b in zip(jax.tree_util.tree_leaves(outputs["project"]),
                                   jax.tree_util.tree_leaves(outputs["flax"])))
        times = {k: [] for k in compiled}
        for _ in range(args.repeats):
            for k, c in compiled.items():
                t0 = time.perf_counter()
                jax.block_until_ready(c(params, x))
                times[k].append(time.perf_counter() - t0)
        flax_ms, ours_ms = (statistics.median(times[k]) * 1e3 for k in ("flax", "project"))
        print(f"{name:12s} {int(np.prod(shape)):10d} {flax_ms:8.1f} {ours_ms:8.1f} "
              f"{flax_ms / ours_ms:12.2f} {diff:12.1e}")


if __name__ == "__main__":
    main()
