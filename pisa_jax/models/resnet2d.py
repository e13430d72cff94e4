"""2D ResNet for the aural branch, in torchvision's layout (`torchvision.models.resnet18/34/50`).

Stem conv 7x7 stride 2 padding 3, BN, ReLU, max-pool 3 stride 2 padding 1; bottlenecks carry
their stride on the 3x3 conv ("ResNet v1.5", as torchvision does). The spectrogram has one
channel (`in_channels=1`); ImageNet's 3-channel conv1 is summed over its input channels by the
weight conversion.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from pisa_jax.models.layers import (STAGE_LAYOUTS, check_depth, pool_and_classify,
                                    residual_stages, torch_batch_norm, torch_conv, torch_max_pool)
from pisa_jax.models.lowering import check_lowering

# torchvision builds 18/34/50/101/152; depth 10 exists only in Hara's 3D code.
DEPTHS_2D = tuple(d for d in STAGE_LAYOUTS if d not in (10, 200))


class ResNet2D(nn.Module):
    """x: [N, H, W, in_channels] -> logits [N, num_classes], or pooled features [N, 512 | 2048]
    when num_classes is None. Parameters and BatchNorm statistics are float32; `dtype` is the
    compute dtype."""
    depth: int
    num_classes: int | None = None
    in_channels: int = 1
    base_width: int = 64
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    conv_lowering: str = "native"  # "onednn": oneDNN's convolutions (models.lowering); else XLA's

    def __post_init__(self):
        check_depth(self.depth, DEPTHS_2D, "ResNet2D")
        check_lowering(self.conv_lowering)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"ResNet2D(in_channels={self.in_channels}) expects "
                             f"[N, H, W, {self.in_channels}], got shape {x.shape}")
        x = torch_conv(self.base_width, (7, 7), (2, 2), (3, 3), dtype=self.dtype, name="conv1",
                       lowering=self.conv_lowering)(x)
        x = torch_batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, relu=True,
                             name="bn1")(x)
        x = torch_max_pool(x, window=3, stride=2, padding=1,  # [N, H/4, W/4, w]
                           lowering=self.conv_lowering)
        x = residual_stages(x, self.depth, base_width=self.base_width, train=train,
                            dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                            conv_lowering=self.conv_lowering)
        return pool_and_classify(x, self.num_classes, dtype=self.dtype)

    def example_input(self, batch: int = 1) -> jnp.ndarray:
        """The smallest convenient input for `init` (parameter shapes do not depend on H, W)."""
        return jnp.zeros((batch, 32, 32, self.in_channels), jnp.float32)
