"""Benchmark: the project's JAX training step and the same model in PyTorch, side by side.

Both frameworks train the same network at the same shapes in one invocation: the audio-visual
skill model (R3D + R2D or C3D + R2D, three heads), uint8 inputs already on the device and
normalised inside the step, loss = sum of the three cross-entropies, Adam with coupled weight
decay. JAX is `pisa_jax.train.steps.make_train_step` (the training's own step and XLA
options); PyTorch is `pisa_jax.reference.skill_model`.

Every variant runs in a worker process of its own (this script with --worker; the protocol:
variant_worker.py). On a CPU (--schedule interleaved) they are started one after another, then
stepped round-robin, one step each per round, so a slower stretch of a shared machine slows all
of them alike while no variant shares threads, allocator or caches with another. (In one
process, on 2 CPU cores: PyTorch eager ran up to 15 % faster beside JAX than alone, and JAX up
to 40 % slower beside torch.compile.) The table gives medians over the rounds and, for each
variant, the median over rounds of its time divided by JAX's in the same round (> 1: JAX is
faster). Before each step the parent waits --pause_s (default 1 s on a CPU): without it each
variant also ran in the wake of the one before it (2 CPU cores: JAX 1.79 s per step after
torch.compile's step, 1.63 s after a pause). On a GPU (--schedule sequential) each variant runs
alone, its process ended before the next starts: at batch 32 and the paper's shapes one
variant's step needs tens of GiB, and five variants alive at once would not fit one GPU; the
ratio is then of the medians. Each row also gives the variant's peak memory.

Every worker runs on the same allocator, --malloc (default auto: what the project's commands
pick, tcmalloc where installed; see pisa_jax.malloc); --malloc system,auto runs every variant on
each, one table (2 CPU cores, full width: tcmalloc made JAX's step 1.11-1.25x faster, PyTorch
eager's 1.26-1.33x and torch.compile's 1.13-1.21x).

PyTorch variants: eager, compile (torch.compile of forward + loss), each optionally +bf16
(autocast) and +cl3d (channels_last_3d model and input). Default: eager, compile and
eager+cl3d at the JAX run's precision (on the 2-core Xeon, glibc's malloc, eager+cl3d took
1.41 s where eager took 1.57 and compile 1.42); on a GPU also compile+cl3d, with
cudnn.benchmark on. Model FLOP/s are XLA's count
for the JAX step (the same network) divided by each variant's time.

    python benchmarks/compare_frameworks.py --batch_size 2 --clips 2 --spectrogram_size 224 --steps 5
    python benchmarks/compare_frameworks.py --batch_size 32 --precision bfloat16   # on a GPU
    python benchmarks/compare_frameworks.py ... --jax_variants auto:xla_defaults,native
    python benchmarks/compare_frameworks.py ... --torch_variants none \
        --jax_variants native:xla_gpu_force_conv_nhwc=true,stacked,taps   # JAX choices only
    python benchmarks/compare_frameworks.py ... --jax_variants auto:no_onednn  # CPU: XLA's own
    python benchmarks/compare_frameworks.py ... --step eval   # evaluation and prediction's step

With --step eval both sides run the eval step instead: the forward pass in eval mode (running
BatchNorm statistics, no dropout) and each head's probabilities, PyTorch's under
torch.inference_mode; "epoch" is then --epoch_samples samples scored.

The flags of benchmarks/train_step.py apply; --append_rows FILE adds the table's rows (with the
configuration) to FILE, which benchmarks/gpu_suite.sh collects into one table.
"""
from __future__ import annotations

import os

# PyTorch's OpenMP threads spin while idle by default: set before torch (libgomp) loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The workers share the GPU: none may reserve most of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import copy  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from jax_step import JaxStep, add_step_flags, flops_text, median, model_name  # noqa: E402
from pisa_jax import malloc  # noqa: E402
from pisa_jax.errors import UserError  # noqa: E402
from pisa_jax.models.lowering import CONV_LOWERINGS  # noqa: E402
from torch_step import TorchStep  # noqa: E402
from variant_worker import Worker, result_line, serve  # noqa: E402

TORCH_VARIANT_PARTS = ("eager", "compile", "bf16", "cl3d")


def parse_args(argv=None):
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
    p.add_argument("--malloc", default="auto",
                   help="the allocator every worker runs on: auto (what the project's commands "
                        "pick: tcmalloc where installed, see pisa_jax.malloc), system, or a "
                        "library's path; comma-separated: every variant under each, e.g. "
                        "system,auto")
    p.add_argument("--schedule", default="auto", choices=("auto", "interleaved", "sequential"),
                   help="interleaved: every variant alive, stepped round-robin; sequential: one "
                        "variant at a time, each ended before the next starts (what a GPU needs: "
                        "the variants together outgrow its memory at batch 32); auto: "
                        "sequential on a GPU, interleaved on a CPU")
    p.add_argument("--pause_s", type=float, default=None,
                   help="idle seconds before each timed step (default: 1 on a CPU, 0.2 on a GPU)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one variant, see above
    return p.parse_args(argv)


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
    names = [f"eager{suffix}", f"compile{suffix}", f"eager{suffix}+cl3d"]
    if on_gpu:
        names += [f"compile{suffix}+cl3d"]
    return names


def jax_variant_args(args, variant: str):
    """args for one --jax_variants entry: LOWERING[:xla_defaults][:no_onednn][:data_on_device]
    [:NAME=VALUE]... (no_onednn: the worker runs without oneDNN, PISA_JAX_ONEDNN=off, so "auto"
    is XLA's own; data_on_device: each batch gathered, flipped and normalised inside the step
    from a split in device memory, as training does on a GPU)."""
    lowering, *extras = variant.split(":")
    changed = copy.copy(args)
    changed.conv_lowering = lowering or args.conv_lowering
    changed.xla_defaults = "xla_defaults" in extras
    changed.no_onednn = "no_onednn" in extras
    changed.data_on_device = args.data_on_device or "data_on_device" in extras
    changed.xla_option = list(args.xla_option) + [e for e in extras if "=" in e]
    flags = ("xla_defaults", "no_onednn", "data_on_device")
    unknown = [e for e in extras if e not in flags and "=" not in e]
    if unknown or changed.conv_lowering not in CONV_LOWERINGS:
        raise SystemExit(f"error: --jax_variants: cannot read {variant!r}")
    return changed


def jax_names(args) -> list[str]:
    first = f"jax {args.conv_lowering}{':xla_defaults' if args.xla_defaults else ''}"
    extra = [f"jax {v}" for v in filter(None, (v.strip() for v in args.jax_variants.split(",")))]
    for name in extra:
        jax_variant_args(args, name[4:])  # a typo stops here, before any worker starts
    return [first] + extra


def worker(args) -> None:
    """This process is one variant (--worker NAME): build it, then answer the parent."""
    def build():
        if args.worker.startswith("jax "):
            import jax
            first = jax_names(args)[0]
            variant = args if args.worker == first else jax_variant_args(args, args.worker[4:])
            if getattr(variant, "no_onednn", False):
                os.environ["PISA_JAX_ONEDNN"] = "off"  # read when oneDNN is first looked for
            step = JaxStep(variant)
            device = step.devices[0]
            return step, {"compile_s": step.compile_s, "flops": step.flops_per_step(),
                          "planned_bytes": step.planned_bytes, "platform": device.platform,
                          "device_kind": device.device_kind, "devices": len(step.devices),
                          "version": f"jax {jax.__version__}"}
        step = TorchStep(args.worker[len("torch "):], args)
        return step, step.info
    serve(build)


def allocators(choices: str) -> dict[str, str | None]:
    """--malloc: a label ("system" or the library's file name) -> the library to preload."""
    chosen = {}
    for choice in filter(None, (c.strip() for c in choices.split(","))):
        try:
            library = malloc.choose_library({malloc.ENV_VAR: choice})
        except UserError as error:
            raise SystemExit(f"error: --malloc: {error}") from None
        chosen.setdefault("system" if library is None else os.path.basename(library), library)
    return chosen or {"system": None}


def start_worker(name: str, variant: str, library: str | None, allocator: str) -> Worker:
    argv = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--worker", variant]
    started = Worker(name, argv, malloc.preload_environment(library, os.environ), allocator)
    planned = started.info.get("planned_bytes")
    if "compile_s" in started.info:
        print(f"compiled {name} in {started.info['compile_s']:.1f} s"
              + (f" (XLA plans {planned / 2**30:.2f} GiB per device)" if planned else ""),
              flush=True)
    return started


def warm_up(w: Worker) -> None:
    t = w.step()
    print(f"warm-up {w.name}: {'failed' if t is None else f'{t:.1f} s'}", flush=True)


def main():
    args = parse_args()
    if args.worker:
        return worker(args)
    libraries = allocators(args.malloc)

    def label(name, allocator):  # the allocator is named per row only when there are several
        return name if len(libraries) == 1 else f"{name} [{allocator}]"
    variants = [(label(name, a), name, library, a) for a, library in libraries.items()
                for name in jax_names(args)]
    workers = {}
    try:
        first = workers[variants[0][0]] = start_worker(*variants[0])
        if first.error:
            raise SystemExit(f"error: the JAX step did not compile: {first.error}")
        on_gpu = first.info["platform"] == "gpu"
        variants += [(label(f"torch {name}", a), f"torch {name}", library, a)
                     for a, library in libraries.items() for name in torch_variants(args, on_gpu)]
        schedule = args.schedule if args.schedule != "auto" else (
            "sequential" if on_gpu else "interleaved")
        pause_s = args.pause_s if args.pause_s is not None else (0.2 if on_gpu else 1.0)
        times = {name: [] for name, *_ in variants}  # seconds per step (None: failed)
        if schedule == "sequential":  # one variant on the machine at a time
            for i, variant in enumerate(variants):
                w = workers[variant[0]] = first if i == 0 else start_worker(*variant)
                warm_up(w)
                for _ in range(args.steps):
                    time.sleep(pause_s)
                    times[w.name].append(w.step())
                w.close()
                print(result_line(w, times[w.name]), flush=True)  # kept if a later one hangs
        else:
            for variant in variants[1:]:
                workers[variant[0]] = start_worker(*variant)
            for w in workers.values():
                warm_up(w)
            for _ in range(args.steps):
                for name, w in workers.items():
                    time.sleep(pause_s)  # the step before, in another process, has wound down
                    times[name].append(w.step())
    finally:
        for w in workers.values():
            w.close()
    print("seconds per step:")
    for name, ts in times.items():
        print(f"  {name:24s} " + " ".join("-" if t is None else f"{t:.2f}" for t in ts))
    print_table(args, schedule, workers, times, libraries)


def print_table(args, schedule, workers, times, libraries):
    info = next(iter(workers.values())).info
    configuration = (f"{model_name(args)} {args.precision} "
                     f"b{args.batch_size} {args.clips}x{args.clip_length}x{args.image_size}^2 "
                     f"spec {args.spectrogram_size}^2 w{args.base_width}"
                     f"{' eval step' if args.step == 'eval' else ''}")
    versions = ", ".join(dict.fromkeys(w.info["version"] for w in workers.values() if w.info))
    against = " on the same allocator" if len(libraries) > 1 else ""
    how = ("round-robin steps per variant, each variant in its own process; medians, ratio: "
           "median of the rounds' ratios to JAX's" if schedule == "interleaved" else
           "steps per variant, one variant at a time, each in its own process; medians, ratio: "
           "of the medians to JAX's")
    measured = ("the device allocator's" if info["platform"] == "gpu"
                else "the process's resident set")
    print(f"\n{configuration}; {args.steps} {how}{against}; peak memory: {measured}")
    print(f"machine: {info['device_kind']} x{info['devices']} ({info['platform']}), "
          f"{os.cpu_count()} CPU cores, {platform.machine()}; {versions}; malloc: "
          f"{', '.join(libraries)}")

    class Device:  # what flops_text needs of a device
        platform, device_kind = info["platform"], info["device_kind"]
    # the network's FLOPs from the first JAX variant XLA could count (not one whose
    # convolutions run in oneDNN: XLA does not count what its FFI calls compute)
    flops = next((w.info["flops"] for w in workers.values()
                  if w.info and w.info.get("flops")), None)
    # each row against the first JAX row on the same allocator: framework against framework
    references = {}
    for w in workers.values():
        references.setdefault(w.allocator, w)
    rows = []
    for name, w in workers.items():
        done = [t for t in times[name] if t is not None]
        if w.error or not done:
            rows.append(f"| {name} | failed: {w.error} | | | | | |")
            continue
        seconds = median(done)
        samples_s = args.batch_size / seconds
        reference = references[w.allocator]
        if w is reference:
            ratio = "1.00 (JAX)"
        elif schedule == "interleaved":  # a machine that drifts between rounds moves both
            pairs = [t / j for t, j in zip(times[name], times[reference.name]) if t and j]
            ratio = f"{median(pairs):.2f}" if pairs else "n/a"
        else:
            base = [t for t in times[reference.name] if t is not None]
            ratio = f"{seconds / median(base):.2f}" if base else "n/a"
        memory = "n/a" if w.peak_bytes is None else f"{w.peak_bytes / 2**30:.2f} GiB"
        rows.append(f"| {name} | {seconds * 1e3:.1f} | {samples_s:.2f} | "
                    f"{args.epoch_samples / samples_s:.1f} | "
                    f"{flops_text(flops, seconds, Device, args.precision, info['devices'])}"
                    f" | {memory} | {ratio} |")
    print(f"| variant | ms/step | samples/s | s per {args.epoch_samples}-sample epoch | "
          "model FLOP/s | peak memory | its time / JAX's |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.append_rows:
        with open(args.append_rows, "a") as out:
            for row in rows:
                out.write(f"| {configuration} {row}\n")


if __name__ == "__main__":
    main()
