"""python -m data_builders.pisa --manual_dir DIR [--data_dir DIR] [--config NAME]
[--annotations FILE_OR_DIR] [--skip_bad] [--num_workers N]     (installed as `pisa-build`)

Builds PISA (or your own dataset in PISA's annotation schema) as a TFDS array_record dataset
without TensorFlow (the `tfds build` command needs TensorFlow). Without a GPU, build a *_demo
config (or give your own --clips_per_sample/--clip_length/--image_size/--spectrogram_size):
its samples are small enough to train on a CPU (`train.py --preset demo --dataset pisa
--dataset_config consecutive_demo`)."""
from __future__ import annotations

import sys

from data_builders.pisa.build import build_dataset, default_data_dir, make_config
from data_builders.pisa.pisa_dataset_builder import SKIPPED_FILE, Builder, resized_config
from pisa_jax import cli

SHAPE_FLAGS = ("clips_per_sample", "clip_length", "image_size", "spectrogram_size")


def _config_table() -> str:
    """The registered configs, one a line: name, stored sample shape, what it is."""
    lines = ["configs (--config): name, clips x frames @ frame size, spectrogram size, layout"]
    for c in Builder.BUILDER_CONFIGS:
        shape = f"{c.clips_per_sample:>2} x {c.clip_length:<2} @ {c.image_size:>3}px"
        spectrogram = f"{c.clips_per_sample} x {c.spectrogram_size}" if c.spectrogram_per_clip \
            else str(c.spectrogram_size)
        lines.append(f"  {c.name:<27} {shape}  {spectrogram:<8}  {c.description.split('. ')[0].rstrip('.')}")
    lines.append("The *_demo configs keep 2 clips x 8 frames spread over each annotated 160-frame "
                 "sample (every 10th annotated frame);\ntheir spectrogram hears the whole sample, as the "
                 "paper's does.")
    return "\n".join(lines)


def _main(argv=None) -> int:
    names = [c.name for c in Builder.BUILDER_CONFIGS]
    parser = cli.argument_parser("python -m data_builders.pisa", __doc__, epilog=_config_table())
    parser.add_argument("--manual_dir", required=True, help="folder with the videos")
    parser.add_argument("--data_dir", default=None,
                        help=f"where datasets go (default {default_data_dir()})")
    parser.add_argument("--config", default="consecutive", choices=names, metavar="NAME",
                        help="a builder config, listed below (default: consecutive)")
    parser.add_argument("--annotations", default=None,
                        help="your own annotations: a JSON file or a folder (see README)")
    parser.add_argument("--skip_bad", action="store_true",
                        help=f"skip videos with problems, list them in {SKIPPED_FILE}")
    parser.add_argument("--num_workers", type=int, default=None, help="default: all cores")
    shape = parser.add_argument_group(
        "sample shape (default: the config's; giving any stores samples of that shape under the "
        "config name <config>_<clips>x<length>_<size>px_<size>spec)")
    shape.add_argument("--clips_per_sample", type=int, default=None, help="clips per sample")
    shape.add_argument("--clip_length", type=int, default=None, help="frames per clip")
    shape.add_argument("--image_size", type=int, default=None, help="frame height and width")
    shape.add_argument("--spectrogram_size", type=int, default=None,
                       help="spectrogram height and width")
    args = parser.parse_args(argv)
    config = make_config(args.config, args.annotations)
    if any(getattr(args, flag) is not None for flag in SHAPE_FLAGS):
        config = resized_config(config, **{
            flag: getattr(config, flag) if getattr(args, flag) is None else getattr(args, flag)
            for flag in SHAPE_FLAGS})
    result = build_dataset(config, args.manual_dir, args.data_dir, skip_bad=args.skip_bad,
                           num_workers=args.num_workers)
    print(f"dataset: {result.path}")
    for split, size in sorted(result.split_sizes.items()):
        print(f"  {split}: {size} samples")
    if result.skipped:
        print(f"skipped {len(result.skipped)} samples, listed in {result.path / SKIPPED_FILE}")
    return 0


def main(argv=None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
