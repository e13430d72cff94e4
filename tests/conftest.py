"""Shared test set-up.

Four simulated CPU devices, so pmap tests run anywhere. This must happen before JAX is
imported anywhere in the test session.
"""
import os


def _test_xla_flags() -> str:
    """The tests' tiny models spend their time compiling, not running. LLVM's optimisation
    level 0 cuts compile time by a fifth to a third (no float reassociation either way, so
    results hold). XLA CPU's older elemental emitters instead of its fusion emitters cut a train
    step's compile at level 0 by another ~40 % (8.5-10.9 s -> 5.5-6.1 s). jaxlib 0.10 only:
    0.11 and 0.12 removed the flag (they have only the fusion emitters), and XLA aborts at start
    on a flag it does not know."""
    flags = "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
    import jaxlib.version  # the version only: no backend starts
    if jaxlib.version.__version__.startswith("0.10."):
        flags += " --xla_cpu_use_fusion_emitters=false"
    return flags


os.environ.setdefault("XLA_FLAGS", _test_xla_flags())
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The commands under test would otherwise fill the user's compilation cache (~/.cache/pisa_jax).
os.environ.setdefault("PISA_JAX_COMPILATION_CACHE", "off")
# Instead, one cache for the whole session, shared with the subprocesses the tests start and,
# under `pytest -n 2`, with the workers (the controller sets it before it starts them): most
# tests compile the same few tiny models, and compiling, not running, is where their time goes.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit  # noqa: E402
    import shutil  # noqa: E402
    import tempfile  # noqa: E402
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="pisa_jax_test_cache_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import importlib.util  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from data_helpers import SR, coded_frames, tone  # noqa: E402


@pytest.fixture(scope="session")
def torch_reference():
    """tests/models/torch_reference.py: PyTorch reference models and the parity check.

    Skips the test when PyTorch is missing: it is the optional `torch` extra."""
    pytest.importorskip("torch", reason="needs PyTorch (pip install 'pisa-jax[torch]')")
    pytest.importorskip("torchvision", reason="needs torchvision (pip install 'pisa-jax[torch]')")
    path = Path(__file__).parent / "models" / "torch_reference.py"
    spec = importlib.util.spec_from_file_location("torch_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def quick_init():
    """quick_init(model, *args, **kwargs) -> variables, as `model.init` would give, but drawn with
    numpy: shapes come from tracing only, because compiling JAX's random init of a ResNet takes
    5-20 s on 2 CPU cores. Kernels He-normal (fan in), BN scale/var 1, biases/means 0."""
    import jax
    import numpy as np

    def init(model, *args, seed=0, **kwargs):
        rng = np.random.default_rng(seed)
        shapes = jax.eval_shape(lambda: model.init(
            {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, *args, **kwargs))

        def draw(path, leaf):
            name = path[-1].key
            if name == "kernel":
                fan_in = int(np.prod(leaf.shape[:-1]))
                return (rng.standard_normal(leaf.shape) * np.sqrt(2 / fan_in)).astype(leaf.dtype)
            return (np.ones if name in ("scale", "var") else np.zeros)(leaf.shape, leaf.dtype)
        return jax.tree_util.tree_map_with_path(draw, dict(shapes))
    return init


@pytest.fixture(scope="session")
def synthetic_tiny(tmp_path_factory):
    """The "tiny" synthetic dataset (20 train / 10 test samples of 2 clips x 8 frames, 32x32
    frames, 32x32 spectrograms), built once per test session: a BuildResult (path, data_dir,
    manual_dir holding videos/ and annotations/)."""
    from data_builders.pisa.build import ensure_synthetic
    return ensure_synthetic(tmp_path_factory.mktemp("pisa_data"), size="tiny")


@pytest.fixture(scope="session")
def smoke_run(synthetic_tiny, tmp_path_factory):
    """A finished smoke training run (2 epochs of 5 steps, R10-3D + R18-2D at base width 2) on
    the tiny synthetic dataset, through the real entry point: (config, workdir, results)."""
    from pisa_jax.train import preset, train_and_evaluate
    config = preset("smoke", data_dir=str(synthetic_tiny.data_dir), epochs=2,
                    checkpoint_every_steps=2)
    workdir = tmp_path_factory.mktemp("smoke_run")
    return config, workdir, train_and_evaluate(config, workdir)


@pytest.fixture
def write_coded_video():
    def write(path, n, fps, height=48, width=64, audio=True, box=None):
        from pisa_jax.media import encode
        audio_data = tone(int(round(n / fps * SR))) if audio else None
        encode.write_video(path, coded_frames(n, height, width, box), fps, audio_data, SR)
        return path
    return write


@pytest.fixture
def write_annotations():
    def write(path, splits):
        path.write_text(json.dumps(splits))
        return str(path)
    return write


@pytest.fixture
def small_config():
    """A builder config with tiny shapes: 2 clips x 4 frames, 32x32 frames, 16x16 spectra."""
    import dataclasses

    from data_builders.pisa.build import make_config

    def make(annotations, name="consecutive", **changes):
        config = make_config(name, annotations)
        fields = dict(image_size=32, clips_per_sample=2, clip_length=4, spectrogram_size=16)
        return dataclasses.replace(config, **{**fields, **changes})
    return make
