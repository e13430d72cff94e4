"""Benchmark: host input pipeline throughput (read, decode, flip, batch) over a built dataset.

Prints one JSON line: samples/s for a first epoch (read from disk), a second epoch (from the
in-memory cache when --cache) and a third through prefetch_to_device.

    python benchmarks/pipeline_throughput.py PATH/pisa/synthetic_full/1.0.0 --batch 4 --cache
"""
import argparse
import json
import time

from pisa_jax.data.dataset import open_path
from pisa_jax.data.pipeline import prefetch_to_device, train_batches


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="a built dataset folder (the one holding dataset_info.json)")
    parser.add_argument("--batch", type=int, default=4, help="global batch in samples")
    parser.add_argument("--cache", action="store_true", help="keep decoded samples in host memory")
    args = parser.parse_args()
    dataset = open_path(args.path, cache=args.cache)

    def samples_per_s(epoch: int, to_device: bool) -> float:
        start, seen = time.perf_counter(), 0
        batches = train_batches(dataset.train, global_batch_size=args.batch, num_local_devices=1,
                                seed=0, epoch=epoch)
        for _ in (prefetch_to_device(batches) if to_device else batches):
            seen += args.batch
        return round(seen / (time.perf_counter() - start), 1)

    print(json.dumps({"path": args.path, "batch": args.batch, "cache": args.cache,
                      "epoch1_samples_per_s": samples_per_s(0, False),
                      "epoch2_samples_per_s": samples_per_s(1, False),
                      "epoch3_prefetch_to_device_samples_per_s": samples_per_s(2, True)}))


if __name__ == "__main__":
    main()
