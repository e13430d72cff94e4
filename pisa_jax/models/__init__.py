"""Flax models: Hara / torchvision 3D ResNets, torchvision 2D ResNets, the audio-visual SkillModel."""
from pisa_jax.models.c3d import C3D
from pisa_jax.models.fusion import ClassifierHead, SkillModel
from pisa_jax.models.layers import feature_dim
from pisa_jax.models.resnet2d import ResNet2D
from pisa_jax.models.resnet3d import ResNet3D

__all__ = ["C3D", "ClassifierHead", "ResNet2D", "ResNet3D", "SkillModel", "feature_dim"]
