"""C3D: parity with a PyTorch C3D at the real clip shape (features and Sports-1M logits), the
fc6 flattening order, parameter counts, the classifier in conversion, the CLI end to end."""
import functools
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parity_helpers import assert_parity, flax_param_count

from pisa_jax.convert import convert_state_dict, load_converted, main
from pisa_jax.models import C3D
from pisa_jax.models.c3d import pool5_shape
from pisa_jax.models.layers import torch_max_pool

NARROW = 4  # base_width of the fast tests: every layer 16x narrower than the real net


@pytest.fixture(scope="module")
def torch_c3d():
    """tests/models/torch_c3d.py, the PyTorch reference; skips without PyTorch (an extra)."""
    pytest.importorskip("torch", reason="needs PyTorch (pip install 'pisa-jax[torch]')")
    path = Path(__file__).parent / "torch_c3d.py"
    spec = importlib.util.spec_from_file_location("torch_c3d", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(name, got, want):
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert_parity(name, float(np.abs(got - want).max()), float(np.abs(want).max()))


def _apply(model, variables, x_ncthw):
    """The Flax model on a PyTorch-layout clip batch, in eval mode."""
    apply = jax.jit(functools.partial(model.apply, train=False))
    return np.asarray(apply(variables, np.moveaxis(x_ncthw, 1, -1)))


def _random_clip(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.slow
def test_parity_real_clip(torch_c3d):
    """The Sports-1M net on one 16x112x112 clip: fc6 features and the 487 logits."""
    import torch
    torch_model = torch_c3d.torch_c3d(487)
    x = _random_clip((1, 3, 16, 112, 112))
    with torch.no_grad():
        want_features = torch_model.features(torch.from_numpy(x))
        want_logits = torch_model.fc8(torch.relu(torch_model.fc7(want_features))).numpy()
    state = torch_model.state_dict()

    model = C3D(487)
    variables, report = convert_state_dict(state, model, strict=True)
    assert len(report.copied) == 22 and not report.skipped and not report.left_initialised
    _check("c3d 487 logits 16x112x112", _apply(model, variables, x), want_logits)

    model = C3D()
    variables, report = convert_state_dict(state, model, strict=True)
    assert len(report.copied) == 18 and not report.left_initialised
    assert report.skipped == [(f"{layer}.{field}", "the model has no classifier (num_classes=None)")
                              for layer in ("fc7", "fc8") for field in ("weight", "bias")]
    _check("c3d fc6 features 16x112x112", _apply(model, variables, x), want_features.numpy())


def test_flatten_order_in_time_height_width(torch_c3d):
    """A 32x32x32 clip leaves pool5 at 2x2x2, so a wrong order in T, H or W, or of C against
    them, changes the features; the real clip's 1x4x4 would not test T. fc6's kernel is the
    PyTorch weight transposed, nothing more: the model flattens in PyTorch's order."""
    import torch
    clip = (32, 32, 32)
    assert pool5_shape(clip) == (2, 2, 2)
    torch_model = torch_c3d.torch_c3d(10, base_width=NARROW, clip=clip)
    x = _random_clip((2, 3, *clip), seed=1)
    with torch.no_grad():
        want = torch_model(torch.from_numpy(x)).numpy()
    model = C3D(10, base_width=NARROW, clip_shape=clip)
    variables, _ = convert_state_dict(torch_model.state_dict(), model, strict=True)
    np.testing.assert_array_equal(variables["params"]["fc6"]["kernel"],
                                  torch_model.fc6.weight.detach().numpy().T)
    np.testing.assert_array_equal(variables["params"]["conv3a"]["kernel"],
                                  torch_model.conv3a.weight.detach().numpy().transpose(
                                      2, 3, 4, 1, 0))
    _check("c3d narrow 32x32x32", _apply(model, variables, x), want)
    # Dropout acts between the fc layers in training only.
    trained = jax.jit(lambda v, x: model.apply(v, x, train=True,
                                               rngs={"dropout": jax.random.PRNGKey(0)}))(
        variables, np.moveaxis(x, 1, -1))
    assert np.abs(np.asarray(trained) - want).max() > 1e-2



def test_param_counts(torch_c3d):
    import torch
    with torch.device("meta"):  # shapes only, no memory
        torch_model = torch_c3d.torch_c3d(487)
    expected = sum(p.numel() for p in torch_model.parameters())
    print(f"C3D Sports-1M parameters: {expected:,}")
    assert flax_param_count(C3D(487)) == expected
    classifier = sum(p.numel() for layer in (torch_model.fc7, torch_model.fc8)
                     for p in layer.parameters())
    assert flax_param_count(C3D()) == expected - classifier
    assert C3D().feature_dim == 4096


def test_classifier_of_another_size(torch_c3d):
    """fc6 and fc7 come from the file, fc8 (487 Sports-1M classes) is skipped and reported."""
    state = torch_c3d.torch_c3d(487, base_width=NARROW).state_dict()
    variables, report = convert_state_dict(state, C3D(10, base_width=NARROW), strict=True)
    assert report.skipped == [("fc8.weight", "487 classes in the file, the model has 10"),
                              ("fc8.bias", "487 classes in the file, the model has 10")]
    assert report.left_initialised == ["params/fc8/bias", "params/fc8/kernel"]
    assert variables["params"]["fc8"]["kernel"].shape == (256, 10)
    np.testing.assert_array_equal(variables["params"]["fc7"]["bias"], state["fc7.bias"].numpy())


def test_cli_converts_a_sports1m_state_dict(torch_c3d, tmp_path, capsys):
    """`--arch c3d --source c3d` on a narrow state dict saved in torch.save's legacy format, as
    the published c3d.pickle is; the converted features equal PyTorch's."""
    import torch
    torch_model = torch_c3d.torch_c3d(487, base_width=NARROW)
    path = tmp_path / "c3d.pickle"
    torch.save(torch_model.state_dict(), path, _use_new_zipfile_serialization=False)
    out = tmp_path / "c3d_sports1m"
    assert main(["--arch", "c3d", "--source", "c3d", "--base_width", str(NARROW), str(path),
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert "layout c3d: copied 18 tensors, adapted 0, skipped 4, left initialised 0" in printed
    assert "fc8.weight: the model has no classifier (num_classes=None)" in printed
    variables, meta = load_converted(out)
    assert (meta["arch"], meta["kind"], meta["source"], meta["base_width"]) == (
        "c3d", "C3D", "c3d", NARROW)
    assert set(variables["params"]) == {"conv1", "conv2", "conv3a", "conv3b", "conv4a",
                                        "conv4b", "conv5a", "conv5b", "fc6"}
    x = _random_clip((1, 3, 16, 112, 112), seed=2)
    with torch.no_grad():
        want = torch_model.features(torch.from_numpy(x)).numpy()
    _check("c3d narrow via the CLI", _apply(C3D(base_width=NARROW), variables, x), want)


def test_cli_refuses_c3d_weights_for_another_source(tmp_path, capsys):
    for args in (["--arch", "c3d", "--source", "hara"], ["--arch", "r3d18", "--source", "c3d"]):
        assert main(args + [str(tmp_path / "c3d.pickle"), str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --source: "), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("window, padding", [((1, 2, 2), (0, 0, 0)), ((2, 2, 2), (0, 1, 1))])
def test_pools_and_their_gradients_like_pytorch(torch_c3d, window, padding):
    """MaxPool3d(window, stride=window, padding) as pool1 and pool5 use it: -inf padding (all
    values negative), floor mode, and on ties the gradient to the first maximum."""
    import torch
    x = -1.0 - np.random.default_rng(3).integers(0, 3, (2, 4, 3, 7, 7)).astype(np.float32)
    cotangent_shape = torch.nn.MaxPool3d(window, window, padding)(torch.from_numpy(x)).shape
    cotangent = np.random.default_rng(4).standard_normal(cotangent_shape).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_()
    want = torch.nn.MaxPool3d(window, window, padding)(xt)
    want.backward(torch.from_numpy(cotangent))
    got, vjp = jax.vjp(lambda x: torch_max_pool(x, window, window, padding),
                       jnp.moveaxis(x, 1, -1))
    np.testing.assert_array_equal(np.asarray(got), np.moveaxis(want.detach().numpy(), 1, -1))
    grad = vjp(jnp.moveaxis(cotangent, 1, -1))[0]
    np.testing.assert_array_equal(np.asarray(grad), np.moveaxis(xt.grad.numpy(), 1, -1))


def test_rejects_bad_input():
    model = C3D(base_width=NARROW)
    with pytest.raises(ValueError, match=r"expects \[N, 16, 112, 112, 3\], got shape"):
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 112, 112, 3)),
                                          train=False))
    with pytest.raises(ValueError, match="too small"):
        C3D(clip_shape=(8, 112, 112))
