"""Benchmark: the project's JAX training step and the same model in PyTorch, side by side.

Both frameworks train the same network at the same shapes in one process: the audio-visual
skill model (R3D + R2D or C3D + R2D, three heads), uint8 inputs already on the device and
normalised inside the step, loss = sum of the three cross-entropies, Adam with coupled weight
decay. JAX is `pisa_jax.train.steps.make_train_step` (the training's own step and XLA
options); PyTorch is `pisa_jax.reference.skill_model`. The variants run interleaved, one step
each per round, so a slower stretch of a shared machine slows all of them; the table gives
medians over the rounds and each PyTorch variant's time divided by JAX's (> 1: JAX is faster).

PyTorch variants: eager, compile (torch.compile of forward + loss), each optionally +bf16
(autocast) and +cl3d (channels_last_3d model and input). Default: eager and compile at the
JAX run's precision; on a GPU also +cl3d, with cudnn.benchmark on. Model FLOP/s are XLA's count
for the JAX step (the same network) divided by each variant's time.

    python benchmarks/compare_frameworks.py --batch_size 2 --clips 2 --spectrogram_size 224 --steps 5
    python benchmarks/compare_frameworks.py --batch_size 32 --precision bfloat16   # on a GPU
    python benchmarks/compare_frameworks.py ... --jax_variants auto:xla_defaults,native
    python benchmarks/compare_frameworks.py ... --torch_variants none \
        --jax_variants native:xla_gpu_force_conv_nhwc=true,stacked,taps   # JAX choices only

The flags of benchmarks/train_step.py apply; --append_rows FILE adds the table's rows (with the
configuration) to FILE, which benchmarks/gpu_suite.sh collects into one table.
"""
from __future__ import annotations

import os

# PyTorch's OpenMP threads spin while idle by default; in one process with XLA's thread pool
# both then starve each other. Set before torch (libgomp) loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# PyTorch shares the GPU with JAX here: JAX must not reserve most of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import copy  # noqa: E402
import platform  # noqa: E402

import jax  # noqa: E402

from jax_step import (JaxStep, add_step_flags, flops_text, median, random_samples,  # noqa: E402
                      time_interleaved)
from pisa_jax.data.pipeline import NORMALIZATION  # noqa: E402
from pisa_jax.models.lowering import CONV_LOWERINGS  # noqa: E402

TORCH_VARIANT_PARTS = ("eager", "compile", "bf16", "cl3d")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_flags(p)
    p.add_argument("--torch_variants", default="auto",
                   help="comma-separated, e.g. eager,compile,eager+bf16,compile+bf16+cl3d; "
                        "auto: see above; none: JAX only")
    p.add_argument("--jax_variants", default="",
                   help="extra JAX steps, comma-separated LOWERING[:xla_defaults][:NAME=VALUE]"
                        "..., e.g. auto:xla_defaults,native:xla_gpu_force_conv_nhwc=true (the "
                        "first row is always --conv_lowering with the project's options)")
    p.add_argument("--append_rows", default=None, metavar="FILE",
                   help="append the table rows, prefixed with the configuration, to FILE")
    return p.parse_args()


def torch_variants(args, on_gpu: bool) -> list[str]:
    if args.torch_variants == "none":
        return []
    if args.torch_variants != "auto":
        names = [v.strip() for v in args.torch_variants.split(",") if v.strip()]
        for name in names:
            parts = name.split("+")
            if parts[0] not in ("eager", "compile") or not set(parts[1:]) <= {"bf16", "cl3d"}:
                raise SystemExit(f"error: --torch_variants: {name!r} is not eager|compile "
                                 f"followed by +bf16 / +cl3d")
        return names
    suffix = "+bf16" if args.precision == "bfloat16" else ""
    names = [f"eager{suffix}", f"compile{suffix}"]
    if on_gpu:
        names += [f"eager{suffix}+cl3d", f"compile{suffix}+cl3d"]
    return names


class TorchStep:
    """The PyTorch model and step of one variant, on inputs already on its device."""

    def __init__(self, name: str, args, config, base_model, inputs, device):
        import torch

        from pisa_jax.reference import skill_model
        parts = set(name.split("+"))
        mean, std = NORMALIZATION["c3d" if config.visual_backbone == "c3d" else config.visual_stem]
        self.model = copy.deepcopy(base_model).to(device)  # every variant starts equal
        self.step = skill_model.make_train_step(
            self.model, mean=mean, std=std, learning_rate=config.learning_rate,
            weight_decay=config.weight_decay, compile_model="compile" in parts,
            autocast_dtype=torch.bfloat16 if "bf16" in parts else None,
            channels_last="cl3d" in parts)
        self.inputs, self.device = inputs, device

    def run(self) -> None:
        import torch
        self.step(*self.inputs)
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def build_torch(args, config, names):
    import torch

    from pisa_jax.reference import skill_model
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(os.cpu_count() or 1)
    base = skill_model.SkillModel(
        visual_backbone=config.visual_backbone, depths=config.depths, num_classes=10,
        hidden=config.hidden, dropout=config.dropout, base_width=config.base_width,
        conv1_t_stride=config.conv1_t_stride,
        clip_shape=(args.clip_length, args.image_size, args.image_size))
    host = random_samples(args, args.batch_size)
    inputs = (torch.from_numpy(host["video"]).to(device),
              torch.from_numpy(host["spectrogram"]).to(device),
              torch.from_numpy(host["label"]).long().to(device))
    runners = {}
    for name in names:
        runners[f"torch {name}"] = TorchStep(name, args, config, base, inputs, device)
    return runners, torch.__version__, device


def jax_variant_args(args, variant: str):
    """args for one --jax_variants entry: LOWERING[:xla_defaults][:NAME=VALUE]..."""
    lowering, *extras = variant.split(":")
    changed = copy.copy(args)
    changed.conv_lowering = lowering or args.conv_lowering
    changed.xla_defaults = "xla_defaults" in extras
    changed.xla_option = list(args.xla_option) + [e for e in extras if "=" in e]
    unknown = [e for e in extras if e != "xla_defaults" and "=" not in e]
    if unknown or changed.conv_lowering not in CONV_LOWERINGS:
        raise SystemExit(f"error: --jax_variants: cannot read {variant!r}")
    return changed


def build_jax(args) -> dict:
    """name -> JaxStep, or the one-line error that kept it from compiling (e.g. out of
    memory), so the other variants still run."""
    first = f"jax {args.conv_lowering}{':xla_defaults' if args.xla_defaults else ''}"
    variants = [(first, args)] + [
        (f"jax {v}", jax_variant_args(args, v))
        for v in filter(None, (v.strip() for v in args.jax_variants.split(",")))]
    steps = {}
    for name, variant_args in variants:
        try:
            steps[name] = JaxStep(variant_args)
            print(f"compiled {name} in {steps[name].compile_s:.1f} s", flush=True)
        except Exception as error:  # noqa: BLE001 - reported in the table
            steps[name] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:120]}"
            print(f"{name} failed: {steps[name]}", flush=True)
    return steps


def guarded(name, run):
    """A runner that records its first failure (e.g. torch.compile without a compiler) and
    then does nothing, so one broken variant does not end the comparison."""
    state = {"error": None}

    def call():
        if state["error"] is None:
            try:
                run()
            except Exception as error:  # noqa: BLE001 - reported in the table
                state["error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:120]}"
                print(f"{name} failed: {state['error']}", flush=True)
    return call, state


def main():
    args = parse_args()
    built = build_jax(args)
    first = next(iter(built))
    jax_steps = {name: step for name, step in built.items() if not isinstance(step, str)}
    if first not in jax_steps:
        raise SystemExit(f"error: the JAX step did not compile: {built[first]}")
    main_step = jax_steps[first]
    device = main_step.devices[0]
    names = torch_variants(args, device.platform == "gpu")
    torch_runners, torch_version, torch_device = ({}, None, None)
    if names:
        torch_runners, torch_version, torch_device = build_torch(args, main_step.config, names)

    runners, states = {}, {}
    for name, step in {**jax_steps, **torch_runners}.items():
        runners[name], states[name] = guarded(name, step.run)
    times = time_interleaved(runners, args.steps, log=lambda m: print(m, flush=True))

    flops = main_step.flops_per_step()
    jax_time = median(times[first])
    visual = "c3d" if args.visual_backbone == "c3d" else f"r{main_step.config.depths[0]}"
    configuration = (f"{visual}+r{main_step.config.depths[1]} {args.precision} "
                     f"b{args.batch_size} {args.clips}x{args.clip_length}x{args.image_size}^2 "
                     f"spec {args.spectrogram_size}^2 w{args.base_width}")
    print(f"\n{configuration}; {args.steps} interleaved steps per variant, medians")
    print(f"machine: {device.device_kind} x{len(main_step.devices)} ({device.platform}), "
          f"{os.cpu_count()} CPU cores, {platform.machine()}; jax {jax.__version__}"
          + (f", torch {torch_version} on {torch_device}" if torch_version else ""))
    header = ("| variant | ms/step | samples/s | s per 516-sample epoch | model FLOP/s | "
              "its time / JAX's |")
    rows = [f"| {name} | failed: {error} | | | | |" for name, error in built.items()
            if isinstance(error, str)]
    for name, values in times.items():
        if states[name]["error"]:
            rows.append(f"| {name} | failed: {states[name]['error']} | | | | |")
            continue
        seconds = median(values)
        samples_s = args.batch_size / seconds
        ratio = "1.00 (JAX)" if name == first else f"{seconds / jax_time:.2f}"
        rows.append(f"| {name} | {seconds * 1e3:.1f} | {samples_s:.2f} | "
                    f"{args.epoch_samples / samples_s:.1f} | "
                    f"{flops_text(flops, seconds, device, args.precision, len(main_step.devices))}"
                    f" | {ratio} |")
    print(header.replace("516", str(args.epoch_samples)))
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.append_rows:
        with open(args.append_rows, "a") as out:
            for row in rows:
                out.write(f"| {configuration} {row}\n")


if __name__ == "__main__":
    main()
