"""Train the audio-visual piano skill model: flags -> TrainConfig -> train_and_evaluate.

    python train.py --preset demo                  # CPU demo on the synthetic data
    python train.py --depths 18,18 --dataset pisa \
        --visual_init checkpoints/r3d18_hara --aural_init checkpoints/r2d18_imagenet

Run `python train.py --help` for every flag. Re-running the same command resumes the run.
The same command is installed as `pisa-train` and runs as `python -m pisa_jax.train`.
"""
import sys

from pisa_jax.train.flags import command, main  # noqa: F401 - main(argv): for Python callers

if __name__ == "__main__":
    sys.exit(command())
