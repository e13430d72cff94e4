"""PyTorch models of the same architectures as `pisa_jax.models`, for the parity tests and the
side-by-side benchmark (`benchmarks/compare_frameworks.py`); never used by training.

This package imports nothing heavy itself; its modules import torch (and torchvision), which are
the optional `torch` extra:
- `resnet`: Hara's 3D ResNet layout (`HaraResNet3D`, a `ResNet` of any dimension with the same
  block and key names, so also a torchvision-layout 2D ResNet of any width), and torchvision's
  own ResNets.
- `c3d`: C3D in the layout of the Sports-1M weights.
- `skill_model`: the paper's audio-visual model (two backbones, three heads) and its training
  step (sum of three cross-entropies, Adam with coupled weight decay).
"""
