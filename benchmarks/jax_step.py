"""What the step benchmarks share: their flags, the project's training step on random
device-resident inputs, interleaved timing, and model FLOP/s from XLA's cost analysis.

Imported by train_step.py and compare_frameworks.py (run them as scripts from the repository
root). Nothing here imports tensorflow_datasets, librosa or data_builders: the GPU machine that
runs benchmarks/gpu_suite.sh has only JAX, flax, optax, orbax and PyTorch.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import numpy as np

from pisa_jax.data.on_device import DeviceSplit
from pisa_jax.data.pipeline import BATCH_AXIS, prefetch_to_device
from pisa_jax.models import VISUAL_BACKBONES
from pisa_jax.models.lowering import CONV_LOWERINGS
from pisa_jax.native import onednn
from pisa_jax.train.config import PRECISIONS, TrainConfig
from pisa_jax.train.distributed import replicate
from pisa_jax.train.state import InputSpec, create_run
from pisa_jax.train.steps import input_normalization, make_eval_step, make_train_step
from pisa_jax.xla_options import accepted_options, cpu_compiler_options

# Dense peak TFLOP/s per GPU (first matching name wins). float32: TF32 tensor cores, which XLA
# and cuDNN use for float32 convolutions by default on these GPUs.
PEAK_TFLOPS = (
    ("H100 PCIe", {"bfloat16": 756.0, "float32": 378.0}),
    ("H100 NVL", {"bfloat16": 835.0, "float32": 418.0}),
    ("H100", {"bfloat16": 989.0, "float32": 495.0}),
    ("H200", {"bfloat16": 989.0, "float32": 495.0}),
    ("A100", {"bfloat16": 312.0, "float32": 156.0}),
)


def add_step_flags(p: argparse.ArgumentParser) -> None:
    """The model, shape and compile flags of every step benchmark."""
    p.add_argument("--depths", default="18,18", help="visual,aural depth")
    p.add_argument("--visual_backbone", default="resnet3d", choices=VISUAL_BACKBONES,
                   help="c3d: Parmar's baseline (the visual depth is then unused)")
    p.add_argument("--batch_size", type=int, default=4, help="global batch in samples")
    p.add_argument("--precision", default="float32", choices=PRECISIONS)
    p.add_argument("--clips", type=int, default=10, help="clips per sample")
    p.add_argument("--clip_length", type=int, default=16, help="frames per clip")
    p.add_argument("--image_size", type=int, default=112)
    p.add_argument("--spectrogram_size", type=int, default=224)
    p.add_argument("--base_width", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed steps (after 2 warm-up steps)")
    p.add_argument("--epoch_samples", type=int, default=516, help="samples per epoch, for s/epoch")
    p.add_argument("--conv_lowering", default="auto", choices=CONV_LOWERINGS,
                   help="how the visual backbone's 3D convolutions run")
    p.add_argument("--xla_defaults", action="store_true",
                   help="compile without the project's XLA options (pisa_jax.xla_options)")
    p.add_argument("--xla_option", action="append", default=[], metavar="NAME=VALUE",
                   help="an extra XLA compiler option, e.g. xla_gpu_force_conv_nhwc=true "
                        "(repeatable; dropped with a note if this jaxlib does not know it)")
    p.add_argument("--step", default="train", choices=("train", "eval"),
                   help="the training step, or the eval step that evaluation and prediction run "
                        "(forward pass in eval mode and each head's probabilities)")
    p.add_argument("--data_on_device", action="store_true",
                   help="gather each batch inside the step from a random split held in device "
                        "memory (the training's data_on_device path) instead of one batch")


def parse_value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        return text


def compiler_options(args) -> dict:
    """The project's options (unless --xla_defaults) plus every --xla_option this jaxlib
    accepts; prints the ones it drops."""
    options = {} if args.xla_defaults else dict(cpu_compiler_options())
    for item in args.xla_option:
        name, _, value = item.partition("=")
        value = parse_value(value)
        if accepted_options({name: value}):
            options[name] = value
        else:
            print(f"note: XLA option {name}={value} unknown to this jaxlib: left out")
    return options


def model_name(args) -> str:
    """'r18+r18', 'c3d+r18': the visual and aural backbones of the step flags."""
    visual_depth, aural_depth = args.depths.split(",")
    visual = "c3d" if args.visual_backbone == "c3d" else f"r{visual_depth}"
    return f"{visual}+r{aural_depth}"


def step_description(args) -> str:
    """The step and shapes the flags give, as the scripts' first lines name them."""
    return (f"{model_name(args)} {args.step} step, {args.precision}, batch {args.batch_size} x "
            f"{args.clips} clips of {args.clip_length}x{args.image_size}^2, spectrogram "
            f"{args.spectrogram_size}^2, width {args.base_width}, lowering {args.conv_lowering}")


def config_and_spec(args) -> tuple[TrainConfig, InputSpec]:
    depths = tuple(int(d) for d in args.depths.split(","))
    config = TrainConfig(depths=depths, precision=args.precision, batch_size=args.batch_size,
                         base_width=args.base_width, visual_backbone=args.visual_backbone)
    spec = InputSpec(args.clips, args.clip_length, args.image_size,
                     (args.spectrogram_size, args.spectrogram_size), num_classes=10)
    return config, spec


DEVICE_SPLIT_BATCHES = 4  # --data_on_device: batches in the split the step gathers from


def random_samples(args, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`count` random samples with the dataset's layout (uint8 video and spectrogram)."""
    rng = np.random.default_rng(seed)
    size, spec = args.image_size, args.spectrogram_size
    return {"video": rng.integers(0, 256, (count, args.clips, args.clip_length, size, size, 3),
                                  dtype=np.uint8),
            "spectrogram": rng.integers(0, 256, (count, spec, spec), dtype=np.uint8),
            "label": rng.integers(0, 10, count).astype(np.int32),
            "video_id": np.arange(count, dtype=np.int32)}


def build_step(args, config: TrainConfig, spec: InputSpec, options: dict) -> tuple:
    """(step, state): the project's train step (create_run's model and optimiser,
    make_train_step) and its initial TrainState, or with --step eval the eval step
    (make_eval_step: the eval model, what evaluation and prediction run) and the state's
    variables; the state is on the host's default device, not yet replicated."""
    run = create_run(config, spec)
    state = run.initial_state()
    if args.step == "train":
        return make_train_step(run.model.clone(conv_lowering=args.conv_lowering), run.tx, config,
                               data_on_device=args.data_on_device,
                               compiler_options=options), state
    return make_eval_step(run.eval_model.clone(conv_lowering=args.conv_lowering), config,
                          data_on_device=args.data_on_device,
                          compiler_options=options), state.variables


class _Rows:
    """A dict of [n, ...] arrays as an indexable split (for DeviceSplit.upload)."""

    def __init__(self, arrays):
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays["label"])

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.arrays.items()}


class JaxStep:
    """The project's train step (create_run's model and optimiser, make_train_step), or with
    --step eval its eval step (make_eval_step), compiled once with `compiled.cost_analysis()` at
    hand, on inputs already on the devices. `run()` takes one step and waits for it."""

    def __init__(self, args):
        self.config, self.spec = config_and_spec(args)
        self.devices = jax.local_devices()
        if args.batch_size % len(self.devices):
            raise SystemExit(f"error: batch {args.batch_size} does not split over "
                             f"{len(self.devices)} devices")
        self.options = compiler_options(args)
        self.training = args.step == "train"
        step, state = build_step(args, self.config, self.spec, self.options)
        # as training does: only the devices' copy stays alive
        self.state = replicate(state, donated=True) if self.training else replicate(state)
        del state
        if args.data_on_device:  # a split of a few batches, gathered from inside the step
            mesh = jax.sharding.Mesh(np.array(self.devices), (BATCH_AXIS,))
            split = DeviceSplit.upload(_Rows(random_samples(args, DEVICE_SPLIT_BATCHES
                                                            * args.batch_size)), mesh)
            self.inputs = ((split.arrays, split.train_plan(
                global_batch_size=args.batch_size, seed=0, epoch=0, flip=True)) if self.training
                else (split.arrays, *split.eval_inputs(args.batch_size)[0]))
        else:
            batch = random_samples(args, args.batch_size)
            batch["mask"] = np.ones(args.batch_size, bool)
            batch = {k: v.reshape(len(self.devices), -1, *v.shape[1:]) for k, v in batch.items()}
            self.inputs = (next(prefetch_to_device(iter([batch]))),)
        t0 = time.perf_counter()
        self.compiled = step.lower(self.state, *self.inputs).compile()
        self.compile_s = time.perf_counter() - t0
        self.metrics = None

    @property
    def planned_bytes(self) -> int | None:
        return planned_bytes(self.compiled)

    def device_peak_bytes(self) -> int | None:
        """The most any device's allocator has held so far; None on a CPU (no such count)."""
        peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in self.devices]
        return None if None in peaks else max(peaks)

    def run(self) -> None:
        if self.training:
            self.state, self.metrics = self.compiled(self.state, *self.inputs)
        else:
            self.metrics = self.compiled(self.state, *self.inputs)
        jax.block_until_ready(self.metrics)

    def flops_per_step(self) -> float | None:
        """Model FLOPs of one step on all devices (XLA's count of the per-device program); None
        where oneDNN runs the convolutions (XLA does not count what its FFI calls compute)."""
        if onednn.TARGETS["forward"] in self.compiled.as_text():
            return None
        costs = self.compiled.cost_analysis()
        if isinstance(costs, (list, tuple)):  # older jax: one dict per program
            costs = costs[0] if costs else None
        flops = (costs or {}).get("flops")
        return None if not flops or flops < 0 else float(flops) * len(self.devices)

    @property
    def normalization(self) -> str:
        return input_normalization(self.config)


def planned_bytes(compiled) -> int | None:
    """What XLA's buffer assignment plans per device for a compiled step: arguments, outputs
    (less those that reuse an argument's buffer) and temporaries; None where the backend does
    not say."""
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes
                   - m.alias_size_in_bytes + m.temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - not every backend and version implements it
        return None


def peak_tflops(device, precision: str) -> float | None:
    """Dense peak of one device at this precision, None where unknown (CPUs)."""
    if device.platform != "gpu":
        return None
    for name, peaks in PEAK_TFLOPS:
        if name in device.device_kind:
            return peaks[precision]
    return None


def flops_text(flops: float | None, seconds: float, device, precision: str,
               devices: int = 1) -> str:
    """'12.3 TFLOP/s (4.5% of peak)' for `flops` per step taking `seconds` ('peak n/a' where
    the device's peak is not in PEAK_TFLOPS, e.g. CPUs)."""
    if flops is None:
        return "n/a"
    rate = flops / seconds / 1e12
    text = f"{rate:.2f} TFLOP/s" if rate >= 0.1 else f"{rate * 1e3:.1f} GFLOP/s"
    peak = peak_tflops(device, precision)
    share = "peak n/a" if peak is None else f"{100 * rate / (peak * devices):.1f}% of peak"
    return f"{text} ({share})"


def time_interleaved(runners: dict[str, Callable[[], None]], steps: int,
                     log=print) -> dict[str, list[float]]:
    """One warm-up call each, then `steps` rounds calling every runner once per round (so a
    slower stretch of a shared machine hits all of them); seconds per call."""
    for name, run in runners.items():
        t0 = time.perf_counter()
        run()
        log(f"warm-up {name}: {time.perf_counter() - t0:.1f} s")
    times = {name: [] for name in runners}
    for _ in range(steps):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return times


def median(values) -> float:
    return statistics.median(values)
