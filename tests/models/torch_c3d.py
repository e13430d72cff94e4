"""PyTorch C3D reference for the parity tests (imported only after torch is known to exist):
`pisa_jax.reference.c3d`, shared with the side-by-side benchmark."""
from pisa_jax.reference.c3d import GROUPS, TorchC3D, torch_c3d  # noqa: F401
