"""Check: bf16 3D convolutions (and the whole model) against float32 on the current device.

Some cuDNN 9.10-9.15 releases return wrong bf16 results for large 3D convolutions. This runs
every 3D convolution shape of Hara's R3D-18 (and C3D's conv2) at the paper's clip, forward and
both gradients, in bf16 and in float32 (HIGHEST precision) on the same inputs, then the whole
skill model's forward pass; it prints the max error relative to the float32 output's largest
value, and PASS / FAIL against a bound a few times bf16's own rounding (8 bits of mantissa,
float32 accumulation). Exit status 1 on any FAIL.

    python benchmarks/bf16_check.py                 # 32 clips of 16x112x112, full width
    python benchmarks/bf16_check.py --clips 2 --tiny  # a CPU-sized dry run
"""
from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from pisa_jax import cudnn
from pisa_jax.models import SkillModel
from pisa_jax.models.lowering import CONV_LOWERINGS, convolve

# (input [T, H, W, C] per clip at 16x112x112, kernel, out channels, stride, padding)
LAYERS = {
    "r3d18 conv1 (stem)": ((16, 112, 112, 3), (7, 7, 7), 64, (1, 2, 2), (3, 3, 3)),
    "r3d18 layer1": ((8, 28, 28, 64), (3, 3, 3), 64, (1, 1, 1), (1, 1, 1)),
    "r3d18 layer2 strided": ((8, 28, 28, 64), (3, 3, 3), 128, (2, 2, 2), (1, 1, 1)),
    "r3d18 layer3": ((2, 7, 7, 256), (3, 3, 3), 256, (1, 1, 1), (1, 1, 1)),
    "r3d18 layer4": ((1, 4, 4, 512), (3, 3, 3), 512, (1, 1, 1), (1, 1, 1)),
    "c3d conv2": ((16, 56, 56, 64), (3, 3, 3), 128, (1, 1, 1), (1, 1, 1)),
    # 2D, [H, W, C] per spectrogram (oneDNN 3.2's AMX bf16 got these weight gradients wrong on
    # a CPU at some batches and thread counts: see pisa_jax/native/onednn_conv.cc)
    "r18-2d conv1 (aural stem)": ((224, 224, 1), (7, 7), 64, (2, 2), (3, 3)),
    "r18-2d layer1": ((56, 56, 64), (3, 3), 64, (1, 1), (1, 1)),
}
# Max |bf16 - float32| / max |float32| allowed: bf16 rounds inputs and outputs to ~4e-3
# relative; a broken kernel is off by O(1).
CONV_BOUND = 3e-2
MODEL_BOUND = 5e-2   # 18 layers of bf16 activations in a row


def parse_args():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=32, help="batch of clips per convolution")
    p.add_argument("--lowering", default="native", choices=CONV_LOWERINGS[1:],
                   help="how the 3D convolutions run (native: cuDNN's 3D kernels on a GPU)")
    p.add_argument("--tiny", action="store_true",
                   help="shapes divided by 4 in space and channels (a dry run on a CPU)")
    p.add_argument("--no_model", action="store_true", help="convolutions only")
    return p.parse_args()


def relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def conv_errors(shape, kernel, out, stride, padding, clips, lowering) -> dict[str, float]:
    """Forward and both gradients, bf16 vs float32, as relative errors."""
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(keys[0], (clips, *shape), jnp.float32)
    w = jax.random.normal(keys[1], (*kernel, shape[-1], out), jnp.float32)
    w = w / np.sqrt(np.prod(kernel) * shape[-1])

    def forward_and_grads(x, w, dtype):
        def f(x, w):
            with jax.default_matmul_precision("highest" if dtype == jnp.float32 else "default"):
                return convolve(x.astype(dtype), w.astype(dtype), stride, padding, lowering)
        y, vjp = jax.vjp(f, x, w)
        cotangent = jax.random.normal(keys[2], y.shape, jnp.float32).astype(y.dtype)
        dx, dw = vjp(cotangent)
        return y, dx, dw

    run = jax.jit(forward_and_grads, static_argnums=2)
    want = run(x, w, jnp.float32)
    got = run(x, w, jnp.bfloat16)
    return {name: relative_error(g, t) for name, g, t in zip(("y", "dx", "dw"), got, want)}


def model_errors(tiny: bool, clips: int, lowering: str) -> dict[str, float]:
    """The skill model's forward pass (eval mode, BatchNorm from its initial statistics: in
    train mode a few clips' batch statistics would amplify any rounding), bf16 vs float32."""
    size, spec, width = (28, 56, 16) if tiny else (112, 224, 64)
    kwargs = dict(visual_depth=18, aural_depth=18, base_width=width, dropout=0.0,
                  conv_lowering=lowering)
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    video = jax.random.normal(keys[0], (max(clips // 2, 1), 2, 16, size, size, 3))
    spectrogram = jax.random.uniform(keys[1], (video.shape[0], spec, spec))
    model32 = SkillModel(**kwargs)
    variables = jax.jit(lambda v, s: model32.init(jax.random.PRNGKey(2), v, s, train=False))(
        video[:1], spectrogram[:1])

    def apply(model):
        def run(variables, video, spectrogram):
            out = model.apply(variables, video, spectrogram, train=False)
            return out["features"], out["logits"]
        return jax.jit(run)(variables, video, spectrogram)

    with jax.default_matmul_precision("highest"):
        want = apply(model32)
    got = apply(SkillModel(**kwargs, dtype=jnp.bfloat16))
    errors = {f"features {k}": relative_error(got[0][k], want[0][k]) for k in want[0]}
    errors.update({f"logits {k}": relative_error(got[1][k], want[1][k]) for k in want[1]})
    return errors


def main() -> int:
    args = parse_args()
    device = jax.devices()[0]
    print(f"bf16 vs float32 on {device.device_kind} ({device.platform}), jax {jax.__version__}, "
          f"cuDNN {cudnn.dotted(cudnn.version())}, "
          f"lowering {args.lowering}, {args.clips} clips{' (tiny shapes)' if args.tiny else ''}")
    print("| check | max rel. error (y / dx / dw) | bound | result |")
    print("|---|---|---|---|")
    failed = False
    for name, (shape, kernel, out, stride, padding) in LAYERS.items():
        if args.tiny:
            *t, h, w, c = shape
            shape = (*t, max(h // 4, 4), max(w // 4, 4), c if c <= 3 else max(c // 4, 4))
            out = max(out // 4, 4)
        errors = conv_errors(shape, kernel, out, stride, padding, args.clips, args.lowering)
        worst = max(errors.values(), key=lambda e: np.inf if np.isnan(e) else e)
        failed |= not worst <= CONV_BOUND  # NaN fails too
        values = " / ".join(f"{errors[k]:.2e}" for k in ("y", "dx", "dw"))
        print(f"| {name} {args.clips}x{'x'.join(map(str, shape))} -> {out} | {values} | "
              f"{CONV_BOUND:.0e} | {'PASS' if worst <= CONV_BOUND else 'FAIL'} |", flush=True)
    if not args.no_model:
        for name, error in model_errors(args.tiny, args.clips, args.lowering).items():
            failed |= not error <= MODEL_BOUND
            print(f"| R18+R18 forward: {name} | {error:.2e} | {MODEL_BOUND:.0e} | "
                  f"{'PASS' if error <= MODEL_BOUND else 'FAIL'} |")
    print("bf16 check: " + ("FAIL (bf16 convolutions disagree with float32 on this device: "
                            "train in float32 or change the cuDNN version)" if failed else "PASS"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
