"""--visual_init / --aural_init: converted backbones go into the SkillModel, shapes checked."""
import jax
import numpy as np
import pytest

from pisa_jax.convert import init_variables, save_converted
from pisa_jax.models import ResNet2D, ResNet3D
from pisa_jax.train import preset
from pisa_jax.train.init_weights import InitWeightsError
from pisa_jax.train.setup import InputSpec, build

SPEC = InputSpec(clips=2, clip_length=4, image_size=16, spectrogram_shape=(16, 16), num_classes=10)


def _converted(tmp_path, name, model):
    variables = init_variables(model, jax.random.key(7, impl="rbg"))
    save_converted(tmp_path / name, variables, {"arch": name, "source": "test"})
    return variables


def test_converted_backbones_replace_the_random_ones(tmp_path):
    visual = _converted(tmp_path, "r3d10", ResNet3D(10, 10, base_width=2))  # with a classifier
    aural = _converted(tmp_path, "r2d18", ResNet2D(18, base_width=2))
    config = preset("smoke", visual_init=str(tmp_path / "r3d10"), aural_init=str(tmp_path / "r2d18"))
    run = build(config, SPEC)
    for name, ours in (("visual_backbone", visual), ("aural_backbone", aural)):
        for collection in ("params", "batch_stats"):
            theirs = {k: v for k, v in ours[collection].items() if k != "fc"}
            jax.tree_util.tree_map(np.testing.assert_array_equal,
                                   getattr(run.state, collection)[name], theirs)
    assert any("left out the converted classifier (fc" in note for note in run.notes)
    # the optimiser starts from the converted values too
    assert run.state.opt_state is not None


def test_weights_of_another_depth_are_refused(tmp_path):
    _converted(tmp_path, "r2d34", ResNet2D(34, base_width=2))
    with pytest.raises(InitWeightsError, match=r"r2d34: .* not in aural_backbone .*another depth"):
        build(preset("smoke", aural_init=str(tmp_path / "r2d34")), SPEC)
    _converted(tmp_path, "r2d18w4", ResNet2D(18, base_width=4))
    with pytest.raises(InitWeightsError, match=r"r2d18w4: params/aural_backbone/.* has shape"):
        build(preset("smoke", aural_init=str(tmp_path / "r2d18w4")), SPEC)
