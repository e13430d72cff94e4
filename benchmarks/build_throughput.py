"""Benchmark: render the synthetic dataset and build it through the PISA builder.

Prints one JSON line: seconds to render, seconds to build, samples/s, bytes on disk per sample.

    python benchmarks/build_throughput.py --size demo --out /tmp/bench_build_demo
    python benchmarks/build_throughput.py --size full --out /tmp/bench_build_full
"""
import argparse
import json
import os
import time
from pathlib import Path

from data_builders.pisa.build import build_dataset, make_config
from data_builders.pisa.synthetic import config_name, generate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="demo", choices=("tiny", "demo", "full"))
    parser.add_argument("--out", required=True, help="an empty folder for the videos and the dataset")
    args = parser.parse_args()
    root = Path(args.out)
    start = time.perf_counter()
    generate(root / "src", args.size)
    rendered = time.perf_counter()
    result = build_dataset(make_config(config_name(args.size)), root / "src", root / "data")
    built = time.perf_counter()
    samples = sum(result.split_sizes.values())
    on_disk = sum(f.stat().st_size for f in result.path.glob("*.array_record*"))
    print(json.dumps({"size": args.size, "cores": os.cpu_count(), "samples": samples,
                      "render_s": round(rendered - start, 1), "build_s": round(built - rendered, 1),
                      "build_samples_per_s": round(samples / (built - rendered), 2),
                      "bytes_per_sample": on_disk // samples}))


if __name__ == "__main__":
    main()
