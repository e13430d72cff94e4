"""The default optimiser is torch.optim.Adam(weight_decay=...) (coupled L2); a run's state
template describes exactly the state its random initialisation gives."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pisa_jax.train.config import preset
from pisa_jax.train.optimizer import apply_optimizer
from pisa_jax.train.state import InputSpec, create_run, make_optimizer


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((16, 5)).astype(np.float32), rng.integers(0, 3, 16),
            {"w": rng.standard_normal((5, 3)).astype(np.float32),
             "b": rng.standard_normal(3).astype(np.float32)})


def _jax_run(name, lr, wd, steps):
    x, y, params = _problem()

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(x @ p["w"] + p["b"], y).mean()

    tx = make_optimizer(preset("paper", optimizer=name, learning_rate=lr, weight_decay=wd))
    params = jax.tree_util.tree_map(jnp.asarray, params)
    state = tx.init(params)
    for _ in range(steps):  # as the train step applies it (one pass per parameter on a CPU)
        params, state = apply_optimizer(tx, jax.grad(loss)(params), state, params)
    return params


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_matches_torch(name):
    torch = pytest.importorskip("torch")
    lr, wd, steps = 0.05, 0.1, 5
    x, y, init = _problem()
    w = torch.tensor(init["w"], requires_grad=True)
    b = torch.tensor(init["b"], requires_grad=True)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    opt = cls([w, b], lr=lr, weight_decay=wd)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(torch.tensor(x) @ w + b, torch.tensor(y)).backward()
        opt.step()
    ours = _jax_run(name, lr, wd, steps)
    np.testing.assert_allclose(ours["w"], w.detach().numpy(), rtol=1e-4, atol=1e-5)  # float32 rounding
    np.testing.assert_allclose(ours["b"], b.detach().numpy(), rtol=1e-4, atol=1e-5)  # float32 rounding


def test_coupled_and_decoupled_decay_differ():
    a, w = _jax_run("adam", 0.05, 0.1, 3), _jax_run("adamw", 0.05, 0.1, 3)
    assert not np.allclose(a["w"], w["w"])


def test_the_template_describes_the_initial_state_without_drawing_it():
    spec = InputSpec(clips=2, clip_length=4, image_size=16, spectrogram_shape=(16, 16),
                     num_classes=10)
    run = create_run(preset("smoke"), spec)
    template = run.template
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree_util.tree_leaves(template))
    initial = run.initial_state()
    assert jax.tree_util.tree_structure(template) == jax.tree_util.tree_structure(initial)
    described = jax.tree_util.tree_map(lambda x: (x.shape, np.dtype(x.dtype)), template)
    drawn = jax.tree_util.tree_map(lambda x: (x.shape, np.dtype(x.dtype)), initial)
    assert described == drawn and len(jax.tree_util.tree_leaves(initial)) > 50
