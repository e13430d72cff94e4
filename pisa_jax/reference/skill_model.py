"""The paper's audio-visual skill model in PyTorch, and its training step: what
`pisa_jax.models.SkillModel` and `pisa_jax.train.steps.make_train_step` compute.

- Visual: Hara's 3D ResNet (or C3D's fc6 features) on every clip, averaged over the clips.
- Aural: a 2D ResNet (torchvision layout, one input channel) on the spectrogram, or on one per
  clip, averaged likewise.
- Heads: Dropout -> Linear(hidden) -> ReLU -> Dropout -> Linear(classes) on each modality's
  features, and on the detached concatenation of both (the multimodal head trains only itself).
- Training step: uint8 frames normalised on the device, loss = the sum of the three heads'
  cross-entropies, torch.optim.Adam(weight_decay=...) (coupled L2, as the JAX optimiser).
Inputs keep the JAX pipeline's layout (video uint8 [B, clips, T, H, W, 3]); the step permutes
them to PyTorch's [N, 3, T, H, W], contiguous or channels_last_3d.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pisa_jax.reference.c3d import TorchC3D
from pisa_jax.reference.resnet import ResNet

HEADS = ("visual", "aural", "multimodal")


class ClassifierHead(nn.Module):
    """features [B, D] -> logits [B, num_classes]; dropout before each Linear."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Linear(in_features, hidden)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.out(self.dropout(torch.relu(self.hidden(self.dropout(x)))))


class C3DFeatures(TorchC3D):
    """C3D up to ReLU(fc6): the visual backbone (fc7 and fc8 are not built)."""

    def __init__(self, base_width: int, clip: Sequence[int]):
        super().__init__(10, base_width, tuple(clip))
        del self.fc7, self.fc8
        self.feature_dim = self.fc6.out_features

    def forward(self, x):
        return self.features(x)


class SkillModel(nn.Module):
    """video [B, clips, 3, T, H, W] normalised float, spectrogram [B, H, W] or [B, clips, H, W]
    -> {head: logits [B, num_classes]}."""

    def __init__(self, *, visual_backbone: str = "resnet3d", depths: Sequence[int] = (18, 18),
                 num_classes: int = 10, hidden: int = 128, dropout: float = 0.5,
                 base_width: int = 64, conv1_t_stride: int = 1,
                 clip_shape: Sequence[int] = (16, 112, 112), seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        if visual_backbone == "c3d":
            self.visual_backbone = C3DFeatures(base_width, clip_shape)
        else:
            self.visual_backbone = ResNet(depths[0], None, conv1_t_stride=conv1_t_stride,
                                          base_width=base_width)
        self.aural_backbone = ResNet(depths[1], None, ndim=2, in_channels=1,
                                     base_width=base_width)
        visual_dim = self.visual_backbone.feature_dim
        aural_dim = self.aural_backbone.feature_dim
        self.visual_head = ClassifierHead(visual_dim, hidden, num_classes, dropout)
        self.aural_head = ClassifierHead(aural_dim, hidden, num_classes, dropout)
        self.multimodal_head = ClassifierHead(visual_dim + aural_dim, hidden, num_classes, dropout)

    def forward(self, video, spectrogram):
        batch, clips = video.shape[:2]
        visual = self.visual_backbone(video.flatten(0, 1)).unflatten(0, (batch, clips)).mean(1)
        images = spectrogram.unsqueeze(-3)                      # [B, (clips,) 1, H, W]
        if images.ndim == 4:
            images = images.unsqueeze(1)
        aural = self.aural_backbone(images.flatten(0, 1)).unflatten(0, (batch, -1)).mean(1)
        fused = torch.cat([visual, aural], -1).detach()
        return {"visual": self.visual_head(visual), "aural": self.aural_head(aural),
                "multimodal": self.multimodal_head(fused)}


def prepare_inputs(video, spectrogram, mean, std, *, channels_last: bool = False):
    """uint8 video [B, clips, T, H, W, 3] -> (x / 255 - mean) / std as [B, clips, 3, T, H, W]
    (channels_last_3d strides per clip if asked); spectrogram uint8 -> [0, 1] float."""
    mean = torch.tensor(mean, device=video.device).view(3, 1, 1, 1)
    std = torch.tensor(std, device=video.device).view(3, 1, 1, 1)
    x = video.permute(0, 1, 5, 2, 3, 4).float().div(255.0)     # [B, clips, 3, T, H, W]
    x = (x - mean) / std
    if channels_last:
        b, c = x.shape[:2]
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last_3d).unflatten(0, (b, c))
    scale = 255.0 if spectrogram.dtype == torch.uint8 else 1.0
    return x, spectrogram.float() / scale


def loss_of(model, video, spectrogram, labels, mean, std, *, channels_last: bool = False):
    """The sum of the three heads' mean cross-entropies (the paper's loss)."""
    x, spec = prepare_inputs(video, spectrogram, mean, std, channels_last=channels_last)
    logits = model(x, spec)
    return sum(F.cross_entropy(logits[h].float(), labels) for h in HEADS)


def make_train_step(model: SkillModel, *, mean, std, learning_rate: float = 1e-4,
                    weight_decay: float = 0.1, compile_model: bool = False,
                    autocast_dtype: torch.dtype | None = None, channels_last: bool = False):
    """step(video uint8, spectrogram, labels) -> loss (a 0-d tensor, not synchronised).

    compile_model: torch.compile the forward pass and loss (autograd runs the compiled
    backward); autocast_dtype: e.g. torch.bfloat16 under torch.autocast on the model's device;
    channels_last: the model and its video input in channels_last_3d."""
    model.train()
    if channels_last:
        model.visual_backbone.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    device_type = next(model.parameters()).device.type

    def forward(video, spectrogram, labels):
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            return loss_of(model, video, spectrogram, labels, mean, std,
                           channels_last=channels_last)

    forward_fn = torch.compile(forward) if compile_model else forward

    def step(video, spectrogram, labels):
        optimizer.zero_grad(set_to_none=True)
        loss = forward_fn(video, spectrogram, labels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def make_eval_step(model: SkillModel, *, mean, std, compile_model: bool = False,
                   autocast_dtype: torch.dtype | None = None, channels_last: bool = False):
    """step(video uint8, spectrogram) -> {head: class probabilities}: the model in eval mode
    (running BatchNorm statistics, no dropout) without autograd, as the project's eval step
    computes them; the options as in `make_train_step`."""
    model.eval()
    if channels_last:
        model.visual_backbone.to(memory_format=torch.channels_last_3d)
    device_type = next(model.parameters()).device.type

    def forward(video, spectrogram):
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            x, spec = prepare_inputs(video, spectrogram, mean, std, channels_last=channels_last)
            logits = model(x, spec)
        return {h: torch.softmax(logits[h].float(), -1) for h in HEADS}

    forward_fn = torch.compile(forward) if compile_model else forward

    def step(video, spectrogram):
        with torch.inference_mode():
            return forward_fn(video, spectrogram)

    return step

