"""PyTorch ResNets: Hara's 3D layout of any depth and width, the same in 2D, torchvision's own.

`ResNet(ndim=3)` is Hara's 3D ResNet (kenshohara/3D-ResNets-PyTorch), written from its
architecture description: conv1 7^ndim stride (t, 2, 2) pad 3, bn1, ReLU, max-pool 3/2/1, four
stages `layer1..4` of blocks `conv1, bn1, conv2, bn2(, conv3, bn3)` with a type-B `downsample`
= Sequential(1x1 conv, BN), adaptive average pool, `fc` (None: no classifier, the features).
`ndim=2` gives the same net in 2D, which is torchvision's ResNet layout and key names (with any
base width and input channels, which torchvision's classes do not take). All factories seed
torch, so weights and figures are reproducible.
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models.video import resnet as video_resnet

STAGES = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
          101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}
_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAX_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVG_POOL = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


class Block(nn.Module):
    """Basic (two 3x3 convs) or bottleneck (1x1, strided 3x3, 1x1 with 4x the width) block."""

    def __init__(self, in_planes: int, planes: int, stride: int, bottleneck: bool, ndim: int = 3):
        super().__init__()
        conv, bn = _CONV[ndim], _BN[ndim]
        self.bottleneck = bottleneck
        out_planes = planes * (4 if bottleneck else 1)
        if bottleneck:
            self.conv1 = conv(in_planes, planes, 1, bias=False)
            self.conv2 = conv(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.conv3 = conv(planes, out_planes, 1, bias=False)
            self.bn3 = bn(out_planes)
        else:
            self.conv1 = conv(in_planes, planes, 3, stride=stride, padding=1, bias=False)
            self.conv2 = conv(planes, planes, 3, padding=1, bias=False)
        self.bn1 = bn(planes)
        self.bn2 = bn(planes)
        self.downsample = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(conv(in_planes, out_planes, 1, stride=stride, bias=False),
                                            bn(out_planes))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.bottleneck:
            out = self.bn3(self.conv3(torch.relu(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class ResNet(nn.Module):
    """x [N, C, (T,) H, W] -> logits [N, num_classes], or features [N, D] if num_classes is
    None. conv1_t_stride: the stem's temporal stride (3D only)."""

    def __init__(self, depth: int, num_classes: int | None = 400, *, ndim: int = 3,
                 in_channels: int = 3, conv1_t_stride: int = 1, base_width: int = 64):
        super().__init__()
        bottleneck = depth >= 50
        stride = (conv1_t_stride, 2, 2) if ndim == 3 else 2
        self.conv1 = _CONV[ndim](in_channels, base_width, 7, stride=stride, padding=3, bias=False)
        self.bn1 = _BN[ndim](base_width)
        self.maxpool = _MAX_POOL[ndim](kernel_size=3, stride=2, padding=1)
        in_planes = base_width
        for stage, blocks in enumerate(STAGES[depth]):
            planes = base_width * 2 ** stage
            layer = []
            for index in range(blocks):
                layer.append(Block(in_planes, planes, 2 if stage > 0 and index == 0 else 1,
                                   bottleneck, ndim))
                in_planes = planes * (4 if bottleneck else 1)
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layer))
        self.avgpool = _AVG_POOL[ndim](1)
        self.feature_dim = in_planes
        self.fc = None if num_classes is None else nn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
        x = torch.flatten(self.avgpool(x), 1)
        return x if self.fc is None else self.fc(x)


HaraResNet3D = ResNet  # ndim=3 by default: Hara's layout, his key names


def hara_resnet3d(depth: int, num_classes: int | None = 400, conv1_t_stride: int = 1,
                  base_width: int = 64, seed: int = 0) -> ResNet:
    torch.manual_seed(seed)  # reproducible weights, hence reproducible parity figures
    return ResNet(depth, num_classes, conv1_t_stride=conv1_t_stride, base_width=base_width)


def resnet2d(depth: int, num_classes: int | None = 1000, in_channels: int = 3,
             base_width: int = 64, seed: int = 0) -> ResNet:
    """torchvision's 2D ResNet layout with any input channels and base width."""
    torch.manual_seed(seed)
    return ResNet(depth, num_classes, ndim=2, in_channels=in_channels, base_width=base_width)


def torchvision_video_resnet(depth: int, num_classes: int = 400, seed: int = 0) -> nn.Module:
    """torchvision's VideoResNet with its r3d stem; depth 18 is exactly `video.r3d_18`."""
    torch.manual_seed(seed)
    if depth == 18:
        return torchvision.models.video.r3d_18(num_classes=num_classes)
    block = video_resnet.Bottleneck if depth >= 50 else video_resnet.BasicBlock
    return video_resnet.VideoResNet(block, [video_resnet.Conv3DSimple] * 4, list(STAGES[depth]),
                                    video_resnet.BasicStem, num_classes=num_classes)


def torchvision_resnet2d(depth: int, num_classes: int = 1000, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return getattr(torchvision.models, f"resnet{depth}")(num_classes=num_classes)
