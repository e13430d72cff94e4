"""What the parity tests of every network share (no PyTorch needed here)."""
import math

import jax

TOLERANCE = 1e-4  # on max |difference|, relative to max(1, max |value|) of PyTorch's output


def assert_parity(name: str, diff: float, scale: float) -> None:
    """diff: max |ours - PyTorch's|; scale: max |PyTorch's|. Prints the figure, then checks it."""
    print(f"parity {name}: max abs diff {diff:.3g}, max |value| {scale:.3g}, "
          f"relative {diff / max(1.0, scale):.3g}")
    assert diff <= TOLERANCE * max(1.0, scale), (name, diff, scale)


def flax_param_count(model) -> int:
    """Parameters of a model with `example_input()`, from shapes only (nothing is compiled)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), model.example_input(),
                                               train=False))
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes["params"]))
