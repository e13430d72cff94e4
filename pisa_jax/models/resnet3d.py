"""3D ResNet for the visual branch, in Hara's layout (kenshohara/3D-ResNets-PyTorch) or
torchvision's `video.r3d_18` stem.

Both layouts share the residual stages (shortcut type B; bottleneck stride on the 3x3x3 conv) and
differ only in the stem:
- "hara": conv 7x7x7, stride (conv1_t_stride, 2, 2), padding (3, 3, 3), BN, ReLU, then max-pool
  3x3x3 stride 2 padding 1 (Hara's released KM models keep the max-pool: `no_max_pool` is off).
- "torchvision": conv 3x7x7, stride (conv1_t_stride, 2, 2), padding (1, 3, 3), BN, ReLU, no pool.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from pisa_jax.models.layers import (STAGE_LAYOUTS, check_depth, pool_and_classify,
                                    residual_stages, stem_input_channels, torch_batch_norm,
                                    torch_conv, torch_max_pool)
from pisa_jax.models.lowering import check_lowering

STEMS = ("hara", "torchvision")


class ResNet3D(nn.Module):
    """x: [N, T, H, W, C] -> logits [N, num_classes], or pooled features [N, 512 | 2048] when
    num_classes is None (widths scale with base_width / 64). Parameters and BatchNorm statistics
    are float32; `dtype` is the compute dtype."""
    depth: int
    num_classes: int | None = None
    stem: str = "hara"
    conv1_t_stride: int = 1
    base_width: int = 64
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    conv_lowering: str = "auto"  # how every 3D conv runs: see models.lowering

    def __post_init__(self):
        check_depth(self.depth, STAGE_LAYOUTS, "ResNet3D")
        if self.stem not in STEMS:
            raise ValueError(f"ResNet3D: stem {self.stem!r} not supported; choose one of {STEMS}")
        check_lowering(self.conv_lowering)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        if x.ndim != 5:
            raise ValueError(f"ResNet3D expects [N, T, H, W, C], got shape {x.shape}")
        t_kernel, t_pad = (7, 3) if self.stem == "hara" else (3, 1)
        # bf16 on a GPU: the RGB input padded to 8 zero channels (zero weights)
        stem_channels = stem_input_channels(self.dtype)
        x = torch_conv(self.base_width, (t_kernel, 7, 7), (self.conv1_t_stride, 2, 2),
                       (t_pad, 3, 3), dtype=self.dtype, name="conv1",
                       lowering=self.conv_lowering, min_input_channels=stem_channels)(x)
        x = torch_batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, relu=True,
                             name="bn1")(x)
        if self.stem == "hara":
            x = torch_max_pool(x, window=3, stride=2, padding=1,  # [N, T/2, H/4, W/4, w]
                               lowering=self.conv_lowering)
        x = residual_stages(x, self.depth, base_width=self.base_width, train=train,
                            dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                            conv_lowering=self.conv_lowering)
        return pool_and_classify(x, self.num_classes, dtype=self.dtype)

    def example_input(self, batch: int = 1) -> jnp.ndarray:
        """The smallest convenient input for `init` (parameter shapes do not depend on T, H, W)."""
        return jnp.zeros((batch, 1, 32, 32, 3), jnp.float32)
