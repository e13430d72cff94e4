"""Float32 and bf16 CPU convolutions run by oneDNN (the library PyTorch's CPU convolutions use),
called from XLA through its FFI, with their own gradients; building and loading the handlers
(the max-pool's too: it is in `onednn_pool`).

XLA CPU computes convolutions with Eigen, whose matrix kernels reach ~60 % of what oneDNN's
reach on this project's shapes: oneDNN takes the 3D stem's forward + weight gradient in ~225 ms
where XLA's best form takes ~410 (4 clips of 16x112x112, 2-core AVX-512 machine; see
`benchmarks/conv_lowering.py`). `convolution` computes exactly what `lax.conv_general_dilated`
computes for the project's layouts (x [N, *spatial, I], kernel [*k, I, O], symmetric zero
padding), to float32 rounding; 2D convolutions run as 3D ones of depth 1, and take the
activations as they are ([..., H, W, I]: frames [N, T, H, W, I] are N * T images), like the
2D max-pool: XLA CPU turns a bf16 reshape between two custom calls into a copy through float32
(with the BatchNorm sums taking theirs as they are too, the bf16 step at the paper's first
shapes lost 74 such copies, 15 ms of thread time).

Where oneDNN comes from: the `onednn` extra (`pip install 'pisa-jax[onednn]'`: the wheels
onednn-cpu-gomp and onednn-devel-cpu-gomp, which put libdnnl and its headers under the
environment's prefix), or any oneDNN 3.x install named by `$PISA_JAX_ONEDNN_ROOT` (a prefix
with include/oneapi/dnnl and lib/libdnnl.so). The handlers in `onednn_conv.cc` and
`onednn_pool.cc` are compiled on first use (`pisa_jax.native.build`, a few seconds, then
cached). `PISA_JAX_ONEDNN=off` in the environment turns it off (then "auto" is XLA's own, e.g.
to compare). oneDNN runs on its own OpenMP threads, one per core unless OMP_NUM_THREADS says
otherwise.

Forward + backward per layer against XLA's two forms and PyTorch (2-core AMD EPYC, Zen 4,
AVX-512, tcmalloc, jax 0.10.2, oneDNN 3.2 from onednn-cpu-gomp 2023.2, torch 2.14.1; 4 clips;
ms, medians of 5 interleaved repeats), `python benchmarks/conv_lowering.py --clips 4
--lowerings taps,stacked,onednn`:
    layer                  taps   stacked    onednn     torch
    hara_stem             537.9     445.6     234.7     242.8
    r3d_l1                105.9     110.7      74.4      87.6
    r3d_l2_strided         38.8      32.7      23.6      29.3
    r3d_l2                 42.9      48.2      31.8      37.3
    r3d_l3_strided         12.9      15.1      12.3      15.7
    r3d_l3                 24.8      29.8      23.8      28.0
    r3d_l4_strided         14.9      23.9      17.7      19.6
    r3d_l4                 16.0      39.6      27.9      28.8
    c3d_conv2            1723.9    1658.1    1468.4    1316.2
    c3d_conv5a             80.7     138.8      88.2      92.3
oneDNN computes the temporal padding that "taps" skips, so at clips of 1-2 frames (r3d_l4,
c3d_conv5a) taps stay faster; `models.lowering`'s "onednn" keeps them there. Its "auto" sends
the float32 convolutions of 10 MFLOP or more here where `preferred()` (AVX-512 kernels).

bf16 (`--precision bfloat16`) runs here where the CPU has bf16 instructions (AVX-512 BF16 or
AMX: `preferred(jnp.bfloat16)`), all of it: XLA CPU computes bf16 convolutions several times
slower than float32 ones, while oneDNN's AMX kernels reach 1.6-2 TFLOP/s on the residual layers
(2-core Xeon with AMX; float32 ~300-390 GFLOP/s). The float32 kernel parameter is passed as it
is: the reorder into oneDNN's layout rounds it to bf16 (one pass instead of XLA's cast and then
the reorder: 455 against 522 ms per step), and its gradient is accumulated and written in
float32.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pisa_jax.native.build import NativeBuildError, build_and_load

SOURCES = {"conv": Path(__file__).with_name("onednn_conv.cc"),
           "pool": Path(__file__).with_name("onednn_pool.cc")}
COMMON_HEADER = Path(__file__).with_name("onednn_common.h")
# what the model calls -> the handler's symbol (max-pool ones in the pool library)
TARGETS = {"forward": "PisaOnednnConvForward", "weight_gradient": "PisaOnednnConvWeightGradient",
           "input_gradient": "PisaOnednnConvInputGradient",
           "max_pool_forward": "PisaOnednnMaxPoolForward",
           "max_pool_backward": "PisaOnednnMaxPoolBackward"}
INSTALL_HINT = "pip install 'pisa-jax[onednn]'"
_registered: set[str] = set()


class Libraries(NamedTuple):
    """The built handlers: the convolutions' (`onednn_conv.cc`) and the max-pool's."""
    conv: ctypes.CDLL
    pool: ctypes.CDLL


def onednn_root() -> Path:
    return Path(os.environ.get("PISA_JAX_ONEDNN_ROOT") or sys.prefix)


@functools.lru_cache(maxsize=None)
def _loaded() -> tuple[Libraries | None, str | None]:
    """Builds, loads and registers the handlers once per process: (the libraries, None) when
    they are ready, else (None, the reason they cannot be used)."""
    if os.environ.get("PISA_JAX_ONEDNN", "").lower() == "off":
        return None, "turned off by PISA_JAX_ONEDNN=off"
    root = onednn_root()
    headers = root / "include" / "oneapi" / "dnnl"
    if not (headers / "dnnl.hpp").exists() or not any((root / "lib").glob("libdnnl.so*")):
        return None, f"oneDNN not found under {root} ({INSTALL_HINT}, or set PISA_JAX_ONEDNN_ROOT)"
    try:
        libraries = Libraries(**{
            name: build_and_load(source, [str(root / "include")], str(root / "lib"), ["dnnl"],
                                 headers=[COMMON_HEADER, *sorted(headers.glob("*.h*"))])
            for name, source in SOURCES.items()})
    except NativeBuildError as e:
        return None, str(e)
    libraries.pool.PisaOnednnMaxPoolWorkspaceBytes.restype = ctypes.c_int64
    major = libraries.conv.PisaOnednnMajorVersion()
    if major != 3:
        return None, f"oneDNN {major}.x under {root}: this code is written for oneDNN 3.x"
    for target, name in TARGETS.items():
        if name not in _registered:  # once per process, even if _loaded runs again
            library = libraries.pool if target.startswith("max_pool") else libraries.conv
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)),
                                        platform="cpu")
            _registered.add(name)
    return libraries, None


def _load() -> str | None:
    return _loaded()[1]


def libraries() -> Libraries | None:
    """The loaded handler libraries, None where `unavailable_reason()` says why not."""
    return _loaded()[0]


def preferred(dtype=jnp.float32) -> bool:
    """Whether "auto" sends CPU convolutions of `dtype` here.

    float32 (the large ones): oneDNN is available and runs its AVX-512 kernels on this CPU. On
    an AVX2-only CPU (2-core AMD EPYC, Zen 3) the whole training step was no faster with them
    (0.99x and 1.04x XLA's time at the paper's two benchmark shapes; its weight gradients take
    a GEMM path there), so there XLA keeps them.
    bfloat16 (all of them): oneDNN is available and this CPU has bfloat16 instructions (AVX-512
    BF16 or AMX), which oneDNN's bfloat16 kernels need to run natively; elsewhere oneDNN would
    emulate them, so bfloat16 convolutions stay XLA's (and `supports` says no)."""
    loaded = libraries()
    if loaded is None:
        return False
    if jnp.dtype(dtype) == jnp.bfloat16:
        return bool(loaded.conv.PisaOnednnHasBf16())
    return jnp.dtype(dtype) == jnp.float32 and bool(loaded.conv.PisaOnednnHasAvx512())


def supports(dtype) -> bool:
    """Whether the handlers take activations of `dtype` on this CPU: float32 anywhere oneDNN
    runs, bfloat16 where the CPU has bfloat16 instructions (`preferred(bfloat16)`)."""
    if jnp.dtype(dtype) == jnp.float32:
        return True
    return jnp.dtype(dtype) == jnp.bfloat16 and preferred(jnp.bfloat16)


def unavailable_reason() -> str | None:
    """Why `convolution` cannot run in this process (None: it can). Builds on first call."""
    return _load()


def available() -> bool:
    return _load() is None


def check_available() -> None:
    """Raise NativeBuildError with the one-line reason when oneDNN cannot be used."""
    reason = _load()
    if reason is not None:
        raise NativeBuildError(f"conv lowering 'onednn': {reason}")


def check_dtype(what: str, dtype) -> None:
    if not supports(dtype):
        raise TypeError(f"oneDNN {what} takes float32, or bfloat16 on a CPU with bfloat16 "
                        f"instructions; got {jnp.dtype(dtype)}")


def convolution(x: jnp.ndarray, kernel: jnp.ndarray, strides: Sequence[int],
                padding: Sequence[int]) -> jnp.ndarray:
    """A 3D convolution of x [N, D, H, W, I] with kernel [kd, kh, kw, I, O], or a 2D one of
    x [..., H, W, I] with kernel [kh, kw, I, O] (every leading axis of x a batch one: frames
    [N, T, H, W, I] are N * T images), zero padding (p, p) per spatial dim -> [N, *spatial_out,
    O] (2D: [..., H', W', O]) in x's dtype. Differentiable in x and kernel.

    The handlers take the frames as they are because XLA CPU writes a copy of a bfloat16 operand
    (through float32) for a reshape between two custom calls.

    x is float32, or bfloat16 where `supports(bfloat16)`; the kernel is x's dtype or float32
    (oneDNN then converts it while reordering it, and writes the kernel's gradient in float32,
    accumulated in float32 either way).
    """
    check_available()
    check_dtype("convolution", x.dtype)
    if kernel.dtype not in (x.dtype, jnp.float32):
        raise TypeError(f"oneDNN convolution: kernel {kernel.dtype} with input {x.dtype} "
                        f"(the kernel must be the input's dtype or float32)")
    if kernel.ndim == 4 and x.ndim >= 4:  # 2D: the handlers run it as depth 1
        return _conv(x, kernel, (1,) + tuple(strides), (0,) + tuple(padding))
    if kernel.ndim != 5 or x.ndim != 5:
        raise ValueError(f"oneDNN convolution takes x [N, D, H, W, I] with a 3D kernel or "
                         f"[..., H, W, I] with a 2D one, got {x.shape} and {kernel.shape}")
    return _conv(x, kernel, tuple(strides), tuple(padding))


def window_attributes(strides, padding) -> dict[str, np.ndarray]:
    return {"strides": np.asarray(strides, np.int64), "pad_lo": np.asarray(padding, np.int64),
            "pad_hi": np.asarray(padding, np.int64)}


def _output_shape(x_shape, kernel_shape, strides, padding) -> tuple[int, ...]:
    """y's shape for x and a kernel of 3 (NDHWC) or 2 ([..., H, W, C]) spatial dims; strides
    and padding 3 each (D H W)."""
    spatial = len(kernel_shape) - 2
    first = len(x_shape) - 1 - spatial  # x's first spatial axis
    offset = 3 - spatial  # a 2D call's strides and padding follow the depth's
    sizes = tuple((x_shape[first + i] + 2 * padding[offset + i] - kernel_shape[i])
                  // strides[offset + i] + 1 for i in range(spatial))
    return tuple(x_shape[:first]) + sizes + (kernel_shape[-1],)


def _call(target: str, shape, dtype, a, b, strides, padding):
    out = jax.ShapeDtypeStruct(tuple(shape), dtype)
    # vmap (e.g. jax.jacrev) runs the calls one after another: correct for any batched operand
    return jax.ffi.ffi_call(TARGETS[target], out, vmap_method="sequential")(
        a, b, **window_attributes(strides, padding))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, kernel, strides, padding):
    shape = _output_shape(x.shape, kernel.shape, strides, padding)
    if min(shape) <= 0:
        raise ValueError(f"convolution of {x.shape} with kernel {kernel.shape}, strides "
                         f"{strides}, padding {padding} has an empty output {shape}")
    return _call("forward", shape, x.dtype, x, kernel, strides, padding)


def _conv_forward(x, kernel, strides, padding):
    return _conv(x, kernel, strides, padding), (x, kernel)


def _conv_backward(strides, padding, residuals, dy):
    x, kernel = residuals
    # XLA drops the input gradient's call where nothing reads it (a network's first layer).
    dx = _call("input_gradient", x.shape, x.dtype, dy, kernel, strides, padding)
    dkernel = _call("weight_gradient", kernel.shape, kernel.dtype, x, dy, strides, padding)
    return dx, dkernel


_conv.defvjp(_conv_forward, _conv_backward)
