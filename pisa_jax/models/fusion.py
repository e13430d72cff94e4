"""The audio-visual skill model (Zhao, Wang, Cai 2023): two backbones, three heads.

- Visual: the 3D ResNet (or C3D, the backbone of Parmar's baseline: `visual_backbone="c3d"`)
  runs on every clip of a sample; the clip features are averaged (the paper's Algorithm 3).
  C3D's fc6 input size depends on the clip shape, which it takes from the video it is given.
- Aural: the 2D ResNet runs on one spectrogram per sample (the paper) or one per clip (Parmar's
  layout), whose features are averaged likewise.
- Heads: visual on f_v, aural on f_a, multimodal on concat(f_v, f_a) (Algorithm 2), each
  Dense(hidden) -> ReLU -> Dense(num_classes). "Dropout p = 0.5 on the linear layers" is read as
  dropout on the input of each of the two Dense layers (features and hidden activations).
- The multimodal head sees `stop_gradient(concat(f_v, f_a))`, so its loss trains only itself
  ("to avoid cross-modal contamination"); the backbones learn from the unimodal losses.
`modalities=("visual",)` or `("aural",)` builds the unimodal models (Figure 6): one backbone, one
head, no multimodal head.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pisa_jax.models.c3d import C3D
from pisa_jax.models.custom_gradients import torch_dense
from pisa_jax.models.resnet2d import ResNet2D
from pisa_jax.models.resnet3d import ResNet3D

MODALITIES = ("visual", "aural")
VISUAL_BACKBONES = ("resnet3d", "c3d")


class ClassifierHead(nn.Module):
    """features [B, D] -> logits [B, num_classes] (float32), dropout before each Dense."""
    hidden: int
    num_classes: int
    dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = nn.Dropout(self.dropout, deterministic=not train)(features)
        x = torch_dense(self.hidden, dtype=self.dtype, name="hidden")(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(x))
        x = torch_dense(self.num_classes, dtype=self.dtype, name="out")(x)
        return x.astype(jnp.float32)


class SkillModel(nn.Module):
    """See the module docstring. Submodules: visual_backbone, aural_backbone, visual_head,
    aural_head, multimodal_head (those the modalities need). Dropout uses the "dropout" rng.
    visual_depth, visual_stem and conv1_t_stride describe the 3D ResNet: C3D has none of them."""
    visual_backbone: str = "resnet3d"
    visual_depth: int = 18
    aural_depth: int = 18
    num_classes: int = 10
    modalities: tuple[str, ...] = MODALITIES
    dropout: float = 0.5
    hidden: int = 128
    visual_stem: str = "hara"
    conv1_t_stride: int = 1
    base_width: int = 64
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    conv_lowering: str = "auto"  # how the convs run (models.lowering): "onednn" reaches both nets

    def __post_init__(self):
        mods = tuple(self.modalities)
        if not mods or len(set(mods)) != len(mods) or not set(mods) <= set(MODALITIES):
            raise ValueError(f"SkillModel: modalities {self.modalities!r} must be a non-empty "
                             f"subset of {MODALITIES} without repeats")
        if self.visual_backbone not in VISUAL_BACKBONES:
            raise ValueError(f"SkillModel: visual_backbone {self.visual_backbone!r} not supported; "
                             f"choose one of {VISUAL_BACKBONES}")
        super().__post_init__()

    @nn.compact
    def __call__(self, video: jnp.ndarray | None, spectrogram: jnp.ndarray | None,
                 train: bool) -> dict[str, dict[str, jnp.ndarray]]:
        """video: [B, clips, T, H, W, 3] normalised float; spectrogram: [B, H, W] or
        [B, clips, H, W] in [0, 1]. Returns {"logits": {head: [B, num_classes]},
        "features": {modality: [B, D]}} with float32 values."""
        features = {}
        if "visual" in self.modalities:
            if video is None or video.ndim != 6:
                raise ValueError("SkillModel: video must be [B, clips, T, H, W, 3], got "
                                 f"{None if video is None else video.shape}")
            if self.visual_backbone == "c3d":  # no BatchNorm; dropout only after fc6/fc7
                backbone = C3D(None, base_width=self.base_width, clip_shape=tuple(video.shape[2:5]),
                               dtype=self.dtype, conv_lowering=self.conv_lowering,
                               name="visual_backbone")
            else:
                backbone = ResNet3D(self.visual_depth, None, stem=self.visual_stem,
                                    conv1_t_stride=self.conv1_t_stride,
                                    base_width=self.base_width, dtype=self.dtype,
                                    bn_axis_name=self.bn_axis_name,
                                    conv_lowering=self.conv_lowering, name="visual_backbone")
            features["visual"] = _mean_over_clips(backbone, video, train)
        if "aural" in self.modalities:
            if spectrogram is None or spectrogram.ndim not in (3, 4):
                raise ValueError("SkillModel: spectrogram must be [B, H, W] or [B, clips, H, W], "
                                 f"got {None if spectrogram is None else spectrogram.shape}")
            backbone = ResNet2D(self.aural_depth, None, in_channels=1, base_width=self.base_width,
                                dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                                conv_lowering=self.conv_lowering, name="aural_backbone")
            images = spectrogram[..., None]  # the channel axis: [B, (clips,) H, W, 1]
            if images.ndim == 4:
                images = images[:, None]  # one "clip" per sample: [B, 1, H, W, 1]
            features["aural"] = _mean_over_clips(backbone, images, train)

        def head(name):
            return ClassifierHead(self.hidden, self.num_classes, self.dropout, dtype=self.dtype,
                                  name=f"{name}_head")

        logits = {name: head(name)(f, train) for name, f in features.items()}
        if len(features) == 2:
            fused = jax.lax.stop_gradient(
                jnp.concatenate([features["visual"], features["aural"]], axis=-1))  # [B, Dv+Da]
            logits["multimodal"] = head("multimodal")(fused, train)
        return {"logits": logits, "features": features}


def _mean_over_clips(backbone: nn.Module, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """x: [B, clips, ...] -> backbone on all B*clips inputs at once -> mean over clips [B, D]."""
    batch, clips = x.shape[:2]
    per_clip = backbone(x.reshape((batch * clips,) + x.shape[2:]), train)  # [B*clips, D]
    return per_clip.reshape(batch, clips, -1).mean(axis=1)
