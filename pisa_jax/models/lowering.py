"""How a PyTorch-padded 3D convolution is computed: natively, as 2D convolutions over its
temporal taps, or by oneDNN. All forms compute the same function of the same kernel
[kt, kh, kw, I, O].

XLA's CPU backend runs a native 3D convolution on a generic Eigen path that is several times
slower than its 2D convolutions, so on CPU the 2D forms win (measured table below):
- "taps": for every temporal tap k, one 2D convolution of the input frames that tap reads
  (strided in time by the temporal stride) with kernel[k]; the outputs are summed. Output frames
  whose tap k falls in the temporal zero padding get no contribution from k, so those frames are
  not computed at all (at T = 1, a 3x3x3 conv is a single 2D conv), which also saves the padding.
- "stacked": the kt frames each output frame reads are stacked on the channel axis (zero frames
  for the padding) and one 2D convolution with kt * I input channels runs: one larger matrix
  product instead of kt smaller ones, but it also multiplies the padding frames.
A kernel with kt == 1 (e.g. the 1x1x1 shortcut) is the same 2D convolution in both forms.
- "onednn": the float32 convolutions on the CPU, 2D ones too, run in oneDNN through XLA's FFI
  (`pisa_jax.native.onednn`; needs the `onednn` extra), except "taps" where at least a third of
  the temporal taps would read padding (clips of 1-2 frames in the last stages, where taps skip
  that work and oneDNN does not). The measured table is in `pisa_jax/native/onednn.py`; the
  whole training step ran 1.18-1.31x faster than XLA's forms on an AVX-512 CPU, and no faster on
  an AVX2 one (README, *Measured figures*). In bf16 on a CPU with bf16 instructions (AVX-512
  BF16, AMX) every convolution runs in oneDNN, last stages included, and the thin stems as
  "stacked" with oneDNN's 2D convolution ("onednn_stacked": 21 channels for the 3-channel 7x7x7
  stem; at 4 clips its forward took 27 ms where the 3D form took 47-56, its weight gradient the
  same ~45, the stacking counted once in each):
  XLA CPU's own bf16 convolutions ran 3-5x slower than its float32 ones, so oneDNN's bf16 made
  the paper's first benchmark step 3.2x faster (README). Elsewhere (a GPU; bf16 without those
  instructions) it is "auto".
"auto" picks per backend and shape, at trace time (`jax.default_backend()`):
- CPU, float32, a forward pass of at least ONEDNN_AUTO_MIN_FLOPS, where oneDNN is installed and
  runs AVX-512 kernels (`onednn.preferred()`): what "onednn" picks.
- CPU, bf16, where `onednn.preferred(bfloat16)`: what "onednn" picks, at every size.
- CPU otherwise: "stacked" for thin inputs (kt * I <= 64: the 3-channel stems, where one conv
  with 21 input channels beats seven with 3) and where at most 1/8 of the stacked frames would be
  temporal padding (T >= 8 for a 3x3x3 conv); "taps" otherwise (the short clips of the later
  stages, where taps skip a sixth to two thirds of the work).
- anything else (GPU, TPU): "native". cuDNN has real 3D kernels and nothing was measured on
  a GPU here; the 2D forms stay available as explicit choices to compare there.

CPU measurements behind that choice (2-core x86, jaxlib 0.10.2, YNN off, float32, forward +
input and weight gradients; weight gradient only for the stems, whose input needs none; medians
of interleaved repeats in one process, 3 repeats; N = 4 clips of 16x112x112 through each
network; ms), printed by `python benchmarks/conv_lowering.py --clips 4 --repeats 3 --no_torch`:
    layer                native      taps   stacked     auto  native/best
    hara_stem            5307.0    1103.1     812.9  stacked         6.53
    r3d_l1                538.2     184.2     194.5  stacked         2.92
    r3d_l2_strided       1170.4      47.7      51.7  stacked        24.54
    r3d_l2_shortcut        53.9       6.5       7.6  stacked         8.28
    r3d_l2                154.7      59.7      67.0     taps         2.59
    r3d_l3_strided        331.5      19.6      20.3     taps        16.94
    r3d_l3                 59.2      28.4      40.7     taps         2.08
    r3d_l4_strided        146.2      24.9      38.2     taps         5.86
    r3d_l4                753.1      27.8      74.1     taps        27.07
    tv_stem              2541.5     548.3     366.8  stacked         6.93
    tv_l1                4320.4    1763.6    1692.7  stacked         2.55
    c3d_conv1            1716.1    1336.6     804.0  stacked         2.13
    c3d_conv2            6380.4    2805.1    2734.5  stacked         2.33
    c3d_conv3a           2085.3    1287.0    1163.0  stacked         1.79
    c3d_conv4b           1508.6    1050.6    1180.3     taps         1.44
    c3d_conv5a            237.3     142.2     210.9     taps         1.67
Where auto's pick is not the fastest the forms are within 6 % (r3d_l1, r3d_l2_strided) or the
same convolution (the 1x1x1 shortcut: kt = 1), so the gap is the machine's noise.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from pisa_jax.native import frame_stack, onednn, onednn_pool

CONV_LOWERINGS = ("auto", "native", "taps", "stacked", "onednn")
# "auto" on CPU stacks the taps on channels while the stacked input stays this thin, or while at
# most this share of the stacked frames is temporal zero padding (which "taps" skips).
STACKED_MAX_CHANNELS = 64
STACKED_MAX_PADDING_SHARE = 0.125
# "onednn" keeps "taps" where they skip at least this share of temporal padding (the last
# stages' 1-2 frame clips, where oneDNN computes the padding and loses).
ONEDNN_MAX_PADDING_SHARE = 1 / 3
# "auto" on CPU sends a float32 convolution to oneDNN where `onednn.preferred()` (available, and
# AVX-512 kernels on this CPU) and its forward pass takes at least this many FLOPs: the tiny test
# models, whose convolutions are below, ran 14 ms per step in oneDNN and 8 in XLA (the calls'
# fixed cost), while at the paper's shapes oneDNN won 1.18-1.31x; the 1x1 strided
# shortcuts there (17-51 MFLOP, XLA's weight gradient needs two layout transposes of ~10 ms)
# made the step 1.8-4.1 % faster in oneDNN than with a threshold of 100 MFLOP.
ONEDNN_AUTO_MIN_FLOPS = 10e6
# ... and a max-pool whose input has at least this many elements: the stems' at the paper's
# shapes (12.8M elements for 2 samples x 2 clips, 1.6M in the aural net), not the demo's or the
# tests'. oneDNN's pass over the 3D stem's output (forward + gradient, 2-core AVX-512 CPU) took
# 8 ms where XLA's selects take ~45 ms of the step.
ONEDNN_AUTO_MIN_POOL_ELEMENTS = 1_000_000


def check_lowering(lowering: str) -> None:
    if lowering not in CONV_LOWERINGS:
        raise ValueError(f"conv lowering {lowering!r} not supported; choose one of "
                         f"{CONV_LOWERINGS}")


def resolve_lowering(lowering: str, x_shape: Sequence[int], kernel_shape: Sequence[int],
                     strides: Sequence[int], padding: Sequence[int],
                     backend: str | None = None, dtype: Any = jnp.float32,
                     onednn_preferred: bool | None = None) -> str:
    """The concrete form ("native", "taps", "stacked", "onednn" or "onednn_stacked": stacked
    with oneDNN's 2D convolution) for x [N, *spatial, I] and a kernel [*k, I, O] (2 or 3
    spatial dims; 2D ones are "native" or "onednn").

    "auto" decides by backend (default: JAX's default backend), shape and, for large float32
    and all bf16 CPU convolutions, `onednn_preferred` (default: `onednn.preferred(dtype)`, asked
    only there); "onednn" by shape on the CPU in float32, and in bf16 where `onednn_preferred`
    (where oneDNN does not apply, it is "auto").
    """
    check_lowering(lowering)
    on_cpu = (backend or jax.default_backend()) == "cpu"
    if on_cpu and jnp.dtype(dtype) == jnp.bfloat16 and lowering in ("auto", "onednn"):
        if onednn.preferred(jnp.bfloat16) if onednn_preferred is None else onednn_preferred:
            # every one: XLA's bf16 convolutions are the slow ones here
            if (len(kernel_shape) == 5 and kernel_shape[0] > 1
                    and kernel_shape[0] * kernel_shape[3] <= STACKED_MAX_CHANNELS):
                return "onednn_stacked"
            return "onednn"
        lowering = "auto"
    onednn_applies = on_cpu and jnp.dtype(dtype) == jnp.float32  # its handlers: CPU, float32
    if (lowering == "auto" and onednn_applies
            and forward_flops(x_shape, kernel_shape, strides, padding) >= ONEDNN_AUTO_MIN_FLOPS
            and (onednn.preferred() if onednn_preferred is None else onednn_preferred)):
        lowering = "onednn"
    if lowering == "onednn" and not onednn_applies:
        lowering = "auto"
    if lowering not in ("auto", "onednn"):
        return lowering if len(kernel_shape) == 5 else "native"
    if lowering == "auto" and not on_cpu:
        return "native"
    if len(kernel_shape) != 5:
        return "onednn" if lowering == "onednn" else "native"
    kt, _, _, in_features, _ = kernel_shape
    padding_share = _padding_share(x_shape, kernel_shape, strides, padding)
    if lowering == "onednn":
        return "taps" if padding_share >= ONEDNN_MAX_PADDING_SHARE - 1e-9 else "onednn"
    if kt * in_features <= STACKED_MAX_CHANNELS:
        return "stacked"
    return "stacked" if padding_share <= STACKED_MAX_PADDING_SHARE else "taps"


def resolve_max_pool(lowering: str, x_shape: Sequence[int], window: int | Sequence[int],
                     stride: int | Sequence[int], padding: int | Sequence[int],
                     backend: str | None = None, dtype: Any = jnp.float32,
                     onednn_preferred: bool | None = None) -> str:
    """Who computes a max-pool of x [N, *spatial, C] (2 or 3 spatial dims; window, stride,
    padding: one int or one per spatial dim): "onednn" or "xla".

    oneDNN where the convolutions' `lowering` asks for it ("onednn", or "auto" for inputs of
    ONEDNN_AUTO_MIN_POOL_ELEMENTS and more where `onednn.preferred(dtype)`), on the CPU in
    float32, or in bf16 where `onednn.preferred(bfloat16)` (XLA's bf16 form of the 3D stem's
    pool took 210 ms forward + gradient, oneDNN's 6), and where floor mode drops no input at the
    end (oneDNN wants padding >= 0 there).
    """
    check_lowering(lowering)
    on_cpu = (backend or jax.default_backend()) == "cpu"
    precision = jnp.dtype(dtype)
    if (lowering not in ("auto", "onednn") or not on_cpu
            or precision not in (jnp.float32, jnp.bfloat16)):
        return "xla"
    if len(x_shape) not in (4, 5):
        return "xla"
    dims = len(x_shape) - 2
    if any(onednn_pool.max_pool_high_padding(size, w, s, p) < 0 for size, w, s, p in zip(
            x_shape[1:-1], *(onednn_pool.per_axis(v, dims) for v in (window, stride, padding)))):
        return "xla"
    preferred = onednn.preferred(precision) if onednn_preferred is None else onednn_preferred
    if precision == jnp.bfloat16 and not preferred:
        return "xla"  # oneDNN would emulate bfloat16 here
    if lowering == "auto" and (math.prod(x_shape) < ONEDNN_AUTO_MIN_POOL_ELEMENTS or not preferred):
        return "xla"
    return "onednn"


def _padding_share(x_shape, kernel_shape, strides, padding) -> float:
    """The share of a 3D convolution's (output frame, temporal tap) pairs that read temporal
    zero padding: what "taps" skips."""
    kt = kernel_shape[0]
    ranges = _tap_output_ranges(x_shape[1], kt, strides[0], padding[0])
    t_out = frame_stack.output_length(x_shape[1], kt, strides[0], padding[0])
    computed = sum(last - first + 1 for first, last in ranges if last >= first)
    return 1 - computed / (kt * t_out)


def forward_flops(x_shape: Sequence[int], kernel_shape: Sequence[int], strides: Sequence[int],
                  padding: Sequence[int]) -> float:
    """2 x multiply-adds of the convolution's forward pass (padding included, as oneDNN
    computes it)."""
    spatial = [frame_stack.output_length(x_shape[1 + i], kernel_shape[i], strides[i], padding[i])
               for i in range(len(kernel_shape) - 2)]
    per_position = 2.0  # per output position, all O channels: 2 * prod([*k, I, O])
    for size in kernel_shape:
        per_position *= size
    positions = float(x_shape[0])
    for size in spatial:
        positions *= max(size, 0)
    return positions * per_position


def convolve(x: jnp.ndarray, kernel: jnp.ndarray, strides: Sequence[int], padding: Sequence[int],
             lowering: str = "native") -> jnp.ndarray:
    """Channels-last convolution with symmetric zero padding `(p, p)` per spatial dim.

    x: [N, *spatial, I], kernel: [*k, I, O] -> [N, *spatial_out, O] in x's dtype. `lowering`
    applies to 3D convolutions, and its oneDNN choice to 2D ones too; 1D ones run natively.
    The kernel may be float32 beside a bfloat16 x (a float32 parameter): the convolution runs
    with it rounded to bfloat16 either way, by a cast here or by oneDNN while it reorders the
    kernel, which saves the cast's pass over memory and accumulates the kernel's gradient in
    float32.
    """
    strides, padding = tuple(strides), tuple(padding)
    if x.ndim not in (4, 5):
        return _native(x, kernel.astype(x.dtype), strides, padding)
    form = resolve_lowering(lowering, x.shape, kernel.shape, strides, padding, dtype=x.dtype)
    if form == "onednn":
        return onednn.convolution(x, kernel, strides, padding)
    if form == "onednn_stacked":
        return _stacked(x, kernel, strides, padding, conv2d=onednn.convolution)
    kernel = kernel.astype(x.dtype)
    if form == "native" or x.ndim == 4:
        return _native(x, kernel, strides, padding)
    if form == "stacked" or kernel.shape[0] == 1:
        return _stacked(x, kernel, strides, padding)
    return _taps(x, kernel, strides, padding)


def _native(x, kernel, strides, padding):
    spatial = "DHW"[3 - (x.ndim - 2):]
    numbers = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
    return lax.conv_general_dilated(x, kernel, strides, [(p, p) for p in padding],
                                    dimension_numbers=numbers)


def _tap_output_ranges(t: int, kt: int, stride: int, pad: int) -> list[tuple[int, int]]:
    """For each tap k, the first and last output frame whose tap k reads a real input frame
    (output frame j reads input frame j * stride + k - pad); last < first: none does."""
    t_out = frame_stack.output_length(t, kt, stride, pad)
    return [(max(0, -(-(pad - k) // stride)), min(t_out - 1, (t - 1 + pad - k) // stride))
            for k in range(kt)]


def _conv2d_over_frames(frames, kernel2d, strides, padding, conv2d=None):
    """frames [N, F, H, W, C] -> one 2D conv over all N * F frames -> [N, F, H', W', O].

    `conv2d` (oneDNN's) takes the frames as they are: in bf16, XLA CPU would copy a reshape
    between its calls."""
    if conv2d is not None:
        return conv2d(frames, kernel2d, strides, padding)
    n, f = frames.shape[:2]
    y = _native(frames.reshape((n * f,) + frames.shape[2:]), kernel2d, strides, padding)
    return y.reshape((n, f) + y.shape[1:])


def _taps(x, kernel, strides, padding):
    """Sum over temporal taps k of 2D convs of the frames tap k reads, placed at the output
    frames that read them. x [N, T, H, W, I], kernel [kt, kh, kw, I, O]."""
    kt, (st, *s2d), (pt, *p2d) = kernel.shape[0], strides, padding
    t = x.shape[1]
    t_out = frame_stack.output_length(t, kt, st, pt)
    out = None
    # split, not kernel[k]: its gradient is one concatenation of the taps' kernel gradients,
    # where slices' would be kt zero-padded full-size kernels summed
    tap_kernels = lax.split(kernel, [1] * kt, axis=0)  # kt x [1, kh, kw, I, O]
    for k, (first, last) in enumerate(_tap_output_ranges(t, kt, st, pt)):
        if last < first:
            continue  # this tap only ever reads temporal padding
        start = first * st + k - pt
        frames = lax.slice_in_dim(x, start, start + (last - first) * st + 1, st, axis=1)
        y = _conv2d_over_frames(frames, tap_kernels[k][0], s2d, p2d)  # [N, last-first+1, H', W', O]
        if first or last < t_out - 1:
            y = jnp.pad(y, ((0, 0), (first, t_out - 1 - last), (0, 0), (0, 0), (0, 0)))
        out = y if out is None else out + y
    if out is None:  # every tap in the padding: only possible with an oversized kernel
        out = jnp.zeros_like(_native(x, kernel, strides, padding))
    return out


def _stacked(x, kernel, strides, padding, conv2d=None):
    """The kt frames read by each output frame stacked on channels, tap-major, then one 2D conv
    (`conv2d`, default XLA's) with the kernel reshaped to [kh, kw, kt * I, O]. x [N, T, H, W, I]."""
    kt, kh, kw, in_features, out_features = kernel.shape
    (st, *s2d), (pt, *p2d) = strides, padding
    # [N, T', H, W, kt * I]; natively beside oneDNN's convolution (XLA's concatenation was the
    # bf16 step's longest operation of its own)
    if conv2d is not None and frame_stack.applies(x.dtype):
        frames = frame_stack.stack(x, kt, st, pt)
    else:
        frames = frame_stack.stack_with_xla(x, kt, st, pt)
    kernel2d = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(kh, kw, kt * in_features,
                                                              out_features)
    return _conv2d_over_frames(frames, kernel2d, s2d, p2d, conv2d)
