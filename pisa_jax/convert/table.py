"""The declarative mapping table: PyTorch state-dict key -> Flax variable path, per layout,
with the transpose each kind of layer needs (conv (O, I, *k) -> (*k, I, O), linear .T).

C3D's fc6 is a plain linear entry too: the Flax C3D flattens pool5 in PyTorch's [C, T, H, W]
order, so no row permutation is needed here."""
from __future__ import annotations

import re

import numpy as np

from pisa_jax.models import C3D, ResNet2D, ResNet3D

# Per layer kind: PyTorch field -> (Flax collection, Flax leaf name). num_batches_tracked has no
# Flax counterpart and is ignored.
FIELDS = {
    "conv": {"weight": ("params", "kernel"), "bias": ("params", "bias")},  # C3D has biases
    "bn": {"weight": ("params", "scale"), "bias": ("params", "bias"),
           "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")},
    "linear": {"weight": ("params", "kernel"), "bias": ("params", "bias")},
}
IGNORED_FIELDS = ("num_batches_tracked",)
_BLOCK = r"layer(\d)\.(\d+)\."
_FLAX_BLOCK = r"layer\1_\2/"
# (regex on the PyTorch layer name, Flax module path, kind). Hara's 3D ResNet and torchvision's
# 2D ResNet name their layers alike; torchvision's video ResNet wraps conv+BN in Sequentials.
_HARA_OR_2D = (
    (r"conv1", "conv1", "conv"),
    (r"bn1", "bn1", "bn"),
    (_BLOCK + r"(conv\d)", _FLAX_BLOCK + r"\3", "conv"),
    (_BLOCK + r"(bn\d)", _FLAX_BLOCK + r"\3", "bn"),
    (_BLOCK + r"downsample\.0", _FLAX_BLOCK + "downsample_conv", "conv"),
    (_BLOCK + r"downsample\.1", _FLAX_BLOCK + "downsample_bn", "bn"),
    (r"fc", "fc", "linear"),
)
_TORCHVISION_VIDEO = (
    (r"stem\.0", "conv1", "conv"),
    (r"stem\.1", "bn1", "bn"),
    (_BLOCK + r"conv(\d)\.0", _FLAX_BLOCK + r"conv\3", "conv"),
    (_BLOCK + r"conv(\d)\.1", _FLAX_BLOCK + r"bn\3", "bn"),
) + _HARA_OR_2D[4:]
_C3D = (
    (r"conv(1|2|3a|3b|4a|4b|5a|5b)", r"conv\1", "conv"),
    (r"fc(6|7|8)", r"fc\1", "linear"),
)
LAYOUTS = {"hara": _HARA_OR_2D, "torchvision-video": _TORCHVISION_VIDEO,
           "torchvision-2d": _HARA_OR_2D, "c3d": _C3D}
# Flax modules that exist only when the model has num_classes; the last holds the class count.
# Missing from the model or of another class count, they are skipped and reported, never an error.
CLASSIFIERS = {"hara": ("fc",), "torchvision-video": ("fc",), "torchvision-2d": ("fc",),
               "c3d": ("fc7", "fc8")}


def to_flax(kind: str, leaf: str, value: np.ndarray) -> np.ndarray:
    if kind == "conv" and leaf == "kernel":  # (O, I, *k) -> (*k, I, O)
        return np.transpose(value, (*range(2, value.ndim), 1, 0))
    if kind == "linear" and leaf == "kernel":  # (O, I) -> (I, O)
        return value.T
    return value


def torch_shape(kind: str, leaf: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape a Flax leaf of this shape comes from (for error messages)."""
    if kind == "conv" and leaf == "kernel":
        return (flax_shape[-1], flax_shape[-2], *flax_shape[:-2])
    return tuple(reversed(flax_shape)) if kind == "linear" and leaf == "kernel" else flax_shape


def layout_of(model: ResNet3D | ResNet2D | C3D) -> str:
    if isinstance(model, C3D):
        return "c3d"
    if isinstance(model, ResNet2D):
        return "torchvision-2d"
    if isinstance(model, ResNet3D):
        return "hara" if model.stem == "hara" else "torchvision-video"
    raise TypeError(f"no PyTorch layout for {type(model).__name__}; convert a backbone")


def flax_path(layout: str, key: str) -> tuple[tuple[str, ...], str] | None:
    """PyTorch key -> ((collection, *modules, leaf), kind), or None if the layout has no such key."""
    layer, _, field = key.rpartition(".")
    for pattern, template, kind in LAYOUTS[layout]:
        match = re.fullmatch(pattern, layer)
        if match and field in FIELDS[kind]:
            collection, leaf = FIELDS[kind][field]
            return (collection, *match.expand(template).split("/"), leaf), kind
    return None
