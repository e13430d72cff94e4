"""Flax models: Hara / torchvision 3D ResNets, C3D, torchvision 2D ResNets, the audio-visual
SkillModel."""
from pisa_jax.models.c3d import C3D
from pisa_jax.models.fusion import MODALITIES, VISUAL_BACKBONES, ClassifierHead, SkillModel
from pisa_jax.models.layers import STAGE_LAYOUTS, feature_dim
from pisa_jax.models.resnet2d import DEPTHS_2D, ResNet2D
from pisa_jax.models.resnet3d import STEMS, ResNet3D

# The depths each backbone is built in: what the training config accepts.
VISUAL_DEPTHS = tuple(STAGE_LAYOUTS)     # Hara's 3D ResNets: 10, 18, 34, 50, 101, 152, 200
AURAL_DEPTHS = DEPTHS_2D                 # torchvision's 2D ResNets: 18, 34, 50, 101, 152

__all__ = ["AURAL_DEPTHS", "C3D", "ClassifierHead", "MODALITIES", "ResNet2D", "ResNet3D", "STEMS",
           "SkillModel", "VISUAL_BACKBONES", "VISUAL_DEPTHS", "feature_dim"]
