"""The project's step compiled for a GPU on a machine without one: XLA's GPU program, read.

XLA compiles for a GPU it is told about (--target, a TargetConfig in protobuf text: default
benchmarks/h100_sxm.txtpb) where JAX's CUDA plugin is installed (`pip install "jax[cuda12]"`)
but no GPU or driver is: "deviceless" compilation. Nothing runs, and XLA cannot time cuDNN's
algorithms without the GPU, so this says what the program is, not how fast it runs:
- the memory XLA plans per device, against the share of the card JAX's allocator takes by
  default (75 %: a step planned past it runs out of memory unless XLA_CLIENT_MEM_FRACTION
  raises it);
- cuDNN's convolutions by kind, rank and layout: channels last (NHWC, NDHWC) or first, which
  --xla_option xla_gpu_force_conv_nhwc=true changes for the 3D ones;
- with --gpus N (N GPUs of one host, the batch split over them), the all-reduces per step;
- every other library call, and a check that none of the project's CPU handlers is in it;
- how long the compile took on this machine's CPUs.

The step is the one benchmarks/train_step.py times (same flags), traced as on a GPU: JAX's
default backend reads "gpu" while it is traced, as in tests/train/test_steps.py.

    python benchmarks/gpu_compile.py --batch_size 32 --precision bfloat16
    python benchmarks/gpu_compile.py --batch_size 32 --precision bfloat16 \\
        --xla_option xla_gpu_force_conv_nhwc=true --hlo_out /tmp/step.hlo.txt
    python benchmarks/gpu_compile.py --batch_size 32 --precision bfloat16 --gpus 8
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import math
import pathlib
import re
import sys
import time
from unittest import mock

import jax
import numpy as np

from jax_step import (DEVICE_SPLIT_BATCHES, add_step_flags, build_step, compiler_options,
                      config_and_spec, planned_bytes, random_samples, step_description)
from pisa_jax import cudnn
from pisa_jax.data.on_device import eval_plan, train_plan
from pisa_jax.data.pipeline import BATCH_AXIS
from pisa_jax.files import atomic_write
from pisa_jax.train import data_parallel

GIB = 2**30
DEFAULT_TARGET = pathlib.Path(__file__).with_name("h100_sxm.txtpb")
JAX_MEMORY_SHARE = 0.75   # of the card, JAX's allocator's default limit
# a cuDNN convolution in the optimised HLO: its window and dim_labels, then its target
CUDNN_CONV = re.compile(r'window=\{size=([\dx]+)[^}]*\}, dim_labels=(\w+)_\w+->\w+, '
                        r'custom_call_target="__cudnn\$conv(\w+)"')
CUSTOM_CALL = re.compile(r'custom_call_target="([^"]+)"')
# an all-reduce of the optimised HLO (async: its -done half, whose shape is the result in every
# jaxlib; the -start half's differs between them): the shape it produces, then the op
ALL_REDUCE = re.compile(r"= (\(*[a-z]\w*\[[^=]*?) all-reduce(?:-done)?\(")
ARRAY = re.compile(r"\b(pred|bf16|[suf]\d+)\[([\d,]*)\]")
CONV_KINDS = {"Forward": "forward", "BiasActivationForward": "forward with bias and activation",
              "BackwardInput": "input gradient", "BackwardFilter": "filter gradient"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_flags(p)
    p.add_argument("--target", default=str(DEFAULT_TARGET),
                   help="the GPU: an XLA TargetConfig in protobuf text (default: an H100 SXM)")
    p.add_argument("--gpus", type=int, default=1,
                   help="GPUs of one host the step is data-parallel over (the batch splits)")
    p.add_argument("--hlo_out", default=None, help="also write the optimised HLO text here")
    return p.parse_args(argv)


def target_config(path: str) -> tuple[str, int | None]:
    """The TargetConfig text of `path` with the cuDNN and CUDA runtime releases of the installed
    CUDA plugin added (XLA picks some fusions by cuDNN release), and the card's memory in bytes."""
    try:
        text = pathlib.Path(path).read_text()
    except OSError as e:
        raise SystemExit(f"error: {path}: cannot read the GPU's target config ({e.strerror})")
    release = cudnn.version()
    if release is None:
        raise SystemExit('error: compiling for a GPU needs JAX\'s CUDA plugin (pip install '
                         '"jax[cuda12]"), not a GPU; this JAX has none')
    from jax._src.lib import cuda_versions  # the plugin's own module (private, jax 0.10-0.12)
    runtime = int(cuda_versions.cuda_runtime_get_version())  # e.g. 12090 for 12.9
    text += (f"\ndnn_version_info {{ major: {release[0]} minor: {release[1]} "
             f"patch: {release[2]} }}\nruntime_version {{ major: {runtime // 1000} "
             f"minor: {runtime % 1000 // 10} }}\n")
    memory = re.search(r"device_memory_size:\s*(\d+)", text)
    return text, int(memory.group(1)) if memory else None


@contextlib.contextmanager
def traced_as_on(devices):
    """While open, the project's steps trace and compile as on `devices` (a GPU topology's):
    JAX's default backend reads "gpu" (what the models ask to pick their GPU form) and
    data_parallel's mesh is made of those devices."""
    def mesh_of(size: int):
        return jax.sharding.Mesh(np.array(list(devices)[:size]), (BATCH_AXIS,))
    with mock.patch.object(jax, "default_backend", lambda: "gpu"), \
            mock.patch.object(data_parallel, "mesh_of", mesh_of):
        yield


def abstract_inputs(args, state, training: bool, devices: int) -> tuple:
    """Shapes and dtypes of what the step takes on `devices` devices, as JaxStep places them:
    the state (or variables) once per device, the batch split over the devices, or with
    --data_on_device the whole split and one step's plan on each."""
    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))
    mapped = jax.tree_util.tree_map(lambda x: spec((devices, *np.shape(x)), x.dtype), state)
    sample = random_samples(args, 1)
    if not args.data_on_device:
        per_device = args.batch_size // devices
        batch = {k: spec((devices, per_device, *v.shape[1:]), v.dtype) for k, v in sample.items()}
        batch["mask"] = spec((devices, per_device), bool)
        return mapped, batch
    size = DEVICE_SPLIT_BATCHES * args.batch_size
    arrays = {k: spec((size, *v.shape[1:]), v.dtype) for k, v in sample.items()}
    if training:
        plan = train_plan(size, args.batch_size, devices, seed=0, epoch=0, flip=True)
        return mapped, arrays, {k: spec(v.shape, v.dtype) for k, v in plan.items()}
    rows, mask = eval_plan(size, args.batch_size, devices)
    return mapped, arrays, spec(rows.shape[1:], rows.dtype), spec(mask.shape[1:], mask.dtype)


def conv_counts(hlo_text: str) -> dict[tuple[str, str, str], int]:
    """cuDNN convolutions of an optimised HLO module: {(rank "2D"/"3D", layout "channels last"
    or "channels first", kind): count}."""
    counts = collections.Counter()
    for window, labels, kind in CUDNN_CONV.findall(hlo_text):
        rank = f"{window.count('x') + 1}D"
        layout = "channels last" if labels.endswith("f") else "channels first"
        counts[rank, layout, CONV_KINDS.get(kind, kind)] += 1
    return dict(counts)


def all_reduces(hlo_text: str) -> tuple[int, int]:
    """(count, bytes) of the all-reduces in an optimised HLO module (data parallelism's gradient
    sums, synced BatchNorm's statistics)."""
    count = total = 0
    for shape in ALL_REDUCE.findall(hlo_text):
        count += 1
        for dtype, dims in ARRAY.findall(shape):
            bits = 8 if dtype == "pred" else int(dtype.lstrip("bsuf"))
            total += math.prod(int(d) for d in dims.split(",") if d) * bits // 8
    return count, total


def other_calls(hlo_text: str) -> dict[str, int]:
    """Library calls other than cuDNN's convolutions, by target."""
    return dict(collections.Counter(t for t in CUSTOM_CALL.findall(hlo_text)
                                    if not t.startswith("__cudnn$conv")))


def report(args, hlo_text: str, planned: int | None, memory: int | None, compile_s: float,
           device_kind: str) -> list[str]:
    """The lines the script prints."""
    lines = [f"{step_description(args)}{', data on device' if args.data_on_device else ''}, "
             f"XLA options {' '.join(args.xla_option) or 'none'}; compiled for {device_kind} "
             f"without it in {compile_s:.1f} s"]
    if planned is None:
        lines.append("memory XLA plans per device: n/a")
    else:
        share = "" if memory is None else (
            f" ({planned / memory:.0%} of the card; JAX's default limit, "
            f"{JAX_MEMORY_SHARE:.0%}: {JAX_MEMORY_SHARE * memory / GIB:.1f} GiB)")
        lines.append(f"memory XLA plans per device: {planned / GIB:.2f} GiB{share}")
    for (rank, layout, kind), n in sorted(conv_counts(hlo_text).items()):
        lines.append(f"cuDNN {rank} convolutions, {layout}, {kind}: {n}")
    if args.gpus > 1:
        count, nbytes = all_reduces(hlo_text)
        lines.append(f"all-reduces per step: {count}, {nbytes / 2**20:.1f} MiB")
    others = other_calls(hlo_text)
    lines.append("other library calls: " + (", ".join(f"{t} {n}" for t, n in sorted(
        others.items())) or "none"))
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.gpus < 1 or args.batch_size % args.gpus:
        raise SystemExit(f"error: --batch_size={args.batch_size} does not split over "
                         f"--gpus={args.gpus}")
    text, memory = target_config(args.target)
    if not jax.config.jax_platforms:  # the step is built on the CPU: a GPU is never asked for
        jax.config.update("jax_platforms", "cpu")
    from jax.experimental import topologies
    try:
        topology = topologies.get_topology_desc(platform="cuda", target_config=text,
                                                topology=f"1x1x{args.gpus}")
    except Exception as e:  # noqa: BLE001 - XLA's own error types; one line, naming the file
        raise SystemExit(f"error: {args.target}: XLA cannot compile for this target "
                         f"({str(e).splitlines()[0]})")
    config, spec = config_and_spec(args)
    options = compiler_options(args)
    step, state = build_step(args, config, spec, options)
    inputs = abstract_inputs(args, state, args.step == "train", len(topology.devices))
    del state
    with traced_as_on(topology.devices):
        t0 = time.perf_counter()
        compiled = step.lower(*inputs).compile()
        compile_s = time.perf_counter() - t0
    hlo_text = compiled.as_text()
    if args.hlo_out:
        atomic_write(args.hlo_out, hlo_text)
    print("\n".join(report(args, hlo_text, planned_bytes(compiled), memory, compile_s,
                           topology.devices[0].device_kind)))
    handlers = sorted(t for t in other_calls(hlo_text) if t.startswith("Pisa"))
    if handlers:
        print(f"error: the GPU's program calls the project's CPU handlers {handlers}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
