"""python -m data_builders.pisa --manual_dir DIR [--data_dir DIR] [--config NAME]
[--annotations FILE_OR_DIR] [--skip_bad] [--num_workers N]     (installed as `pisa-build`)

Builds PISA (or your own dataset in PISA's annotation schema) as a TFDS array_record dataset
without TensorFlow (the `tfds build` command needs TensorFlow)."""
from __future__ import annotations

import sys

from data_builders.pisa.build import build_dataset, default_data_dir, make_config
from data_builders.pisa.pisa_dataset_builder import SKIPPED_FILE, Builder
from pisa_jax import cli


def _main(argv=None) -> int:
    names = [c.name for c in Builder.BUILDER_CONFIGS]
    parser = cli.argument_parser("python -m data_builders.pisa", __doc__)
    parser.add_argument("--manual_dir", required=True, help="folder with the videos")
    parser.add_argument("--data_dir", default=None,
                        help=f"where datasets go (default {default_data_dir()})")
    parser.add_argument("--config", default="consecutive", choices=names)
    parser.add_argument("--annotations", default=None,
                        help="your own annotations: a JSON file or a folder (see README)")
    parser.add_argument("--skip_bad", action="store_true",
                        help=f"skip videos with problems, list them in {SKIPPED_FILE}")
    parser.add_argument("--num_workers", type=int, default=None, help="default: all cores")
    args = parser.parse_args(argv)
    result = build_dataset(make_config(args.config, args.annotations), args.manual_dir,
                           args.data_dir, skip_bad=args.skip_bad, num_workers=args.num_workers)
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
