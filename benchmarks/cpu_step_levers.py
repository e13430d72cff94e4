"""Benchmark: the whole training step on CPU with and without each speed lever, and PyTorch eager.

One process, one jitted step per variant (SkillModel R18-3D + R18-2D at full width, the paper's
loss and coupled-L2 Adam), interleaved repeat by repeat, medians in seconds and ratios. A variant
is `lowering:options[:reduce_window_pool]`:
- lowering: the model's conv_lowering (native, taps, stacked, auto);
- options: a named set of XLA CPU compiler options (OPTION_SETS; "project" is
  pisa_jax.xla_options.cpu_compiler_options());
- reduce_window_pool: the max-pool as `lax.reduce_window` (the formulation before the strided
  slices), for the before/after figure;
- flax_batch_norm: `flax.linen.BatchNorm` instead of the project's (pisa_jax.models.batch_norm);
- optax_adam: optax's chain applied as XLA compiles it, instead of the project's one-pass Adam
  (pisa_jax.train.optimizer; "project" options without it measure the one-pass step's gain).
PyTorch runs with OMP_WAIT_POLICY=PASSIVE: with OpenMP's default spin-waiting, its idle threads
and XLA's took turns starving each other and both steps ran 2-4x slower than alone. Its column
is a reference only: in one process with JAX, PyTorch eager measured up to 15 % faster than
alone; benchmarks/compare_frameworks.py runs each framework in its own process.

    python benchmarks/cpu_step_levers.py --variants native:default:reduce_window_pool,auto:project
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (libgomp) is loaded

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax import lax  # noqa: E402

from pisa_jax.models import SkillModel, layers, resnet2d, resnet3d  # noqa: E402
from pisa_jax.train.optimizer import apply_optimizer, coupled_adam  # noqa: E402
from pisa_jax.xla_options import cpu_compiler_options  # noqa: E402

YNN_OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}
OPTION_SETS = {
    "default": {},
    "ynn_off": YNN_OFF,
    # compiler_options take the proto's enum names (XLA_FLAGS takes "individual_dot")
    "ynn_dots_only": {"xla_cpu_experimental_ynn_fusion_type":
                      "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    "onednn": {**YNN_OFF, "xla_cpu_use_onednn": True},
    "onednn_custom_call": {**YNN_OFF, "xla_cpu_use_onednn": True,
                           "xla_cpu_experimental_onednn_custom_call": True},
    "xnnpack": {**YNN_OFF, "xla_cpu_use_xnnpack": True},
    "eigen_one_thread": {**YNN_OFF, "xla_cpu_multi_thread_eigen": False},
    "concurrency_scheduler": {**YNN_OFF, "xla_cpu_enable_concurrency_optimized_scheduler": True},
    "concurrency_onednn": {**YNN_OFF, "xla_cpu_enable_concurrency_optimized_scheduler": True,
                           "xla_cpu_use_onednn": True},
    "no_fusion_emitters": {**YNN_OFF, "xla_cpu_use_fusion_emitters": False},
    "parallel_codegen_8": {**YNN_OFF, "xla_cpu_parallel_codegen_split_count": 8},
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="native:default:reduce_window_pool,auto:project")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--spectrogram_size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5, help="timed repeats after one warm-up")
    p.add_argument("--no_torch", action="store_true")
    p.add_argument("--torch_compile", action="store_true", help="also torch.compile (slow start)")
    return p.parse_args()


def reduce_window_max_pool(x, window, stride, padding):
    spatial = x.ndim - 2
    return lax.reduce_window(x, -jnp.inf, lax.max, (1,) + (window,) * spatial + (1,),
                             (1,) + (stride,) * spatial + (1,),
                             ((0, 0),) + ((padding, padding),) * spatial + ((0, 0),))


def random_variables(model, video, spectrogram):
    """He-normal kernels drawn with numpy (shapes from tracing only), BN scale/var 1."""
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: model.init(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
        video[:1, :1, :2, :32, :32], spectrogram[:1, :32, :32], train=False))

    def draw(path, leaf):
        if path[-1].key == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return (rng.standard_normal(leaf.shape) * np.sqrt(2 / fan_in)).astype(np.float32)
        return (np.ones if path[-1].key in ("scale", "var") else np.zeros)(leaf.shape, np.float32)
    return jax.tree_util.tree_map_with_path(draw, dict(shapes))


def flax_batch_norm(train, *, dtype, axis_name, name):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                        param_dtype=jnp.float32, axis_name=axis_name, name=name)


BATCH_NORM_USERS = (layers, resnet2d, resnet3d)


def jax_step(variant, video, spectrogram, labels):
    """A compiled (state) -> (state, loss) step for one variant, and its initial state."""
    lowering, options, *extra = variant.split(":")
    pool = reduce_window_max_pool if "reduce_window_pool" in extra else layers.torch_max_pool
    resnet3d.torch_max_pool = resnet2d.torch_max_pool = pool  # read when the step is traced
    project_batch_norm = layers.torch_batch_norm
    for module in BATCH_NORM_USERS:
        module.torch_batch_norm = (flax_batch_norm if "flax_batch_norm" in extra
                                   else project_batch_norm)
    model = SkillModel(visual_depth=18, aural_depth=18, conv_lowering=lowering)
    tx = coupled_adam(optax.constant_schedule(1e-4), b1=0.9, b2=0.999, eps=1e-8,
                      weight_decay=0.1)
    if "optax_adam" in extra:  # the same chain as a plain optax transformation
        tx = optax.GradientTransformation(tx.init, tx.update)
    variables = random_variables(model, video, spectrogram)
    state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

    def step(state, video, spectrogram, labels):
        params, stats, opt_state = state

        def loss_fn(params):
            out, updated = model.apply({"params": params, "batch_stats": stats}, video,
                                       spectrogram, train=True, mutable=["batch_stats"],
                                       rngs={"dropout": jax.random.PRNGKey(0)})
            loss = sum(optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                       for logits in out["logits"].values())
            return loss, updated["batch_stats"]
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        params, opt_state = apply_optimizer(tx, grads, opt_state, params)
        return (params, stats, opt_state), loss
    options = cpu_compiler_options() if options == "project" else OPTION_SETS[options]
    compiled = jax.jit(step, donate_argnums=0).lower(state, video, spectrogram, labels).compile(
        compiler_options=options)
    holder = [state]

    def run():
        holder[0], loss = compiled(holder[0], video, spectrogram, labels)
        jax.block_until_ready(loss)
    resnet3d.torch_max_pool = resnet2d.torch_max_pool = layers.torch_max_pool
    for module in BATCH_NORM_USERS:
        module.torch_batch_norm = project_batch_norm
    return run


def torch_step(video, spectrogram, labels, compile_model=False):
    """The same network and step in PyTorch (`pisa_jax.reference.skill_model`, the model of the
    parity tests and of compare_frameworks.py), eager or under torch.compile."""
    import torch

    from pisa_jax.reference.skill_model import SkillModel, make_train_step

    # the inputs are already normalised floats: the reference's x / 255 is its only extra op
    step = make_train_step(SkillModel(depths=(18, 18), num_classes=10), mean=(0.0,) * 3,
                           std=(1.0,) * 3, compile_model=compile_model)
    clips, images = torch.from_numpy(video), torch.from_numpy(spectrogram)
    targets = torch.from_numpy(labels).long()

    def run():
        step(clips, images, targets)
    return run


def main():
    args = parse_args()
    rng = np.random.default_rng(0)
    video = rng.standard_normal((args.batch, args.clips, 16, 112, 112, 3), np.float32)
    size = args.spectrogram_size
    spectrogram = rng.uniform(size=(args.batch, size, size)).astype(np.float32)
    labels = rng.integers(0, 10, args.batch).astype(np.int32)
    steps = {}
    for variant in args.variants.split(","):
        t0 = time.perf_counter()
        steps[variant] = jax_step(variant, video, spectrogram, labels)
        print(f"compiled {variant} in {time.perf_counter() - t0:.0f} s", flush=True)
    if not args.no_torch:
        steps["torch eager"] = torch_step(video, spectrogram, labels)
    if args.torch_compile:
        steps["torch.compile"] = torch_step(video, spectrogram, labels, compile_model=True)
    times = {name: [] for name in steps}
    for name, run in steps.items():
        t0 = time.perf_counter()
        run()  # warm-up (torch.compile compiles here)
        print(f"warm-up {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    for _ in range(args.repeats):
        for name, run in steps.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(t) for name, t in times.items()}
    first = medians[next(iter(medians))]
    print(f"jax {jax.__version__}, batch {args.batch} x {args.clips} clips of 16x112x112, "
          f"spectrogram {size}^2, {args.repeats} repeats, s/step")
    print(f"{'variant':44s} {'median':>7s} {'min':>6s} {'first/this':>10s} {'torch/this':>10s}")
    for name, median in medians.items():
        torch_ratio = f"{medians['torch eager'] / median:10.2f}" if "torch eager" in medians else ""
        print(f"{name:44s} {median:7.2f} {min(times[name]):6.2f} {first / median:10.2f} "
              f"{torch_ratio}")


if __name__ == "__main__":
    main()
