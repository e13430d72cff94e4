"""SkillModel: outputs per modality set, clip averaging, the multimodal head's stop_gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pisa_jax.models import C3D, ResNet3D, SkillModel

TINY = dict(visual_depth=10, aural_depth=18, base_width=4, hidden=16)
TINY_C3D = dict(TINY, visual_backbone="c3d")
C3D_CLIP = (16, 16, 16)  # the smallest clip C3D's five pools take
BATCH, CLIPS = 2, 3


def _inputs(per_clip_spectrogram=False, clip=(4, 16, 16)):
    keys = jax.random.split(jax.random.PRNGKey(7), 2)
    video = jax.random.normal(keys[0], (BATCH, CLIPS, *clip, 3))  # [B, clips, T, H, W, 3]
    spec_shape = (BATCH, CLIPS, 32, 32) if per_clip_spectrogram else (BATCH, 32, 32)
    return video, jax.random.uniform(keys[1], spec_shape)


def _cross_entropy(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def test_outputs_of_the_fusion_model(quick_init):
    model = SkillModel(**TINY)
    video, spectrogram = _inputs()
    variables = quick_init(model, video, spectrogram, train=False)
    assert set(variables["params"]) == {"visual_backbone", "aural_backbone", "visual_head",
                                        "aural_head", "multimodal_head"}
    assert variables["params"]["multimodal_head"]["hidden"]["kernel"].shape == (64, 16)
    out = jax.jit(lambda v: model.apply(v, video, spectrogram, train=False))(variables)
    assert {k: v.shape for k, v in out["logits"].items()} == {
        "visual": (BATCH, 10), "aural": (BATCH, 10), "multimodal": (BATCH, 10)}
    assert {k: v.shape for k, v in out["features"].items()} == {"visual": (BATCH, 32),
                                                                "aural": (BATCH, 32)}
    # Algorithm 3: the sample's visual feature is the mean of its clips' features.
    backbone = {c: variables[c]["visual_backbone"] for c in ("params", "batch_stats")}
    clips = video.reshape((BATCH * CLIPS,) + video.shape[2:])
    per_clip = jax.jit(lambda v: ResNet3D(10, base_width=4).apply(v, clips, train=False))(backbone)
    np.testing.assert_allclose(out["features"]["visual"],
                               per_clip.reshape(BATCH, CLIPS, -1).mean(1), rtol=1e-5, atol=1e-6)


def test_c3d_as_the_visual_backbone(quick_init):
    """C3D's fc6 features (4096 at full width, 256 at base_width 4) are averaged over clips; its
    fc6 input size follows the clip shape of the video it is given."""
    model = SkillModel(**TINY_C3D)
    video, spectrogram = _inputs(clip=C3D_CLIP)
    variables = quick_init(model, video, spectrogram, train=False)
    backbone = variables["params"]["visual_backbone"]
    assert set(backbone) == {"conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a",
                             "conv5b", "fc6"}  # no classifier (fc7, fc8)
    assert backbone["fc6"]["kernel"].shape == (32 * 1 * 1 * 1, 256)  # pool5 of 16^3: 1x1x1
    assert variables["params"]["multimodal_head"]["hidden"]["kernel"].shape == (256 + 32, 16)
    out = jax.jit(lambda v: model.apply(v, video, spectrogram, train=False))(variables)
    assert {k: v.shape for k, v in out["features"].items()} == {"visual": (BATCH, 256),
                                                                "aural": (BATCH, 32)}
    clips = video.reshape((BATCH * CLIPS,) + video.shape[2:])
    c3d = C3D(None, base_width=4, clip_shape=C3D_CLIP)
    per_clip = jax.jit(lambda v: c3d.apply(v, clips, train=False))({"params": backbone})
    np.testing.assert_allclose(out["features"]["visual"],
                               per_clip.reshape(BATCH, CLIPS, -1).mean(1), rtol=1e-5, atol=1e-6)
    bigger = _inputs(clip=(16, 32, 32))[0]  # pool5 1x2x2: fc6 takes 4x the inputs
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), bigger, spectrogram,
                                               train=False))
    assert shapes["params"]["visual_backbone"]["fc6"]["kernel"].shape == (32 * 4, 256)
    with pytest.raises(ValueError, match="too small"):
        model.init(jax.random.PRNGKey(0), _inputs()[0], spectrogram, train=False)  # 4 frames


def test_one_spectrogram_per_clip_is_averaged(quick_init):
    model = SkillModel(**TINY, modalities=("aural",))
    _, spectrograms = _inputs(per_clip_spectrogram=True)  # [B, clips, H, W]
    variables = quick_init(model, None, spectrograms, train=False)
    apply = jax.jit(lambda v, s: model.apply(v, None, s, train=False))
    out = apply(variables, spectrograms)
    one_per_sample = [apply(variables, spectrograms[:, c]) for c in range(CLIPS)]  # [B, H, W]
    mean_of_clips = np.mean([o["features"]["aural"] for o in one_per_sample], axis=0)
    np.testing.assert_allclose(out["features"]["aural"], mean_of_clips, rtol=1e-5, atol=1e-6)
    assert out["features"]["aural"].shape == (BATCH, 32)


@pytest.mark.parametrize("modality", ["visual", "aural"])
def test_unimodal_models(quick_init, modality):
    model = SkillModel(**TINY, modalities=(modality,))
    video, spectrogram = _inputs()
    video, spectrogram = (video, None) if modality == "visual" else (None, spectrogram)
    variables = quick_init(model, video, spectrogram, train=False)
    assert set(variables["params"]) == {f"{modality}_backbone", f"{modality}_head"}
    out = jax.jit(lambda v: model.apply(v, video, spectrogram, train=False))(variables)
    assert set(out["logits"]) == {modality} and set(out["features"]) == {modality}


def test_dropout_only_in_training(quick_init):
    model = SkillModel(**TINY, modalities=("visual",))
    video, _ = _inputs()
    variables = quick_init(model, video, None, train=False)

    @jax.jit
    def visual_logits(key):  # [2, B, classes]: eval, then training mode, same dropout key
        return jnp.stack([
            model.apply(variables, video, None, train=train, mutable=["batch_stats"],
                        rngs={"dropout": key})[0]["logits"]["visual"] for train in (False, True)])

    def logits(train, seed):
        return np.asarray(visual_logits(jax.random.PRNGKey(seed))[int(train)])
    np.testing.assert_array_equal(logits(False, 0), logits(False, 1))
    assert not np.allclose(logits(True, 0), logits(True, 1))


@pytest.mark.parametrize("visual_backbone", ["resnet3d", "c3d"])
def test_multimodal_loss_does_not_reach_the_backbones(quick_init, visual_backbone):
    """stop_gradient: d(multimodal loss)/d(backbone) is exactly zero, its own head learns,
    and the unimodal losses do reach their backbones."""
    model = SkillModel(**(TINY_C3D if visual_backbone == "c3d" else TINY))
    video, spectrogram = _inputs(clip=C3D_CLIP if visual_backbone == "c3d" else (4, 16, 16))
    labels = jnp.array([0, 3])
    variables = quick_init(model, video, spectrogram, train=False)

    heads = ("visual", "aural", "multimodal")

    def losses(params):  # [3]: one cross-entropy per head
        out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, video,
                             spectrogram, train=True, mutable=["batch_stats"],
                             rngs={"dropout": jax.random.PRNGKey(0)})
        return jnp.stack([_cross_entropy(out["logits"][head], labels) for head in heads])

    # One forward, one batched backward: row i of every leaf is d(loss of heads[i]) / d(leaf).
    jacobian = jax.jit(jax.jacrev(losses))(variables["params"])

    def grads(head):
        row = heads.index(head)
        return {name: [np.asarray(leaf[row]) for leaf in jax.tree_util.tree_leaves(sub)]
                for name, sub in jacobian.items()}

    def all_zero(leaves):
        return all(np.all(leaf == 0) for leaf in leaves)

    multimodal = grads("multimodal")
    for name in ("visual_backbone", "aural_backbone", "visual_head", "aural_head"):
        assert all_zero(multimodal[name]), name
    assert not all_zero(multimodal["multimodal_head"])

    visual, aural = grads("visual"), grads("aural")
    assert not all_zero(visual["visual_backbone"]) and not all_zero(visual["visual_head"])
    assert all_zero(visual["aural_backbone"]) and all_zero(visual["multimodal_head"])
    assert not all_zero(aural["aural_backbone"]) and not all_zero(aural["aural_head"])
    assert all_zero(aural["visual_backbone"])


def test_bf16_compute_keeps_float32_parameters(quick_init):
    model = SkillModel(**TINY, dtype=jnp.bfloat16)
    video, spectrogram = _inputs()
    variables = quick_init(model, video, spectrogram, train=False)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables)} == {np.dtype("float32")}
    out = jax.jit(lambda v: model.apply(v, video, spectrogram, train=False))(variables)
    assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(out))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="modalities"):
        SkillModel(modalities=("visual", "text"))
    with pytest.raises(ValueError, match="modalities"):
        SkillModel(modalities=())
    with pytest.raises(ValueError, match="visual_backbone 'c2d' not supported"):
        SkillModel(visual_backbone="c2d")
    model = SkillModel(**TINY)
    with pytest.raises(ValueError, match="video must be"):
        model.init(jax.random.PRNGKey(0), None, jnp.zeros((1, 32, 32)), train=False)
