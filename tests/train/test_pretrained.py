"""--visual_init / --aural_init: converted backbones go into the SkillModel, shapes checked."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pisa_jax.convert import save_converted
from pisa_jax.models import ResNet2D, ResNet3D
from pisa_jax.train import preset
from pisa_jax.train.pretrained import InitWeightsError, load_pretrained, with_pretrained
from pisa_jax.train.state import InputSpec, create_run, dummy_inputs, skill_model

SPEC = InputSpec(clips=2, clip_length=4, image_size=16, spectrogram_shape=(16, 16), num_classes=10)


def _converted(tmp_path, name, model, quick_init):
    """A converted-weights folder holding numpy-initialised variables of `model`."""
    variables = quick_init(model, jnp.zeros(model.example_input().shape), train=False)
    save_converted(tmp_path / name, variables, {"arch": name, "source": "test"})
    return variables


def test_converted_backbones_replace_the_random_ones(tmp_path, quick_init):
    visual = _converted(tmp_path, "r3d10", ResNet3D(10, 10, base_width=2), quick_init)  # with fc
    aural = _converted(tmp_path, "r2d18", ResNet2D(18, base_width=2), quick_init)
    config = preset("smoke", visual_init=str(tmp_path / "r3d10"), aural_init=str(tmp_path / "r2d18"),
                    weight_decay=0.1)
    run = create_run(config, SPEC)
    state, notes = with_pretrained(run.initial_state(), config)
    for name, ours in (("visual_backbone", visual), ("aural_backbone", aural)):
        for collection in ("params", "batch_stats"):
            theirs = {k: v for k, v in ours[collection].items() if k != "fc"}
            jax.tree_util.tree_map(np.testing.assert_array_equal,
                                   getattr(state, collection)[name], theirs)
    assert any("left out the converted classifier (fc" in note for note in notes)
    # The optimiser starts from the converted values: with coupled L2 decay and a zero gradient,
    # Adam's first moment after one update is (1 - b1) * wd * params, of the converted kernel.
    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    _, opt_state = run.tx.update(zeros, state.opt_state, state.params)
    first_moment = opt_state[1].mu["aural_backbone"]["conv1"]["kernel"]
    np.testing.assert_allclose(first_moment, 0.1 * 0.1 * aural["params"]["conv1"]["kernel"],
                               rtol=1e-6)


def test_weights_of_another_depth_or_width_are_refused(tmp_path, quick_init):
    """Checked on the variables' shapes alone (eval_shape): nothing is compiled."""
    config = preset("smoke")
    shapes = jax.eval_shape(lambda: skill_model(config, 10).init(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
        *dummy_inputs(config.modalities, SPEC), train=False))
    _converted(tmp_path, "r2d34", ResNet2D(34, base_width=2), quick_init)
    with pytest.raises(InitWeightsError, match=r"r2d34: .* not in aural_backbone .*another depth"):
        load_pretrained(shapes, visual_init=None, aural_init=str(tmp_path / "r2d34"),
                        modalities=config.modalities)
    _converted(tmp_path, "r2d18w4", ResNet2D(18, base_width=4), quick_init)
    with pytest.raises(InitWeightsError, match=r"r2d18w4: params/aural_backbone/.* has shape"):
        load_pretrained(shapes, visual_init=None, aural_init=str(tmp_path / "r2d18w4"),
                        modalities=config.modalities)
    with pytest.raises(InitWeightsError, match="the aural branch is not built"):
        load_pretrained(shapes, visual_init=None, aural_init=str(tmp_path / "r2d34"),
                        modalities=("visual",))


def test_converted_c3d_leaves_out_fc7_and_fc8(tmp_path, quick_init):
    """C3D's classifier is fc7 + fc8 (pisa_jax.convert.CLASSIFIERS), not `fc`; fc6 stays. Its
    shape depends on the clip shape: weights converted for another clip size are refused."""
    from pisa_jax.models import C3D
    spec = InputSpec(clips=1, clip_length=16, image_size=16, spectrogram_shape=(16, 16),
                     num_classes=10)
    config = preset("smoke", visual_backbone="c3d")
    shapes = jax.eval_shape(lambda: skill_model(config, 10).init(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
        *dummy_inputs(config.modalities, spec), train=False))
    converted = _converted(tmp_path, "c3d", C3D(487, base_width=2, clip_shape=(16, 16, 16)),
                           quick_init)
    variables, notes = load_pretrained(shapes, visual_init=str(tmp_path / "c3d"), aural_init=None,
                                       modalities=config.modalities, visual_backbone="c3d")
    ours = variables["params"]["visual_backbone"]
    assert set(ours) == set(converted["params"]) - {"fc7", "fc8"}
    np.testing.assert_array_equal(ours["fc6"]["kernel"], converted["params"]["fc6"]["kernel"])
    assert any("left out the converted classifier (fc7, fc8; 4 params)" in n for n in notes)
    _converted(tmp_path, "c3d_32", C3D(487, base_width=2, clip_shape=(16, 32, 32)), quick_init)
    with pytest.raises(InitWeightsError, match="fc6/kernel has shape .*clip shape"):
        load_pretrained(shapes, visual_init=str(tmp_path / "c3d_32"), aural_init=None,
                        modalities=config.modalities, visual_backbone="c3d")
