"""PyTorch reference models for the parity tests (imported only after torch is known to exist).

The models live in `pisa_jax.reference` (shared with the side-by-side benchmark):
- `hara_resnet3d`: Hara's 3D ResNet layout (conv1 7x7x7 stride (t, 2, 2) pad 3, bn1, ReLU,
  max-pool 3/2/1, four stages `layer1..4`, type-B `downsample`, `fc`), his key names.
- `torchvision_video_resnet`: torchvision's own VideoResNet classes (r3d_18 and its deeper
  siblings built from the same parts). All factories seed torch, so figures are reproducible.
- `torchvision_resnet2d`: torchvision.models.resnet18/34/50/101/152.
Here: `parity` (random BN statistics, conversion, same input through both, eval mode, float32)
and its helpers.
"""
from __future__ import annotations

import functools

import jax
import numpy as np
import torch
from torch import nn

from pisa_jax.convert import convert_state_dict
from pisa_jax.reference.resnet import (STAGES, HaraResNet3D, hara_resnet3d,  # noqa: F401
                                       torchvision_resnet2d, torchvision_video_resnet)


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
