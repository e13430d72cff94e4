"""PyTorch C3D in the layout of the Sports-1M weights (`c3d.pickle`).

Written from that layout: conv1, conv2, conv3a/b, conv4a/b, conv5a/b (3x3x3, padding 1, bias,
ReLU), max-pools (1,2,2), then (2,2,2) with pool5 padded (0,1,1), pool5 flattened in PyTorch's
[C, T, H, W] order, fc6, fc7, fc8 with ReLU and dropout 0.5 between them. The state-dict keys
are those of the file. `base_width` and `clip` shrink it for fast tests (the real net is
base_width 64 on 16x112x112 clips). `features` is the visual backbone of the skill model.
"""
from __future__ import annotations

import math

import torch
from torch import nn

# (conv names, width at base_width 64, pool window == stride, pool padding). Written out again
# rather than imported from pisa_jax.models.c3d: a reference that shares the model's table
# could not catch a mistake in it.
GROUPS = (
    (("conv1",), 64, (1, 2, 2), (0, 0, 0)),
    (("conv2",), 128, (2, 2, 2), (0, 0, 0)),
    (("conv3a", "conv3b"), 256, (2, 2, 2), (0, 0, 0)),
    (("conv4a", "conv4b"), 512, (2, 2, 2), (0, 0, 0)),
    (("conv5a", "conv5b"), 512, (2, 2, 2), (0, 1, 1)),
)


class TorchC3D(nn.Module):
    def __init__(self, num_classes: int = 487, base_width: int = 64,
                 clip: tuple[int, int, int] = (16, 112, 112)):
        super().__init__()
        self.groups = []
        in_channels, shape = 3, clip
        for names, width, window, padding in GROUPS:
            width = width * base_width // 64
            for name in names:
                setattr(self, name, nn.Conv3d(in_channels, width, 3, padding=1))
                in_channels = width
            pool = nn.MaxPool3d(window, stride=window, padding=padding)
            self.groups.append((names, pool))
            shape = [(n + 2 * p - w) // w + 1 for n, w, p in zip(shape, window, padding)]
        fc_width = 4096 * base_width // 64
        self.fc6 = nn.Linear(in_channels * math.prod(shape), fc_width)
        self.fc7 = nn.Linear(fc_width, fc_width)
        self.fc8 = nn.Linear(fc_width, num_classes)
        self.dropout = nn.Dropout(0.5)

    def features(self, x):
        """x: [N, 3, T, H, W] -> ReLU(fc6) [N, 4096]."""
        for names, pool in self.groups:
            for name in names:
                x = torch.relu(getattr(self, name)(x))
            x = pool(x)
        return torch.relu(self.fc6(torch.flatten(x, 1)))  # flattens [C, T, H, W]

    def forward(self, x):
        x = torch.relu(self.fc7(self.dropout(self.features(x))))
        return self.fc8(self.dropout(x))


def torch_c3d(num_classes: int = 487, base_width: int = 64, clip=(16, 112, 112),
              seed: int = 0) -> TorchC3D:
    """Seeded, in eval mode. He-normal weights and random biases instead of PyTorch's defaults:
    those shrink the activations layer after layer, until the features are too small for an
    error to show; random biases also expose a bias mapping mistake."""
    torch.manual_seed(seed)
    model = TorchC3D(num_classes, base_width, clip)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv3d, nn.Linear)):
                fan_in = math.prod(module.weight.shape[1:])
                module.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
                module.bias.normal_(0.0, 0.1)
    return model.eval()
