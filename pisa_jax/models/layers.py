"""Pieces shared by the 2D and 3D ResNets: PyTorch-padded convolutions, BatchNorm, residual blocks.

Every layer here takes PyTorch weights, so padding is always the explicit `(p, p)` per spatial
dim that the PyTorch layer declares: Flax's 'SAME' pads strided convolutions asymmetrically and
would shift every feature map by a pixel. The submodule names (conv1, bn1, ..., downsample_conv,
downsample_bn, fc) are what the conversion table in `pisa_jax/convert.py` maps PyTorch keys onto.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from pisa_jax.models.batch_norm import BatchNorm
from pisa_jax.models.custom_gradients import add_bias, torch_dense
from pisa_jax.models.lowering import check_lowering, convolve, resolve_max_pool
from pisa_jax.native import onednn_pool

# The stems' RGB input is zero-padded to this many channels in bf16 on a GPU
# (TorchConv.min_input_channels; `stem_input_channels`).
BF16_STEM_CHANNELS = 8
# Hara and torchvision both initialise convolutions with kaiming_normal(mode="fan_out", relu).
KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# depth -> (block kind, blocks per stage); the same table for 2D (torchvision) and 3D (Hara).
STAGE_LAYOUTS = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}


def feature_dim(depth: int, base_width: int = 64) -> int:
    """Width of the pooled features: 512 (basic blocks) or 2048 (bottlenecks) at base_width 64."""
    kind, _ = STAGE_LAYOUTS[depth]
    return base_width * 8 * EXPANSION[kind]


def stem_input_channels(dtype: Any) -> int:
    """TorchConv.min_input_channels for a 3-channel stem: BF16_STEM_CHANNELS in bf16 off the
    CPU (GPU kernels want multiples of 8), else 0. On the CPU oneDNN stacks a bf16 stem's taps
    on its 3 channels instead (`lowering`), where 8 padded channels made it slower."""
    on_cpu = jax.default_backend() == "cpu"
    return BF16_STEM_CHANNELS if jnp.dtype(dtype) == jnp.bfloat16 and not on_cpu else 0


class TorchConv(nn.Module):
    """`torch.nn.ConvNd(..., padding=padding, bias=use_bias)` on channels-last input, with the
    parameters nn.Conv would have (`kernel` [*k, I, O], `bias` [O], float32, same initialisers).

    lowering: how a 3D convolution is computed (see `pisa_jax.models.lowering`); ignored for 2D.
    min_input_channels: an input with fewer channels is padded with zero channels up to this
    many, and the kernel with zero weights (the result is the same; the parameters keep their
    shape): bf16 convolution kernels of GPUs want channel counts that are multiples of 8.
    x: [N, *spatial, I] -> [N, *spatial_out, features] in `dtype`.
    """
    features: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: tuple[int, ...]
    use_bias: bool = False
    dtype: Any = jnp.float32
    lowering: str = "native"
    min_input_channels: int = 0

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param("kernel", KAIMING_FAN_OUT,
                            self.kernel_size + (x.shape[-1], self.features), jnp.float32)
        bias = (self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
                if self.use_bias else None)
        # the kernel stays float32 here: `convolve` rounds it to x's dtype where it runs
        x, bias = nn.dtypes.promote_dtype(x, bias, dtype=self.dtype)
        missing = self.min_input_channels - x.shape[-1]
        if missing > 0:
            x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, missing)])
            kernel = jnp.pad(kernel, [(0, 0)] * (kernel.ndim - 2) + [(0, missing), (0, 0)])
        y = convolve(x, kernel, self.strides, self.padding, self.lowering)
        return y if bias is None else add_bias(y, bias)


def torch_conv(features: int, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
               *, dtype: Any, name: str, use_bias: bool = False, lowering: str = "native",
               min_input_channels: int = 0) -> TorchConv:
    """A convolution padded exactly like `torch.nn.ConvNd(..., padding=padding, bias=use_bias)`.

    lowering: one of `lowering.CONV_LOWERINGS`, how a 3D convolution is computed; the
    parameters are the same whatever it is.
    """
    check_lowering(lowering)
    return TorchConv(features, tuple(kernel), tuple(stride), tuple(padding), use_bias=use_bias,
                     dtype=dtype, lowering=lowering, min_input_channels=min_input_channels,
                     name=name)


def torch_batch_norm(train: bool, *, dtype: Any, axis_name: str | None, name: str,
                     relu: bool = False) -> BatchNorm:
    """BatchNorm with PyTorch's eps and momentum (torch 0.1 == flax 0.9); float32 scale and stats.

    With `axis_name` set (e.g. "batch" under pmap) the batch statistics are averaged over devices.
    `relu`: followed by a ReLU, computed with it (see `BatchNorm.relu`).
    """
    return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                     axis_name=axis_name, relu=relu, name=name)


def torch_max_pool(x: jnp.ndarray, window: int | Sequence[int], stride: int | Sequence[int],
                   padding: int | Sequence[int], lowering: str = "native") -> jnp.ndarray:
    """`torch.nn.MaxPoolNd(window, stride, padding)` on channels-last x: pads with -inf.

    x: [N, *spatial, C]; window, stride, padding: one int for every spatial dim, or one each;
    floor mode. `lowering` is the network's convolution lowering: where `resolve_max_pool` picks
    oneDNN (the paper's stems and C3D's pools on an AVX-512 CPU under "auto"), oneDNN computes
    it, 5x faster there than the form below. Otherwise it is computed one spatial axis at a time
    from strided slices. The window max is the max of per-axis maxima, and keeping the earlier
    slice on ties sends the gradient to the first maximum in row-major window order, as PyTorch
    does. Its gradient is elementwise selects and pads, where `lax.reduce_window`'s is a
    select-and-scatter, which XLA's CPU and GPU compilers both expand into a scatter with an
    index array per spatial dim: 2-3x slower forward + backward on CPU at the stems' shapes.
    """
    if resolve_max_pool(lowering, x.shape, window, stride, padding, dtype=x.dtype) == "onednn":
        return onednn_pool.max_pool(x, window, stride, padding)
    windows, strides, paddings = (onednn_pool.per_axis(v, x.ndim - 2)
                                  for v in (window, stride, padding))
    for axis in range(x.ndim - 2, 0, -1):  # [N, ..., L, ..., C] -> [N, ..., L_out, ..., C]
        window, stride, padding = windows[axis - 1], strides[axis - 1], paddings[axis - 1]
        if window == stride == 1 and padding == 0:
            continue  # C3D's pool1 leaves time alone
        length_out = (x.shape[axis] + 2 * padding - window) // stride + 1
        config = [(0, 0, 0)] * x.ndim
        config[axis] = (padding, padding, 0)
        padded = lax.pad(x, jnp.array(-jnp.inf, x.dtype), config)
        x = None
        for k in range(window):
            tap = lax.slice_in_dim(padded, k, k + (length_out - 1) * stride + 1, stride, axis)
            # strictly greater: ties keep the earlier element; NaN propagates like torch's max
            x = tap if x is None else jnp.where((tap > x) | jnp.isnan(tap), tap, x)
    return x


class ResidualBlock(nn.Module):
    """Basic block (two 3^n convs) or bottleneck (1, 3^n, 1; stride on the 3^n conv, "v1.5").

    The shortcut is a strided 1^n conv + BN when the shape changes (Hara's type B, torchvision's
    only kind), the identity otherwise. x: [N, *spatial, C_in] -> [N, *spatial / stride, planes * e].
    """
    kind: str
    planes: int
    stride: int
    ndim: int
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    conv_lowering: str = "native"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        n = self.ndim
        one, three, none = (1,) * n, (3,) * n, (0,) * n
        strided = (self.stride,) * n

        def conv(features, kernel, stride, padding, name):
            return torch_conv(features, kernel, stride, padding, dtype=self.dtype, name=name,
                              lowering=self.conv_lowering)

        def bn(name, relu=False):
            return torch_batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name,
                                    relu=relu, name=name)

        out_features = self.planes * EXPANSION[self.kind]
        if self.kind == "basic":
            y = bn("bn1", relu=True)(conv(self.planes, three, strided, one, "conv1")(x))
            y = bn("bn2")(conv(self.planes, three, one, one, "conv2")(y))
        else:
            y = bn("bn1", relu=True)(conv(self.planes, one, one, none, "conv1")(x))
            y = bn("bn2", relu=True)(conv(self.planes, three, strided, one, "conv2")(y))
            y = bn("bn3")(conv(out_features, one, one, none, "conv3")(y))

        shortcut = x
        if self.stride != 1 or x.shape[-1] != out_features:
            shortcut = conv(out_features, one, strided, none, "downsample_conv")(x)
            shortcut = bn("downsample_bn")(shortcut)
        return nn.relu(y + shortcut)


def residual_stages(x: jnp.ndarray, depth: int, *, base_width: int, train: bool, dtype: Any,
                    bn_axis_name: str | None, conv_lowering: str = "native") -> jnp.ndarray:
    """The four stages (layer1..layer4) of a ResNet; call inside a compact parent module.

    Blocks are named `layer{stage}_{index}` (PyTorch's `layer{stage}.{index}`). Stages 2-4 start
    with stride 2 in every spatial dim (in T too for 3D, as Hara and torchvision do).
    x: [N, *spatial, C] -> [N, *spatial / 8, 8 * base_width * expansion].
    """
    kind, blocks_per_stage = STAGE_LAYOUTS[depth]
    for stage, blocks in enumerate(blocks_per_stage):
        for index in range(blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            x = ResidualBlock(kind, base_width * 2 ** stage, stride, ndim=x.ndim - 2, dtype=dtype,
                              bn_axis_name=bn_axis_name, conv_lowering=conv_lowering,
                              name=f"layer{stage + 1}_{index}")(x, train)
    return x


def pool_and_classify(x: jnp.ndarray, num_classes: int | None, *, dtype: Any) -> jnp.ndarray:
    """Global average pool (in float32) then, if num_classes, the `fc` layer.

    x: [N, *spatial, C] -> [N, C] features or [N, num_classes] logits, both float32.
    """
    features = jnp.mean(x.astype(jnp.float32), axis=tuple(range(1, x.ndim - 1)))
    if num_classes is None:
        return features
    logits = torch_dense(num_classes, dtype=dtype, name="fc")(features)
    return logits.astype(jnp.float32)


def check_depth(depth: int, allowed: Sequence[int], what: str) -> None:
    if depth not in allowed:
        raise ValueError(f"{what}: depth {depth} not supported; choose one of {sorted(allowed)}")
