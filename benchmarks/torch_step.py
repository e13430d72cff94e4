"""The PyTorch side of `compare_frameworks.py`: one variant's model and its train or eval step
(`pisa_jax.reference.skill_model`, the same network as the JAX step), on random inputs already
on its device. torch is imported only when a variant is built, so the JAX workers never load it.
"""
from __future__ import annotations

import os

from jax_step import random_samples
from pisa_jax.data.pipeline import NORMALIZATION
from pisa_jax.train.config import TrainConfig


class TorchStep:
    """The PyTorch model and its train (or, --step eval, eval) step of one variant, on random
    inputs already on its device."""

    def __init__(self, name: str, args):
        import torch

        from pisa_jax.reference import skill_model
        depths = tuple(int(d) for d in args.depths.split(","))
        config = TrainConfig(depths=depths, batch_size=args.batch_size,
                             base_width=args.base_width, visual_backbone=args.visual_backbone)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        else:
            torch.set_num_threads(os.cpu_count() or 1)
        torch.manual_seed(0)  # every variant starts from the same weights
        model = skill_model.SkillModel(
            visual_backbone=config.visual_backbone, depths=config.depths, num_classes=10,
            hidden=config.hidden, dropout=config.dropout, base_width=config.base_width,
            conv1_t_stride=config.conv1_t_stride,
            clip_shape=(args.clip_length, args.image_size, args.image_size)).to(self.device)
        parts = set(name.split("+"))
        mean, std = NORMALIZATION["c3d" if config.visual_backbone == "c3d" else config.visual_stem]
        options = dict(mean=mean, std=std, compile_model="compile" in parts,
                       autocast_dtype=torch.bfloat16 if "bf16" in parts else None,
                       channels_last="cl3d" in parts)
        training = args.step == "train"
        self.step = (skill_model.make_train_step(model, learning_rate=config.learning_rate,
                                                 weight_decay=config.weight_decay, **options)
                     if training else skill_model.make_eval_step(model, **options))
        host = random_samples(args, args.batch_size)
        self.inputs = (torch.from_numpy(host["video"]).to(self.device),
                       torch.from_numpy(host["spectrogram"]).to(self.device))
        if training:
            self.inputs += (torch.from_numpy(host["label"]).long().to(self.device),)
        self.info = {"version": f"torch {torch.__version__} on {self.device}"}

    def run(self) -> None:
        import torch
        self.step(*self.inputs)
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def device_peak_bytes(self) -> int | None:
        """The most PyTorch's CUDA allocator has handed out so far; None on a CPU."""
        import torch
        return torch.cuda.max_memory_allocated() if self.device.type == "cuda" else None
