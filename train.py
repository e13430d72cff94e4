"""Train the audio-visual piano skill model: flags -> TrainConfig -> train_and_evaluate.

    python train.py --preset demo --workdir /tmp/demo      # CPU demo on the synthetic data
    python train.py --depths 18,18 --dataset pisa --workdir runs/r18 \
        --visual_init checkpoints/r3d18_KM_200ep --aural_init checkpoints/resnet18_imagenet

Run `python train.py --help` for every flag. Re-running the same command resumes the run.
"""
import sys

from pisa_jax.train.cli import parse_args


def main(argv=None) -> int:
    args = parse_args(argv)
    from pisa_jax.train.errors import user_errors
    try:
        # jax.distributed must start before anything else runs on a device.
        from pisa_jax.train.distributed import initialize
        initialize(args.coordinator_address, args.num_processes, args.process_id)
        from pisa_jax.train import train_and_evaluate
        train_and_evaluate(args.config, args.workdir, override_config=args.override_config)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
