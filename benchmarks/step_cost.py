"""What a step costs before it runs: XLA's model FLOPs and planned memory, PyTorch's activations.

Compiles the project's step (the flags of train_step.py; nothing is run) and prints XLA's count
of its FLOPs (`compiled.cost_analysis()`), what a 516-sample epoch would take at a device's
peak, and the memory XLA's buffer assignment plans per device (`compiled.memory_analysis()`).
With --torch it also counts the bytes PyTorch's autograd saves for the backward pass of the
same model (`pisa_jax.reference.skill_model`) on the meta device, where nothing is computed or
allocated: a view of a saved tensor counts again, so that is an upper bound.

On a CPU, pass --conv_lowering native and PISA_JAX_ONEDNN=off for the GPU's program: XLA does
not count what oneDNN's calls compute. A CPU's plan is the CPU's program's, not a GPU's: in bf16
it also holds float32 copies of the convolutions' operands, and its max-pool gradient is
expanded into full-size index arrays. An H100's plan: benchmarks/gpu_compile.py.

    PISA_JAX_ONEDNN=off python benchmarks/step_cost.py --batch_size 32 --precision bfloat16 \\
        --conv_lowering native --torch
"""
from __future__ import annotations

import argparse

from jax_step import JaxStep, add_step_flags, step_description

GIB = 2**30


def torch_saved_bytes(args) -> int:
    """Bytes PyTorch's autograd saves in the float32 train step's forward pass (meta device)."""
    import torch

    from pisa_jax.data.pipeline import NORMALIZATION
    from pisa_jax.reference import skill_model
    from pisa_jax.train.config import TrainConfig
    depths = tuple(int(d) for d in args.depths.split(","))
    config = TrainConfig(depths=depths, base_width=args.base_width,
                         visual_backbone=args.visual_backbone)
    with torch.device("meta"):
        model = skill_model.SkillModel(
            visual_backbone=config.visual_backbone, depths=config.depths, num_classes=10,
            hidden=config.hidden, dropout=config.dropout, base_width=config.base_width,
            conv1_t_stride=config.conv1_t_stride,
            clip_shape=(args.clip_length, args.image_size, args.image_size))
        video = torch.zeros(args.batch_size, args.clips, args.clip_length, args.image_size,
                            args.image_size, 3, dtype=torch.uint8)
        spectrogram = torch.zeros(args.batch_size, args.spectrogram_size, args.spectrogram_size,
                                  dtype=torch.uint8)
        labels = torch.zeros(args.batch_size, dtype=torch.long)
    saved = [0]

    def pack(tensor):
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor
    mean, std = NORMALIZATION["c3d" if config.visual_backbone == "c3d" else config.visual_stem]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        skill_model.loss_of(model, video, spectrogram, labels, mean, std)
    return saved[0]


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_flags(p)
    p.add_argument("--peak_tflops", type=float, default=989.0,
                   help="the device's peak for the epoch estimate (default: an H100 SXM's dense "
                        "bf16)")
    p.add_argument("--torch", action="store_true",
                   help="also PyTorch's saved activations (float32 train step)")
    args = p.parse_args()
    step = JaxStep(args)
    flops, planned = step.flops_per_step(), step.planned_bytes
    print(f"{step_description(args)}, on {step.devices[0].platform}")
    if flops is None:
        print("model FLOPs: n/a (oneDNN runs the convolutions: use --conv_lowering native and "
              "PISA_JAX_ONEDNN=off)")
    else:
        epoch_s = args.epoch_samples / args.batch_size * flops / (args.peak_tflops * 1e12)
        print(f"model FLOPs per step: {flops / 1e12:.4g} TFLOP; a {args.epoch_samples}-sample "
              f"epoch at {args.peak_tflops:g} TFLOP/s: {epoch_s:.3f} s")
    print("memory XLA plans per device: " +
          ("n/a" if planned is None else f"{planned / GIB:.4g} GiB"))
    if args.torch:
        print(f"PyTorch autograd's saved tensors (float32, upper bound): "
              f"{torch_saved_bytes(args) / GIB:.4g} GiB")


if __name__ == "__main__":
    main()
