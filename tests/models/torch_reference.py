"""PyTorch reference models for the parity tests (imported only after torch is known to exist).

- `HaraResNet3D` (built seeded by `hara_resnet3d`): Hara's 3D ResNet layout
  (kenshohara/3D-ResNets-PyTorch), written here from its architecture description: conv1 7x7x7 stride (t, 2, 2) pad 3, bn1, ReLU, max-pool 3/2/1, four
  stages `layer1..4` of blocks with `conv1, bn1, conv2, bn2(, conv3, bn3)` and a type-B
  `downsample` = Sequential(1x1x1 conv, BN), adaptive average pool, `fc`. Same key names as his.
- `torchvision_video_resnet`: torchvision's own VideoResNet classes (r3d_18 and its deeper
  siblings built from the same parts). All factories seed torch, so figures are reproducible.
- `torchvision_resnet2d`: torchvision.models.resnet18/34/50/101/152.
- `parity`: random BN statistics, conversion, same input through both, eval mode, float32.
"""
from __future__ import annotations

import functools

import jax
import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.video import resnet as video_resnet

from pisa_jax.convert import convert_state_dict

STAGES = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
          101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}


class HaraBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, bottleneck: bool):
        super().__init__()
        self.bottleneck = bottleneck
        out_planes = planes * (4 if bottleneck else 1)
        if bottleneck:
            self.conv1 = nn.Conv3d(in_planes, planes, 1, bias=False)
            self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.conv3 = nn.Conv3d(planes, out_planes, 1, bias=False)
            self.bn3 = nn.BatchNorm3d(out_planes)
        else:
            self.conv1 = nn.Conv3d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
            self.conv2 = nn.Conv3d(planes, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm3d(out_planes))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.bottleneck:
            out = self.bn3(self.conv3(torch.relu(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class HaraResNet3D(nn.Module):
    def __init__(self, depth: int, num_classes: int = 400, conv1_t_stride: int = 1,
                 base_width: int = 64):
        super().__init__()
        bottleneck = depth >= 50
        self.conv1 = nn.Conv3d(3, base_width, (7, 7, 7), stride=(conv1_t_stride, 2, 2),
                               padding=(3, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(base_width)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        in_planes = base_width
        for stage, blocks in enumerate(STAGES[depth]):
            planes = base_width * 2 ** stage
            layer = []
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layer.append(HaraBlock(in_planes, planes, stride, bottleneck))
                in_planes = planes * (4 if bottleneck else 1)
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def hara_resnet3d(depth: int, num_classes: int = 400, conv1_t_stride: int = 1,
                  base_width: int = 64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # reproducible weights, hence reproducible parity figures
    return HaraResNet3D(depth, num_classes, conv1_t_stride, base_width)


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


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics, so that a
    mapping mistake (scale <-> bias, mean <-> var) cannot hide behind the defaults (1, 0, 0, 1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                shape = module.weight.shape
                module.weight.copy_(0.5 + torch.rand(shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(shape, generator=generator))
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parity(torch_model: nn.Module, flax_model, x: np.ndarray, seed: int = 0):
    """Max |logit difference| and max |logit| of torch_model vs the converted flax_model.

    x: float32 in PyTorch layout [N, C, (T,) H, W]; the Flax model gets it channels-last.
    Returns (max_abs_diff, max_abs_logit, report)."""
    randomize_batchnorm(torch_model, seed)
    with torch.no_grad():
        want = torch_model(torch.from_numpy(x)).numpy()
    variables, report = convert_state_dict(torch_model.state_dict(), flax_model)
    apply = jax.jit(functools.partial(flax_model.apply, train=False))
    got = np.asarray(apply(variables, np.moveaxis(x, 1, -1)))
    assert got.shape == want.shape
    return float(np.abs(got - want).max()), float(np.abs(want).max()), report


def random_input(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
