"""pisa-jax: the audio-visual piano skill model of Zhao, Wang and Cai (2023) in JAX/Flax.

    import pisa_jax
    trained = pisa_jax.load("runs/demo")            # a trained workdir, its best checkpoint
    probs = trained.predict(video, spectrogram)     # {head: class probabilities [B, 10]}

Importing the package is light (no JAX): `load` imports the model code when it is called.
Commands: pisa-train, pisa-build, pisa-convert, pisa-evaluate, pisa-predict, pisa-reproduce.
"""


def load(workdir, checkpoint: str = "best", *, batch_size: int | None = None):
    """A trained run (its workdir) ready to predict: see `pisa_jax.api.load`."""
    # The public entry point of the top layer, imported only when called: lower layers import
    # the package root (for pisa_jax.errors and pisa_jax.cli) and must not pull it in.
    from pisa_jax.api import load as load_workdir
    return load_workdir(workdir, checkpoint, batch_size=batch_size)


__all__ = ["load"]
