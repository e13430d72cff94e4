"""C3D (Tran et al. 2015), the visual backbone of the paper's baseline (Parmar's C3D + R18-2D),
in the layout of the Sports-1M weights that baseline starts from (`c3d.pickle`).

Layers (widths at base_width 64; every conv 3x3x3, stride 1, padding 1, with bias, then ReLU):
    conv1 64              -> max-pool (1,2,2)
    conv2 128             -> max-pool (2,2,2)
    conv3a, conv3b 256    -> max-pool (2,2,2)
    conv4a, conv4b 512    -> max-pool (2,2,2)
    conv5a, conv5b 512    -> max-pool (2,2,2), padding (0,1,1)
    fc6 8192 -> 4096, ReLU  (the features: num_classes=None stops here)
    dropout, fc7 4096 -> 4096, ReLU, dropout, fc8 4096 -> num_classes (487 in Sports-1M)
Pool windows equal their strides. A 16x112x112 clip leaves pool5 at 1x4x4x512 = 8192 values, so
fc6's input size, and with it the weights, fix the clip shape (`clip_shape`).

fc6 and the flattening order: PyTorch flattens pool5 as [C, T, H, W]; a channels-last net holds
[T, H, W, C]. This model transposes pool5 to [C, T, H, W] before flattening (a few KB per clip),
so fc6's kernel is the PyTorch weight transposed like every other linear layer, the conversion
table stays declarative, and the kernel is correct for any clip_shape. The alternative,
permuting fc6's rows at conversion, would tie the converter to pool5's (T, H, W).

Input normalisation of the Sports-1M weights:
- The original Caffe C3D was trained on frames in 0-255, BGR channel order, resized to 128x171,
  minus a per-pixel mean clip of Sports-1M (16x128x171), cropped to 112x112; no std scaling.
- The PyTorch port that distributes `c3d.pickle` shows its use on RGB frames in 0-255 with no mean
  subtracted.
- Parmar's PISA code, whose C3D baseline the paper reports, feeds the same weights RGB frames in
  [0, 1] normalised with ImageNet's mean and std (`INPUT_MEAN`, `INPUT_STD`) and fine-tunes them.
This project follows Parmar, since the baseline figure to reproduce is his: the data pipeline
normalises with INPUT_MEAN / INPUT_STD on the device, as it does for the ResNets with theirs. The
model itself never normalises. Frozen features would need the Caffe convention instead.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from pisa_jax.models.custom_gradients import torch_dense
from pisa_jax.models.layers import stem_input_channels, torch_conv, torch_max_pool

SPORTS1M_CLASSES = 487
CLIP_SHAPE = (16, 112, 112)  # (T, H, W) of the Sports-1M clips
INPUT_MEAN = (0.485, 0.456, 0.406)  # RGB in [0, 1]: the normalisation of Parmar's C3D baseline
INPUT_STD = (0.229, 0.224, 0.225)
FC_WIDTH = 4096  # fc6 / fc7 outputs at base_width 64
# (conv names, their width at base_width 64, pool window == stride, pool padding) per group.
GROUPS = (
    (("conv1",), 64, (1, 2, 2), (0, 0, 0)),
    (("conv2",), 128, (2, 2, 2), (0, 0, 0)),
    (("conv3a", "conv3b"), 256, (2, 2, 2), (0, 0, 0)),
    (("conv4a", "conv4b"), 512, (2, 2, 2), (0, 0, 0)),
    (("conv5a", "conv5b"), 512, (2, 2, 2), (0, 1, 1)),
)


def pool5_shape(clip_shape: Sequence[int]) -> tuple[int, int, int]:
    """(T, H, W) after pool5 for a clip of (T, H, W): (1, 4, 4) for 16x112x112."""
    shape = tuple(clip_shape)
    for _, _, window, padding in GROUPS:
        shape = tuple((n + 2 * p - w) // w + 1 for n, w, p in zip(shape, window, padding))
    return shape


class C3D(nn.Module):
    """x: [N, T, H, W, 3] with (T, H, W) == clip_shape -> ReLU'd fc6 features [N, 4096] when
    num_classes is None, else fc8 logits [N, num_classes]; both float32. Widths scale with
    base_width / 64 (narrow nets for tests). Parameters are float32; `dtype` is the compute dtype.
    Dropout (between fc6/fc7 and fc7/fc8, only with a classifier) uses the "dropout" rng."""
    num_classes: int | None = None
    dropout: float = 0.5
    base_width: int = 64
    clip_shape: tuple[int, int, int] = CLIP_SHAPE
    dtype: Any = jnp.float32
    conv_lowering: str = "native"

    def __post_init__(self):
        if min(pool5_shape(self.clip_shape)) < 1:
            raise ValueError(f"C3D: clip_shape {tuple(self.clip_shape)} is too small: the five "
                             "pools need T >= 16 and H, W >= 16")
        super().__post_init__()

    @property
    def feature_dim(self) -> int:
        return FC_WIDTH * self.base_width // 64

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        expected = (*self.clip_shape, 3)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"C3D(clip_shape={tuple(self.clip_shape)}) expects [N, "
                             f"{', '.join(map(str, expected))}], got shape {x.shape}")
        # bf16 on a GPU: conv1's RGB input padded to 8 zero channels (zero weights)
        stem_channels = stem_input_channels(self.dtype)
        for names, width, window, padding in GROUPS:
            for name in names:
                x = torch_conv(width * self.base_width // 64, (3, 3, 3), (1, 1, 1), (1, 1, 1),
                               dtype=self.dtype, name=name, use_bias=True,
                               lowering=self.conv_lowering,
                               min_input_channels=stem_channels if name == "conv1" else 0)(x)
                x = nn.relu(x)
            x = torch_max_pool(x, window, window, padding, self.conv_lowering)
        # [N, T5, H5, W5, C] -> [N, C, T5, H5, W5] -> [N, C*T5*H5*W5]: PyTorch's flattening order.
        x = jnp.transpose(x, (0, 4, 1, 2, 3)).reshape(x.shape[0], -1)

        def dense(features, name):
            return torch_dense(features, dtype=self.dtype, name=name)

        x = nn.relu(dense(self.feature_dim, "fc6")(x))  # [N, 4096]
        if self.num_classes is None:
            return x.astype(jnp.float32)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.relu(dense(self.feature_dim, "fc7")(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return dense(self.num_classes, "fc8")(x).astype(jnp.float32)  # [N, num_classes]

    def example_input(self, batch: int = 1) -> jnp.ndarray:
        """An input for `init`: fc6's input size depends on the clip shape."""
        return jnp.zeros((batch, *self.clip_shape, 3), jnp.float32)
