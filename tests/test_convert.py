"""Weight conversion: Algorithm 1 semantics, Hara's file format, the report, the CLI and its
one-line errors for bad files."""
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import traverse_util

from pisa_jax.convert import (ConversionError, clean_state_dict, convert_state_dict,
                              load_converted, load_weight_file, main, save_converted)
from pisa_jax.models import ResNet2D, ResNet3D

torch = pytest.importorskip("torch", reason="needs PyTorch (pip install 'pisa-jax[torch]')")

WIDTH = 8  # narrow Hara nets keep these tests fast; the parity tests use the real widths


@pytest.fixture(scope="module")
def hara_r3d18(torch_reference):
    """A narrow Hara R3D-18 with the 1039-class head of his KM checkpoints, random BN stats."""
    return torch_reference.randomize_batchnorm(
        torch_reference.hara_resnet3d(18, num_classes=1039, base_width=WIDTH))


@pytest.fixture(scope="module")
def r2d18_file(tmp_path_factory, torch_reference):
    """torchvision's resnet18 (ImageNet layout, random weights) saved as a .pth."""
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torch_reference.torchvision_resnet2d(18).state_dict(), path)
    return path


def test_hara_checkpoint_format(hara_r3d18, tmp_path, torch_reference):
    """{"state_dict": {"module." + key: ...}, "arch", "epoch", "optimizer"} as Hara saves it; the
    1039-class fc is skipped for a backbone; features equal PyTorch's pooled features."""
    path = tmp_path / "r3d18_KM_200ep.pth"
    optimizer = torch.optim.SGD(hara_r3d18.parameters(), lr=0.1, momentum=0.9)
    torch.save({"epoch": 200, "arch": "resnet-18", "optimizer": optimizer.state_dict(),
                "state_dict": {f"module.{k}": v for k, v in hara_r3d18.state_dict().items()}},
               path)
    model = ResNet3D(18, base_width=WIDTH)
    variables, report = convert_state_dict(load_weight_file(path), model, source=path)
    assert report.skipped == [("fc.weight", "the model has no classifier (num_classes=None)"),
                              ("fc.bias", "the model has no classifier (num_classes=None)")]
    assert not report.left_initialised and not report.adapted
    assert len(report.copied) == 100  # 20 convs + 20 BNs x 4 tensors
    assert not any("num_batches_tracked" in entry for entry in report.copied)

    x = torch.from_numpy(torch_reference.random_input((2, 3, 8, 32, 32)))
    with torch.no_grad():
        want = torch.flatten(_hara_features(hara_r3d18, x), 1).numpy()
    got = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(
        variables, np.moveaxis(x.numpy(), 1, -1)))
    np.testing.assert_allclose(got, want, atol=1e-4 * max(1, np.abs(want).max()))


def _hara_features(model, x):  # Hara's pooled features: everything before fc
    x = model.maxpool(torch.relu(model.bn1(model.conv1(x))))
    for stage in range(1, 5):
        x = getattr(model, f"layer{stage}")(x)
    return model.avgpool(x)


def test_classifier_of_another_size_is_skipped_and_reported(hara_r3d18):
    model = ResNet3D(18, num_classes=10, base_width=WIDTH)
    variables, report = convert_state_dict(hara_r3d18.state_dict(), model)
    assert report.skipped == [("fc.weight", "1039 classes in the file, the model has 10"),
                              ("fc.bias", "1039 classes in the file, the model has 10")]
    assert report.left_initialised == ["params/fc/bias", "params/fc/kernel"]
    assert variables["params"]["fc"]["kernel"].shape == (8 * WIDTH, 10)
    np.testing.assert_array_equal(  # conv (O, I, T, H, W) -> (T, H, W, I, O)
        variables["params"]["conv1"]["kernel"],
        hara_r3d18.conv1.weight.detach().numpy().transpose(2, 3, 4, 1, 0))
    np.testing.assert_array_equal(variables["batch_stats"]["layer2_0"]["downsample_bn"]["var"],
                                  hara_r3d18.layer2[0].downsample[1].running_var.numpy())


def test_shape_mismatch_is_an_error_naming_both_shapes(hara_r3d18):
    state = dict(hara_r3d18.state_dict())
    state["layer4.1.conv2.weight"] = torch.zeros(8 * WIDTH, 8 * WIDTH, 1, 3, 3)
    model = ResNet3D(18, base_width=WIDTH)
    with pytest.raises(ConversionError, match=r"layer4\.1\.conv2\.weight has shape "
                       r"\(64, 64, 1, 3, 3\), the model needs \(64, 64, 3, 3, 3\)"):
        convert_state_dict(state, model)
    variables, report = convert_state_dict(state, model, skip_mismatched=True)
    assert ("layer4.1.conv2.weight", "layer4.1.conv2.weight has shape (64, 64, 1, 3, 3), "
            "the model needs (64, 64, 3, 3, 3)") in report.skipped
    assert report.left_initialised == ["params/layer4_1/conv2/kernel"]
    assert variables["params"]["layer4_1"]["conv2"]["kernel"].shape == (3, 3, 3, 64, 64)


def test_weights_of_another_depth(hara_r3d18, torch_reference):
    """Algorithm 1 loads what matches and reports the rest; strict (the CLI default) refuses."""
    deeper = ResNet3D(34, base_width=WIDTH)
    with pytest.raises(ConversionError, match=r"does not fit the hara model: 80 model tensors "
                       r"not in the file \(e\.g\. batch_stats/layer1_2/bn1/mean"):
        convert_state_dict(hara_r3d18.state_dict(), deeper, strict=True)
    shallower = ResNet3D(10, base_width=WIDTH)
    with pytest.raises(ConversionError, match="40 file tensors unused"):
        convert_state_dict(hara_r3d18.state_dict(), shallower, strict=True)
    _, report = convert_state_dict(hara_r3d18.state_dict(), shallower)
    assert ("layer1.1.conv1.weight", "no such layer in this hara model") in report.skipped


def test_another_layout(torch_reference):
    """torchvision's r3d_18 as Hara's: only the shared names (downsample, fc) would match."""
    torchvision_r3d = torch_reference.torchvision_video_resnet(18).state_dict()
    with pytest.raises(ConversionError, match="does not fit the hara model: 85 file tensors "
                                              r"unused \(e\.g\. stem\.0\.weight"):
        convert_state_dict(torchvision_r3d, ResNet3D(18), strict=True)
    stem_only = {k: v for k, v in torchvision_r3d.items() if k.startswith("stem.")}
    with pytest.raises(ConversionError, match="no tensor matches the hara layout "
                                              r"\(first keys: stem\.0\.weight"):
        convert_state_dict(stem_only, ResNet3D(18))


def test_clean_state_dict():
    state = {"module.conv1.weight": torch.ones(2, 3, dtype=torch.bfloat16),
             "module.bn1.num_batches_tracked": torch.tensor(5), "note": "not a tensor"}
    arrays = clean_state_dict({"state_dict": state, "epoch": 3})
    assert set(arrays) == {"conv1.weight", "bn1.num_batches_tracked"}
    assert arrays["conv1.weight"].dtype == np.float32
    with pytest.raises(ConversionError, match="holds a list, not a state dict"):
        clean_state_dict([torch.ones(2)])


def test_safetensors_and_checkpoint_round_trip(tmp_path, torch_reference):
    from safetensors.numpy import save_file
    state = {k: v.numpy() for k, v in torch_reference.torchvision_resnet2d(18).state_dict().items()}
    save_file(state, tmp_path / "resnet18.safetensors")
    loaded = load_weight_file(tmp_path / "resnet18.safetensors")
    assert set(loaded) == set(state)
    variables, report = convert_state_dict(loaded, ResNet2D(18, in_channels=1))
    save_converted(tmp_path / "out", variables, {"arch": "r2d18", "report": report.to_dict()})
    restored, meta = load_converted(tmp_path / "out")
    assert meta["arch"] == "r2d18" and meta["report"]["adapted"] == report.adapted
    for a, b in zip(*(sorted(_flat(tree).items()) for tree in (variables, restored))):
        assert a[0] == b[0] and isinstance(b[1], np.ndarray)
        np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ConversionError, match="already holds a converted checkpoint"):
        save_converted(tmp_path / "out", variables, {})
    with pytest.raises(ConversionError, match="no meta.json"):
        load_converted(tmp_path / "nothing")
    shutil.rmtree(tmp_path / "out" / "variables")
    with pytest.raises(ConversionError, match="cannot be restored"):
        load_converted(tmp_path / "out")


def _flat(tree):
    return traverse_util.flatten_dict(tree)


def test_cli_converts_imagenet_resnet18_for_the_aural_branch(r2d18_file, tmp_path, capsys):
    out = tmp_path / "r2d18"
    assert main(["--arch", "r2d18", "--source", "torchvision", str(r2d18_file), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "copied 100 tensors, adapted 1, skipped 2, left initialised 0" in printed
    variables, meta = load_converted(out)
    assert variables["params"]["conv1"]["kernel"].shape == (7, 7, 1, 64)
    assert "fc" not in variables["params"]
    assert (meta["arch"], meta["kind"], meta["in_channels"], meta["num_classes"]) == (
        "r2d18", "ResNet2D", 1, None)


def _write_bad_files(tmp, r2d18_file, torch_reference):
    """name -> (path, CLI arguments, expected problem)."""
    good = r2d18_file.read_bytes()
    (tmp / "truncated.pth").write_bytes(good[: len(good) // 2])
    (tmp / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp / "notes.pth").write_text("these are not weights\n")
    (tmp / "empty.pth").write_bytes(b"")
    (tmp / "truncated.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    torch.save(torch.nn.Linear(2, 2), tmp / "module_object.pth")
    torch.save([torch.ones(2)], tmp / "tensor_list.pth")
    stem_only = {k: v for k, v in torch_reference.torchvision_video_resnet(18).state_dict().items()
                 if k.startswith("stem.")}
    torch.save(stem_only, tmp / "r3d_18_torchvision.pth")
    r2d = ["--arch", "r2d18", "--source", "torchvision"]
    return {
        "missing": (tmp / "missing.pth", r2d, "no such file"),
        "truncated": (tmp / "truncated.pth", r2d, "truncated or damaged"),
        "random bytes": (tmp / "random.pth", r2d, "not a PyTorch checkpoint"),
        "text file": (tmp / "notes.pth", r2d, "not a PyTorch checkpoint"),
        "empty": (tmp / "empty.pth", r2d, "is empty"),
        "bad safetensors": (tmp / "truncated.safetensors", r2d, "not a readable safetensors"),
        "pickled object": (tmp / "module_object.pth", r2d, "holds Python objects besides tensors"),
        "not a dict": (tmp / "tensor_list.pth", r2d, "holds a list, not a state dict"),
        "2D weights for 3D": (r2d18_file, ["--arch", "r3d18", "--source", "hara"],
                              "conv1.weight has shape (64, 3, 7, 7), the model needs "
                              "(64, 3, 7, 7, 7)"),
        "other stem": (tmp / "r3d_18_torchvision.pth", ["--arch", "r3d18", "--source", "hara"],
                       "no tensor matches the hara layout"),
        "other depth": (r2d18_file, ["--arch", "r2d34", "--source", "torchvision"],
                        "does not fit the torchvision-2d model"),
    }


def test_cli_bad_files_give_one_error_line(r2d18_file, tmp_path, capsys, torch_reference):
    for name, (path, args, problem) in _write_bad_files(tmp_path, r2d18_file,
                                                        torch_reference).items():
        code = main(args + [str(path), str(tmp_path / "out")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0, name
        assert len(err) == 1 and err[0].startswith(f"error: {path}: "), (name, err)
        assert problem in err[0], (name, err)
    assert not (tmp_path / "out").exists()


def test_cli_as_a_module(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pisa_jax.convert", "--arch", "r3d18",
                             "--source", "hara", str(tmp_path / "none.pth"), str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'none.pth'}: no such file"


def test_renamed_entry_points():
    """The training package has its own build_model / init_variables: ours name the arch."""
    import pisa_jax.convert as convert
    assert callable(convert.arch_model) and callable(convert.init_arch_variables)
    assert not hasattr(convert, "build_model") and not hasattr(convert, "init_variables")
    model = convert.arch_model("r2d18", "torchvision", num_classes=10, base_width=8)
    assert (type(model), model.num_classes, model.in_channels, model.base_width) == (
        ResNet2D, 10, 1, 8)


def _one_error_line(capsys, expected_start):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(expected_start), err
    return err[0]


@pytest.mark.parametrize("flag, value", [("--in_channels", "0"), ("--in_channels", "-1"),
                                         ("--num_classes", "0"), ("--num_classes", "-3"),
                                         ("--conv1_t_stride", "0"), ("--base_width", "0")])
def test_cli_rejects_non_positive_sizes(r2d18_file, tmp_path, capsys, flag, value):
    """Each used to end in a traceback (ZeroDivisionError, a negative shape) or, for
    --conv1_t_stride 0, in a written checkpoint that no model can run."""
    arch = ["--arch", "r3d18", "--source", "hara"] if flag == "--conv1_t_stride" else [
        "--arch", "r2d18", "--source", "torchvision"]
    assert main(arch + [flag, value, str(r2d18_file), str(tmp_path / "out")]) == 1
    line = _one_error_line(capsys, f"error: {flag}: ")
    assert f"must be a positive integer, got {value}" in line
    assert not (tmp_path / "out").exists()


def test_cli_output_that_is_a_file(r2d18_file, tmp_path, capsys):
    """Used to end in a FileExistsError traceback, after the whole conversion."""
    out = tmp_path / "notes.txt"
    out.write_text("mine\n")
    args = ["--arch", "r2d18", "--source", "torchvision", str(r2d18_file)]
    assert main(args + [str(out)]) == 1
    assert _one_error_line(capsys, f"error: {out}: ") == (
        f"error: {out}: exists and is not a directory")
    assert main(args + ["--overwrite", str(out / "sub")]) == 1
    assert "is not a directory" in _one_error_line(capsys, f"error: {out / 'sub'}: ")
    assert out.read_text() == "mine\n" and sorted(tmp_path.iterdir()) == [out]


def test_cli_refuses_abbreviated_flags(tmp_path, capsys):
    """`--num_class 10` used to pass as --num_classes; a typo must not change the output."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--arch", "r2d18", "--source", "torchvision", "--num_class", "10",
              str(tmp_path / "in.pth"), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --num_class" in capsys.readouterr().err


def test_overwrite_keeps_the_old_checkpoint_when_writing_fails(tmp_path, monkeypatch):
    """The new checkpoint is complete before the old one is touched: a failing write (a full
    disk) leaves the old checkpoint loadable and no temporary files behind."""
    import orbax.checkpoint as ocp
    old = {"params": {"w": np.arange(3, dtype=np.float32)}}
    save_converted(tmp_path / "out", old, {"arch": "old"})
    before = sorted(p.name for p in (tmp_path / "out").iterdir())

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ocp.StandardCheckpointer, "save", disk_full)
    with pytest.raises(ConversionError, match="cannot write the checkpoint.*No space left"):
        save_converted(tmp_path / "out", {"params": {"w": np.zeros(3, np.float32)}},
                       {"arch": "new"}, overwrite=True)
    monkeypatch.undo()
    variables, meta = load_converted(tmp_path / "out")
    assert meta["arch"] == "old"
    np.testing.assert_array_equal(variables["params"]["w"], old["params"]["w"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before == [
        "meta.json", "variables"]

    save_converted(tmp_path / "out", {"params": {"w": np.ones(3, np.float32)}},
                   {"arch": "new"}, overwrite=True)
    variables, meta = load_converted(tmp_path / "out")
    assert meta["arch"] == "new" and variables["params"]["w"].tolist() == [1, 1, 1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["meta.json", "variables"]
