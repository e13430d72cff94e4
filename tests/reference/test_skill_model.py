"""The PyTorch skill model of the side-by-side benchmark computes what the JAX model computes:
the same logits and probabilities (eval mode, also through its eval step) and the same training
loss (train mode: batch statistics, the sum of three cross-entropies) from the same uint8
inputs, after converting its weights."""
import functools

import jax
import numpy as np
import pytest

pytest.importorskip("torch", reason="needs PyTorch (pip install 'pisa-jax[torch]')")
pytest.importorskip("torchvision", reason="needs torchvision (pip install 'pisa-jax[torch]')")

import torch  # noqa: E402

from pisa_jax.convert import convert_state_dict  # noqa: E402
from pisa_jax.data.pipeline import NORMALIZATION, prepare_inputs  # noqa: E402
from pisa_jax.models import C3D, ResNet2D, ResNet3D, SkillModel  # noqa: E402
from pisa_jax.models import c3d as jax_c3d  # noqa: E402
from pisa_jax.reference import skill_model  # noqa: E402
from pisa_jax.train.steps import head_losses  # noqa: E402

WIDTH, HIDDEN, CLASSES = 4, 8, 10


def _linear(layer):
    return {"kernel": layer.weight.detach().numpy().T, "bias": layer.bias.detach().numpy()}


def _jax_variables(torch_model, visual, aural):
    """The torch model's weights as the JAX SkillModel's variables (backbones converted by
    pisa_jax.convert, heads Linear -> Dense)."""
    v, _ = convert_state_dict(torch_model.visual_backbone.state_dict(), visual)
    a, _ = convert_state_dict(torch_model.aural_backbone.state_dict(), aural)
    params = {"visual_backbone": v["params"], "aural_backbone": a["params"]}
    for head in ("visual", "aural", "multimodal"):
        module = getattr(torch_model, f"{head}_head")
        params[f"{head}_head"] = {"hidden": _linear(module.hidden), "out": _linear(module.out)}
    stats = {k: x["batch_stats"] for k, x in (("visual_backbone", v), ("aural_backbone", a))
             if x.get("batch_stats")}
    return {"params": params, "batch_stats": stats}


def _randomize_batchnorm(model):
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))


@pytest.mark.parametrize("backbone", ["resnet3d", "c3d"])
def test_same_logits_and_training_loss_as_the_jax_model(backbone):
    clip = (16, 16, 16) if backbone == "c3d" else (4, 16, 16)
    torch_model = skill_model.SkillModel(visual_backbone=backbone, depths=(10, 18),
                                         num_classes=CLASSES, hidden=HIDDEN, dropout=0.0,
                                         base_width=WIDTH, clip_shape=clip)
    _randomize_batchnorm(torch_model)
    visual = (C3D(None, base_width=WIDTH, clip_shape=clip) if backbone == "c3d"
              else ResNet3D(10, None, base_width=WIDTH))
    aural = ResNet2D(18, None, in_channels=1, base_width=WIDTH)
    variables = _jax_variables(torch_model, visual, aural)
    model = SkillModel(visual_backbone=backbone, visual_depth=10, aural_depth=18,
                       num_classes=CLASSES, dropout=0.0, hidden=HIDDEN, base_width=WIDTH)

    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (2, 2, *clip, 3), dtype=np.uint8)
    spectrogram = rng.integers(0, 256, (2, 32, 32), dtype=np.uint8)
    labels = np.array([3, 7], np.int32)
    mean, std = (jax_c3d.INPUT_MEAN, jax_c3d.INPUT_STD) if backbone == "c3d" else NORMALIZATION["hara"]
    inputs = prepare_inputs({"video": video, "spectrogram": spectrogram}, mean, std)

    torch_inputs = [torch.from_numpy(video), torch.from_numpy(spectrogram)]
    torch_model.eval()
    with torch.no_grad():
        x, spec = skill_model.prepare_inputs(*torch_inputs, mean, std)
        want = {h: t.numpy() for h, t in torch_model(x, spec).items()}
    got = jax.jit(functools.partial(model.apply, train=False))(
        variables, inputs["video"], inputs["spectrogram"])["logits"]
    for head in skill_model.HEADS:
        scale = max(1.0, float(np.abs(want[head]).max()))
        assert float(np.abs(np.asarray(got[head]) - want[head]).max()) <= 1e-4 * scale, head
    # the benchmark's PyTorch eval step: the same model in eval mode, each head's probabilities
    probs = skill_model.make_eval_step(torch_model, mean=mean, std=std)(*torch_inputs)
    for head in skill_model.HEADS:
        np.testing.assert_allclose(probs[head].numpy(), jax.nn.softmax(got[head]), atol=1e-5)

    torch_model.train()
    with torch.no_grad():
        torch_loss = float(skill_model.loss_of(torch_model, *torch_inputs,
                                               torch.from_numpy(labels).long(), mean, std))

    def jax_loss(variables):
        out, _ = model.apply(variables, inputs["video"], inputs["spectrogram"], train=True,
                             mutable=["batch_stats"])
        return sum(head_losses(out["logits"], labels, np.ones(2, bool)).values())

    np.testing.assert_allclose(float(jax.jit(jax_loss)(variables)), torch_loss, rtol=1e-4)


def test_the_torch_train_step_learns():
    """Three Adam steps on one batch lower its loss (the benchmark times a real step)."""
    model = skill_model.SkillModel(depths=(10, 18), base_width=WIDTH, hidden=HIDDEN,
                                   dropout=0.0, clip_shape=(4, 16, 16))
    mean, std = NORMALIZATION["hara"]
    step = skill_model.make_train_step(model, mean=mean, std=std, learning_rate=1e-2,
                                       weight_decay=0.1)
    rng = np.random.default_rng(0)
    batch = (torch.from_numpy(rng.integers(0, 256, (4, 2, 4, 16, 16, 3), dtype=np.uint8)),
             torch.from_numpy(rng.integers(0, 256, (4, 32, 32), dtype=np.uint8)),
             torch.tensor([0, 1, 2, 3]))
    losses = [float(step(*batch)) for _ in range(4)]
    assert losses[-1] < losses[0]
