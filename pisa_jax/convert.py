"""PyTorch ResNet weights -> Flax variables of `ResNet3D` / `ResNet2D`, and the CLI that does it.

Sources: Hara's `r3d{18,34,50}_KM_200ep.pth` (weights under "state_dict", maybe a "module."
prefix, a 1039-class fc), torchvision's `resnet18/34/50` and `video.r3d_18` state dicts, as .pth
(`torch.load(weights_only=True)`, never a plain unpickle) or .safetensors (no torch needed).

Semantics are the paper's Algorithm 1: every tensor whose name and shape match is copied. What
is not copied is reported, never silently dropped: skipped file tensors (e.g. the classifier
when the model has none or another class count), and model parameters left initialised. A name
that matches with the wrong shape is an error naming both shapes, unless skip_mismatched. A
3-channel conv1 is summed over its input channels when the model has one (a grey image then
gives the response the RGB kernel gave to that grey as RGB).

    python -m pisa_jax.convert --arch r3d18 --source hara r3d18_KM_200ep.pth checkpoints/r3d18_hara
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from pisa_jax.models import ResNet2D, ResNet3D


class ConversionError(Exception):
    """A weight file or state dict that cannot become the requested model's weights."""

    def __init__(self, source: Any, problem: str):
        self.source, self.problem = source, problem
        super().__init__(problem if source is None else f"{source}: {problem}")


# ---- the mapping table: PyTorch key -> Flax path ------------------------------------------
# Per layer kind: PyTorch field -> (Flax collection, Flax leaf name). num_batches_tracked has no
# Flax counterpart and is ignored.
FIELDS = {
    "conv": {"weight": ("params", "kernel")},
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
LAYOUTS = {"hara": _HARA_OR_2D, "torchvision-video": _TORCHVISION_VIDEO,
           "torchvision-2d": _HARA_OR_2D}


def _to_flax(kind: str, leaf: str, value: np.ndarray) -> np.ndarray:
    if kind == "conv":  # (O, I, *k) -> (*k, I, O)
        return np.transpose(value, (*range(2, value.ndim), 1, 0))
    if kind == "linear" and leaf == "kernel":  # (O, I) -> (I, O)
        return value.T
    return value


def _torch_shape(kind: str, leaf: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape a Flax leaf of this shape comes from (for error messages)."""
    if kind == "conv":
        return (flax_shape[-1], flax_shape[-2], *flax_shape[:-2])
    return tuple(reversed(flax_shape)) if kind == "linear" and leaf == "kernel" else flax_shape


def layout_of(model: ResNet3D | ResNet2D) -> str:
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


# ---- conversion -----------------------------------------------------------------------------
@dataclasses.dataclass
class ConversionReport:
    layout: str
    copied: list[str] = dataclasses.field(default_factory=list)  # "torch key -> flax path"
    adapted: list[str] = dataclasses.field(default_factory=list)  # copied after a change
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (key, why)
    left_initialised: list[str] = dataclasses.field(default_factory=list)  # flax paths

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def format(self, limit: int = 12) -> str:
        def listing(items):
            shown = [f"    {item}" for item in items[:limit]]
            return shown + ([f"    ... and {len(items) - limit} more"] if len(items) > limit else [])
        lines = [f"layout {self.layout}: copied {len(self.copied)} tensors, adapted "
                 f"{len(self.adapted)}, skipped {len(self.skipped)}, left initialised "
                 f"{len(self.left_initialised)}"]
        for title, items in (("adapted", self.adapted),
                             ("skipped", [f"{k}: {why}" for k, why in self.skipped]),
                             ("left initialised", self.left_initialised)):
            lines += [f"  {title}:"] + listing(items) if items else []
        return "\n".join(lines)


def clean_state_dict(obj: Any, source: Any = None) -> dict[str, np.ndarray]:
    """Unwrap {"state_dict": ...} (Hara's files also hold "arch", "epoch", "optimizer"), drop the
    DataParallel "module." prefix and non-tensor entries; tensors -> float32 numpy arrays."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ConversionError(source, f"holds a {type(obj).__name__}, not a state dict")
    arrays = {}
    for key, value in obj.items():
        if hasattr(value, "detach"):  # a torch tensor; bf16/fp16 have no exact numpy twin
            value = value.detach().cpu()
            value = (value.float() if value.is_floating_point() else value).numpy()
        if isinstance(value, (np.ndarray, jax.Array)):
            arrays[str(key).removeprefix("module.")] = np.asarray(value)
    if not arrays:
        raise ConversionError(source, "holds no tensors (not a state dict)")
    return arrays


def init_variables(model: ResNet3D | ResNet2D, rng=None) -> dict:
    """Freshly initialised {"params", "batch_stats"} of `model` as numpy.

    The default key uses the "rbg" generator: XLA compiles a threefry init of a ResNet in
    15-20 s on 2 CPU cores, an rbg one in ~3 s."""
    rng = jax.random.key(0, impl="rbg") if rng is None else rng
    variables = jax.jit(lambda r: model.init(r, model.example_input(), train=False))(rng)
    return jax.tree_util.tree_map(np.asarray, dict(variables))


def _flatten(tree: Mapping) -> dict[tuple[str, ...], Any]:
    """{(collection, *modules, leaf name): leaf} of a variables tree, in the tree's order."""
    return {tuple(k.key for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(dict(tree))[0]}


def convert_state_dict(state_dict: Mapping[str, Any], model: ResNet3D | ResNet2D, *,
                       skip_mismatched: bool = False, strict: bool = False, rng=None,
                       source: Any = None) -> tuple[dict, ConversionReport]:
    """Algorithm 1 onto `model`'s freshly initialised variables; see the module docstring.

    strict: also fail unless the file and the model match one to one apart from the classifier
    (the CLI's default: a file for another depth is then an error, not a partial load).
    source: names the file in error messages. Returns ({"params", "batch_stats"}, report).
    """
    arrays = clean_state_dict(state_dict, source)
    layout = layout_of(model)
    # Shapes by tracing only: a random init is paid for only if something is left initialised.
    targets = _flatten(jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), model.example_input(), train=False)))
    flat: dict[tuple[str, ...], np.ndarray] = {}  # what the file provides
    report = ConversionReport(layout)
    for key, value in arrays.items():
        if key.rpartition(".")[2] in IGNORED_FIELDS:
            continue
        mapped = flax_path(layout, key)
        if mapped is None or mapped[0] not in targets:
            is_fc = mapped is not None and mapped[0][1] == "fc"
            report.skipped.append((key, "the model has no classifier (num_classes=None)" if is_fc
                                   else f"no such layer in this {layout} model"))
            continue
        path, kind = mapped
        value, target = _to_flax(kind, path[-1], value), targets[path]
        if value.shape != target.shape:
            if kind == "conv" and target.shape[-2] == 1 and (
                    value.shape[:-2] + value.shape[-1:] == target.shape[:-2] + target.shape[-1:]):
                value = value.sum(axis=-2, keepdims=True)
                report.adapted.append(f"{key}: {arrays[key].shape[1]} input channels summed to 1")
            elif path[1] == "fc" and value.shape[:-1] == target.shape[:-1]:
                report.skipped.append((key, f"{value.shape[-1]} classes in the file, the model "
                                            f"has {target.shape[-1]}"))
                continue
            else:
                problem = (f"{key} has shape {tuple(arrays[key].shape)}, the model needs "
                           f"{_torch_shape(kind, path[-1], target.shape)}")
                if not skip_mismatched:
                    raise ConversionError(source, problem + " (weights of another architecture?)")
                report.skipped.append((key, problem))
                continue
        flat[path] = value.astype(target.dtype)
        report.copied.append(f"{key} -> {'/'.join(path)}")
    report.left_initialised = ["/".join(p) for p in targets if p not in flat]
    if not report.copied:
        raise ConversionError(source, f"no tensor matches the {layout} layout "
                                      f"(first keys: {', '.join(list(arrays)[:3])})")
    if strict:
        _check_one_to_one(report, source)
    if report.left_initialised:  # only then pay for a random init
        initial = _flatten(init_variables(model, rng))
        flat.update({path: initial[path] for path in targets if path not in flat})
    variables: dict = {}
    for path in targets:  # the model's own order
        leaf = flat[path]
        node = variables
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = leaf
    return variables, report


def _check_one_to_one(report: ConversionReport, source: Any) -> None:
    unused = [key for key, _ in report.skipped if not key.startswith("fc.")]
    missing = [p for p in report.left_initialised if p.split("/")[1] != "fc"]
    problems = [f"{len(items)} {what} (e.g. {', '.join(items[:2])})" for items, what in
                ((unused, "file tensors unused"), (missing, "model tensors not in the file"))
                if items]
    if problems:
        raise ConversionError(source, f"does not fit the {report.layout} model: "
                              f"{'; '.join(problems)}; weights of another depth or layout? "
                              "(--allow_partial loads it anyway)")


# ---- files ------------------------------------------------------------------------------------
def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def load_weight_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A .pth / .pt (torch.load, weights_only) or .safetensors file -> {key: float32 array}."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(path, "no such file" if not path.exists() else "not a file")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        try:
            return clean_state_dict(load_file(str(path)), path)
        except ConversionError:
            raise
        except Exception as error:  # safetensors raises its own error types
            raise ConversionError(path, f"not a readable safetensors file ({_first_line(error)})"
                                  ) from None
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise ConversionError(path, "is empty")
    if not zipfile.is_zipfile(path):
        if head.startswith(b"PK"):
            raise ConversionError(path, "truncated or damaged (its zip archive has no end)")
        if not head.startswith(b"\x80"):  # torch.save's legacy format starts as a pickle
            raise ConversionError(path, "not a PyTorch checkpoint (neither zip nor pickle)")
    try:
        import torch
    except ImportError:
        raise ConversionError(path, "reading .pth needs PyTorch: install the 'torch' extra, or "
                                    "convert the file to .safetensors") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        problem = (f"holds Python objects besides tensors; not unpickling them" if
                   "Weights only load failed" in str(error) else
                   f"cannot be read as a PyTorch checkpoint ({_first_line(error)})")
        raise ConversionError(path, problem) from None
    return clean_state_dict(obj, path)


def save_converted(out_dir: str | os.PathLike, variables: dict, meta: dict, *,
                   overwrite: bool = False) -> None:
    """out_dir/variables (orbax, written atomically) + out_dir/meta.json (written last)."""
    import orbax.checkpoint as ocp
    out_dir = Path(out_dir).absolute()
    ckpt_dir, meta_path = out_dir / "variables", out_dir / "meta.json"
    if ckpt_dir.exists() or meta_path.exists():
        if not overwrite:
            raise ConversionError(out_dir, "already holds a converted checkpoint (--overwrite)")
        meta_path.unlink(missing_ok=True)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(ckpt_dir, variables)
        checkpointer.wait_until_finished()
    tmp = meta_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1, default=str))
    os.replace(tmp, meta_path)


def load_converted(out_dir: str | os.PathLike) -> tuple[dict, dict]:
    """(variables as a numpy tree, meta) from a directory written by `save_converted`."""
    import orbax.checkpoint as ocp
    out_dir = Path(out_dir).absolute()
    meta_path = out_dir / "meta.json"
    if not meta_path.is_file():
        raise ConversionError(out_dir, "no meta.json: not a converted checkpoint "
                                       "(make one with python -m pisa_jax.convert)")
    meta = json.loads(meta_path.read_text())
    with ocp.StandardCheckpointer() as checkpointer:
        variables = checkpointer.restore(out_dir / "variables")
    return jax.tree_util.tree_map(np.asarray, variables), meta


# ---- command line ---------------------------------------------------------------------------
ARCHS = [f"r3d{d}" for d in (10, 18, 34, 50, 101, 152, 200)] + [
    f"r2d{d}" for d in (18, 34, 50, 101, 152)]


def build_model(arch: str, source: str, *, in_channels: int = 1, num_classes: int | None = None,
                conv1_t_stride: int = 1) -> ResNet3D | ResNet2D:
    depth = int(arch[3:])
    if arch.startswith("r2d"):
        if source != "torchvision":
            raise ValueError(f"{arch}: 2D weights come from torchvision (--source torchvision)")
        return ResNet2D(depth, num_classes, in_channels=in_channels)
    return ResNet3D(depth, num_classes, stem=source, conv1_t_stride=conv1_t_stride)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pisa_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, choices=ARCHS)
    parser.add_argument("--source", required=True, choices=("hara", "torchvision"),
                        help="whose layout the file has; for r3d also the stem of the model")
    parser.add_argument("--in_channels", type=int, default=1, help="r2d input channels")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="keep a classifier of this size (default: backbone only)")
    parser.add_argument("--conv1_t_stride", type=int, default=1, help="r3d conv1 time stride")
    parser.add_argument("--skip_mismatched", action="store_true",
                        help="skip tensors whose name matches but shape does not")
    parser.add_argument("--allow_partial", action="store_true",
                        help="accept a file that covers the model only in part")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT's checkpoint")
    parser.add_argument("input", type=Path, help=".pth / .pt / .safetensors file")
    parser.add_argument("output", type=Path, help="directory for the orbax checkpoint")
    args = parser.parse_args(argv)
    try:
        model = build_model(args.arch, args.source, in_channels=args.in_channels,
                            num_classes=args.num_classes, conv1_t_stride=args.conv1_t_stride)
    except ValueError as error:
        parser.error(str(error))
    try:
        state_dict = load_weight_file(args.input)
        variables, report = convert_state_dict(
            state_dict, model, skip_mismatched=args.skip_mismatched,
            strict=not args.allow_partial, source=args.input)
        meta = {"format": 1, "arch": args.arch, "kind": type(model).__name__,
                "depth": model.depth, "source": args.source,
                "stem": getattr(model, "stem", None), "in_channels": 3 if args.arch.startswith(
                    "r3d") else args.in_channels, "num_classes": args.num_classes,
                "conv1_t_stride": args.conv1_t_stride, "source_file": str(args.input),
                "source_sha256": _sha256(args.input), "report": report.to_dict()}
        save_converted(args.output, variables, meta, overwrite=args.overwrite)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.format())
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
