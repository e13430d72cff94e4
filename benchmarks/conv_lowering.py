"""Benchmark: one 3D convolution, forward + backward, per lowering and in PyTorch.

Every layer shape of Hara's R3D-18, torchvision's r3d_18 stem and C3D at the paper's clip
(16x112x112), times `--clips`. Backward means the weight (and bias) gradient, plus the input
gradient except for the first layer of a network, whose input is data. All variants of a layer
run in the same process, interleaved repeat by repeat; the table gives medians in ms and each
time relative to the fastest JAX form. JAX compiles with `pisa_jax.xla_options` (YNN off)
unless --xla_defaults. PyTorch waits passively (OMP_WAIT_POLICY) so as not to steal XLA's cores.

    python benchmarks/conv_lowering.py                      # every layer, 1 clip, 5 repeats
    python benchmarks/conv_lowering.py --layers hara_stem,r3d_l1 --clips 4 --repeats 7
"""
from __future__ import annotations

import os

# OpenMP's default spin-waiting let PyTorch's idle threads and XLA's starve each other (both ran
# 2-4x slower than alone); passive waiting keeps the interleaved timings fair.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (libgomp) is loaded

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from pisa_jax.models.lowering import convolve, resolve_lowering  # noqa: E402
from pisa_jax.native import onednn  # noqa: E402
from pisa_jax.xla_options import cpu_compiler_options  # noqa: E402

# name -> (input [T, H, W, I] per clip, kernel (kt, kh, kw), O, stride, padding, bias, input grad)
LAYERS = {
    "hara_stem": ((16, 112, 112, 3), (7, 7, 7), 64, (1, 2, 2), (3, 3, 3), False, False),
    "r3d_l1": ((8, 28, 28, 64), (3, 3, 3), 64, (1, 1, 1), (1, 1, 1), False, True),
    "r3d_l2_strided": ((8, 28, 28, 64), (3, 3, 3), 128, (2, 2, 2), (1, 1, 1), False, True),
    "r3d_l2_shortcut": ((8, 28, 28, 64), (1, 1, 1), 128, (2, 2, 2), (0, 0, 0), False, True),
    "r3d_l2": ((4, 14, 14, 128), (3, 3, 3), 128, (1, 1, 1), (1, 1, 1), False, True),
    "r3d_l3_strided": ((4, 14, 14, 128), (3, 3, 3), 256, (2, 2, 2), (1, 1, 1), False, True),
    "r3d_l3": ((2, 7, 7, 256), (3, 3, 3), 256, (1, 1, 1), (1, 1, 1), False, True),
    "r3d_l4_strided": ((2, 7, 7, 256), (3, 3, 3), 512, (2, 2, 2), (1, 1, 1), False, True),
    "r3d_l4": ((1, 4, 4, 512), (3, 3, 3), 512, (1, 1, 1), (1, 1, 1), False, True),
    "tv_stem": ((16, 112, 112, 3), (3, 7, 7), 64, (1, 2, 2), (1, 3, 3), False, False),
    "tv_l1": ((16, 56, 56, 64), (3, 3, 3), 64, (1, 1, 1), (1, 1, 1), False, True),
    "c3d_conv1": ((16, 112, 112, 3), (3, 3, 3), 64, (1, 1, 1), (1, 1, 1), True, False),
    "c3d_conv2": ((16, 56, 56, 64), (3, 3, 3), 128, (1, 1, 1), (1, 1, 1), True, True),
    "c3d_conv3a": ((8, 28, 28, 128), (3, 3, 3), 256, (1, 1, 1), (1, 1, 1), True, True),
    "c3d_conv4b": ((4, 14, 14, 512), (3, 3, 3), 512, (1, 1, 1), (1, 1, 1), True, True),
    "c3d_conv5a": ((2, 7, 7, 512), (3, 3, 3), 512, (1, 1, 1), (1, 1, 1), True, True),
}
LOWERINGS = ("native", "taps", "stacked", "onednn")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", default=",".join(LAYERS), help="comma-separated names")
    p.add_argument("--lowerings", default=",".join(LOWERINGS))
    p.add_argument("--clips", type=int, default=1, help="batch of clips (N)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats after one warm-up")
    p.add_argument("--xla_defaults", action="store_true", help="compile without xla_options")
    p.add_argument("--no_torch", action="store_true")
    return p.parse_args()


def jax_step(shape, kernel, out, stride, pad, bias, input_grad, lowering, options):
    """A compiled (x, w, b) -> gradients of 0.5 * sum(conv(x)^2), and its arguments."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)  # [N, T, H, W, I]
    w = jnp.asarray(rng.standard_normal(kernel + (shape[-1], out)) * 0.05, jnp.float32)
    b = jnp.zeros((out,), jnp.float32)

    def loss(x, w, b):
        y = convolve(x, w, stride, pad, lowering)
        return 0.5 * jnp.sum(jnp.square(y + b if bias else y))
    argnums = ((0,) if input_grad else ()) + ((1, 2) if bias else (1,))
    grad = jax.jit(jax.grad(loss, argnums=argnums))
    return grad.lower(x, w, b).compile(compiler_options=options), (x, w, b)


def torch_step(shape, kernel, out, stride, pad, bias, input_grad):
    import torch
    gen = torch.Generator().manual_seed(0)
    n, t, h, w_, c = shape
    x = torch.randn((n, c, t, h, w_), generator=gen).requires_grad_(input_grad)
    w = (0.05 * torch.randn((out, c) + kernel, generator=gen)).requires_grad_(True)
    b = torch.zeros(out, requires_grad=True) if bias else None

    def step():
        for tensor in (x, w, b):
            if tensor is not None:
                tensor.grad = None
        y = torch.nn.functional.conv3d(x, w, b, stride, pad)
        (0.5 * y.square().sum()).backward()
    return step


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    args = parse_args()
    options = {} if args.xla_defaults else cpu_compiler_options()
    lowerings = args.lowerings.split(",")
    if "onednn" in lowerings and onednn.unavailable_reason():
        print(f"note: leaving out onednn: {onednn.unavailable_reason()}")
        lowerings.remove("onednn")
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, compiler options {options}, "
          f"{args.clips} clip(s), {args.repeats} repeats; ms, median forward + backward")
    columns = lowerings + ([] if args.no_torch else ["torch"])
    print(f"{'layer':17s}" + "".join(f"{c:>10s}" for c in columns)
          + f"{'auto':>9s}  {'native/best':>11s}  {'torch/best':>10s}")
    for name in args.layers.split(","):
        per_clip, kernel, out, stride, pad, bias, input_grad = LAYERS[name]
        shape = (args.clips,) + per_clip
        steps = {}
        for lowering in lowerings:
            compiled, call_args = jax_step(shape, kernel, out, stride, pad, bias, input_grad,
                                           lowering, options)
            steps[lowering] = lambda c=compiled, a=call_args: jax.block_until_ready(c(*a))
        if not args.no_torch:
            steps["torch"] = torch_step(shape, kernel, out, stride, pad, bias, input_grad)
        times = {k: [] for k in steps}
        for fn in steps.values():
            fn()  # warm-up
        for _ in range(args.repeats):
            for key, fn in steps.items():
                times[key].append(timed(fn))
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        best = min(ms[k] for k in lowerings)
        auto = resolve_lowering("auto", shape, kernel + (shape[-1], out), stride, pad)
        row = f"{name:17s}" + "".join(f"{ms[c]:10.1f}" for c in columns) + f"{auto:>9s}  "
        row += f"{ms['native'] / best:11.2f}" if "native" in ms else f"{'':11s}"
        row += f"  {ms['torch'] / best:10.2f}" if "torch" in ms else ""
        print(row, flush=True)


if __name__ == "__main__":
    main()
