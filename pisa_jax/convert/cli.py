"""python -m pisa_jax.convert --arch r3d18|...|r2d50|c3d --source hara|torchvision|c3d IN OUT"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from pisa_jax import cli
from pisa_jax.convert.files import check_output_dir, load_weight_file, save_converted
from pisa_jax.convert.state_dict import ConversionError, convert_state_dict
from pisa_jax.models import C3D, ResNet2D, ResNet3D

ARCHS = [f"r3d{d}" for d in (10, 18, 34, 50, 101, 152, 200)] + [
    f"r2d{d}" for d in (18, 34, 50, 101, 152)] + ["c3d"]
SOURCES = ("hara", "torchvision", "c3d")


def arch_model(arch: str, source: str, *, in_channels: int = 1, num_classes: int | None = None,
               conv1_t_stride: int = 1, base_width: int = 64) -> ResNet3D | ResNet2D | C3D:
    """The Flax model that a file of this architecture and source converts into.

    Raises ConversionError naming the flag for a value no model can have."""
    for flag, value in (("--in_channels", in_channels), ("--num_classes", num_classes),
                        ("--conv1_t_stride", conv1_t_stride), ("--base_width", base_width)):
        if value is not None and value < 1:
            raise ConversionError(flag, f"must be a positive integer, got {value}")
    if arch == "c3d" and source != "c3d":
        raise ConversionError("--source", f"--arch c3d converts the Sports-1M C3D file "
                                          f"(--source c3d), not {source} weights")
    if source == "c3d" and arch != "c3d":
        raise ConversionError("--source", f"c3d is the Sports-1M C3D file: it converts to "
                                          f"--arch c3d, not {arch}")
    if arch == "c3d":
        return C3D(num_classes, base_width=base_width)
    depth = int(arch[3:])
    if arch.startswith("r2d"):
        if source != "torchvision":
            raise ConversionError("--source", f"{arch}: 2D weights come from torchvision "
                                              "(--source torchvision)")
        return ResNet2D(depth, num_classes, in_channels=in_channels, base_width=base_width)
    return ResNet3D(depth, num_classes, stem=source, conv1_t_stride=conv1_t_stride,
                    base_width=base_width)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _parser() -> argparse.ArgumentParser:
    package_doc = sys.modules["pisa_jax.convert"].__doc__  # imported by now: we live in it
    parser = cli.argument_parser("python -m pisa_jax.convert", package_doc)
    parser.add_argument("--arch", required=True, choices=ARCHS)
    parser.add_argument("--source", required=True, choices=SOURCES,
                        help="whose layout the file has; for r3d also the stem of the model")
    parser.add_argument("--in_channels", type=int, default=1, help="r2d input channels")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="keep a classifier of this size (default: backbone only)")
    parser.add_argument("--conv1_t_stride", type=int, default=1, help="r3d conv1 time stride")
    parser.add_argument("--base_width", type=int, default=64,
                        help="width of the first layer (64 in every published file; "
                             "narrow nets are for tests)")
    parser.add_argument("--skip_mismatched", action="store_true",
                        help="skip tensors whose name matches but shape does not")
    parser.add_argument("--allow_partial", action="store_true",
                        help="accept a file that covers the model only in part")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT's checkpoint")
    parser.add_argument("input", type=Path, help=".pth / .pt / .safetensors file")
    parser.add_argument("output", type=Path, help="directory for the orbax checkpoint")
    return parser


def _main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # every check that needs no weights comes first: a bad flag costs no conversion
    model = arch_model(args.arch, args.source, in_channels=args.in_channels,
                       num_classes=args.num_classes, conv1_t_stride=args.conv1_t_stride,
                       base_width=args.base_width)
    check_output_dir(args.output, overwrite=args.overwrite)
    state_dict = load_weight_file(args.input)
    variables, report = convert_state_dict(
        state_dict, model, skip_mismatched=args.skip_mismatched,
        strict=not args.allow_partial, source=args.input)
    meta = {"format": 1, "arch": args.arch, "kind": type(model).__name__,
            "depth": getattr(model, "depth", None), "source": args.source,
            "stem": getattr(model, "stem", None),
            "in_channels": args.in_channels if isinstance(model, ResNet2D) else 3,
            "num_classes": args.num_classes, "conv1_t_stride": args.conv1_t_stride,
            "base_width": args.base_width, "source_file": str(args.input),
            "source_sha256": _sha256(args.input), "report": report.to_dict()}
    save_converted(args.output, variables, meta, overwrite=args.overwrite)
    print(report.format())
    print(f"wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)
