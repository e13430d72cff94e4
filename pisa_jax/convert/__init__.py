"""PyTorch weights -> Flax variables of `ResNet3D` / `ResNet2D` / `C3D`, and the CLI that does it.

Sources: Hara's `r3d{18,34,50}_KM_200ep.pth` (weights under "state_dict", maybe a "module."
prefix, a 1039-class fc), torchvision's `resnet18/34/50` and `video.r3d_18` state dicts, the
Sports-1M C3D state dict `c3d.pickle` (conv1 ... fc8, 487 classes), as .pth / .pickle
(`torch.load(weights_only=True)`, never a plain unpickle) or .safetensors (no torch needed).

Semantics are the paper's Algorithm 1: every tensor whose name and shape match is copied. What
is not copied is reported, never silently dropped: skipped file tensors (e.g. the classifier,
fc or C3D's fc7 + fc8, when the model has none, or its last layer for another class count), and
model parameters left initialised. A name that matches with the wrong shape is an error naming
both shapes, unless skip_mismatched. A 3-channel conv1 is summed over its input channels when
the model has one (a grey image then gives the response the RGB kernel gave to that grey as
RGB). The CLI is stricter by default: a file that does not cover the model one to one (apart
from the classifier) is refused, so weights of another depth or layout fail loudly
(--allow_partial accepts them).

Modules: `table` (the PyTorch key -> Flax path table), `state_dict` (Algorithm 1 and its
report), `files` (.pth / .safetensors in; orbax + meta.json out and back), `cli`.

    python -m pisa_jax.convert --arch r3d18 --source hara r3d18_KM_200ep.pth checkpoints/r3d18_hara
    python -m pisa_jax.convert --arch c3d --source c3d c3d.pickle checkpoints/c3d_sports1m

Errors the user can fix (a bad file, flag value or output path) are ConversionError: the CLI
prints them as one `error: <what>: <problem>` line and exits 1, having written nothing.
"""
from pisa_jax.convert.cli import arch_model, main
from pisa_jax.convert.files import (check_output_dir, load_converted, load_weight_file,
                                    save_converted)
from pisa_jax.convert.state_dict import (ConversionError, ConversionReport, clean_state_dict,
                                         convert_state_dict, init_arch_variables)
from pisa_jax.convert.table import CLASSIFIERS, LAYOUTS, flax_path, layout_of

__all__ = ["CLASSIFIERS", "LAYOUTS", "ConversionError", "ConversionReport", "arch_model",
           "check_output_dir", "clean_state_dict", "convert_state_dict", "flax_path",
           "init_arch_variables", "layout_of", "load_converted", "load_weight_file", "main",
           "save_converted"]
