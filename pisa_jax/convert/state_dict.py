"""Algorithm 1 of the paper: copy every tensor whose name and shape match onto the model's
variables, and report what was adapted, skipped and left initialised."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from pisa_jax.convert.table import (CLASSIFIERS, IGNORED_FIELDS, flax_path, layout_of, to_flax,
                                    torch_shape)
from pisa_jax.errors import UserError
from pisa_jax.models import C3D, ResNet2D, ResNet3D

Model = ResNet3D | ResNet2D | C3D


class ConversionError(UserError):
    """A weight file or state dict that cannot become the requested model's weights."""

    def __init__(self, source: Any, problem: str):
        self.source, self.problem = source, problem
        super().__init__(problem if source is None else f"{source}: {problem}")


@dataclasses.dataclass
class ConversionReport:
    """What a conversion did; printed by the CLI and stored in meta.json."""
    layout: str
    copied: list[str] = dataclasses.field(default_factory=list)  # "torch key -> flax path"
    adapted: list[str] = dataclasses.field(default_factory=list)  # copied after a change
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (key, why)
    left_initialised: list[str] = dataclasses.field(default_factory=list)  # flax paths

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def format(self, limit: int = 12) -> str:
        def listing(items):
            shown = [f"    {item}" for item in items[:limit]]
            return shown + ([f"    ... and {len(items) - limit} more"] if len(items) > limit else [])
        lines = [f"layout {self.layout}: copied {len(self.copied)} tensors, adapted "
                 f"{len(self.adapted)}, skipped {len(self.skipped)}, left initialised "
                 f"{len(self.left_initialised)}"]
        for title, items in (("adapted", self.adapted),
                             ("skipped", [f"{k}: {why}" for k, why in self.skipped]),
                             ("left initialised", self.left_initialised)):
            lines += [f"  {title}:"] + listing(items) if items else []
        return "\n".join(lines)


def clean_state_dict(obj: Any, source: Any = None) -> dict[str, np.ndarray]:
    """Unwrap {"state_dict": ...} (Hara's files also hold "arch", "epoch", "optimizer"), drop the
    DataParallel "module." prefix and non-tensor entries; tensors -> float32 numpy arrays."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ConversionError(source, f"holds a {type(obj).__name__}, not a state dict")
    arrays = {}
    for key, value in obj.items():
        if hasattr(value, "detach"):  # a torch tensor; bf16/fp16 have no exact numpy twin
            value = value.detach().cpu()
            value = (value.float() if value.is_floating_point() else value).numpy()
        if isinstance(value, (np.ndarray, jax.Array)):
            arrays[str(key).removeprefix("module.")] = np.asarray(value)
    if not arrays:
        raise ConversionError(source, "holds no tensors (not a state dict)")
    return arrays


def init_arch_variables(model: Model, rng=None) -> dict:
    """Freshly initialised {"params", "batch_stats"} of `model` as numpy.

    The default key uses the "rbg" generator: XLA compiles a threefry init of a ResNet in
    15-20 s on 2 CPU cores, an rbg one in ~3 s."""
    rng = jax.random.key(0, impl="rbg") if rng is None else rng
    variables = jax.jit(lambda r: model.init(r, model.example_input(), train=False))(rng)
    return jax.tree_util.tree_map(np.asarray, dict(variables))


def _flatten(tree: Mapping) -> dict[tuple[str, ...], Any]:
    """{(collection, *modules, leaf name): leaf} of a variables tree."""
    return traverse_util.flatten_dict(dict(tree))


def convert_state_dict(state_dict: Mapping[str, Any], model: Model, *,
                       skip_mismatched: bool = False, strict: bool = False, rng=None,
                       source: Any = None) -> tuple[dict, ConversionReport]:
    """Algorithm 1 onto `model`'s variables (see the `pisa_jax.convert` docstring).

    strict: also fail unless the file and the model match one to one apart from the classifier
    (the CLI's default: a file for another depth is then an error, not a partial load).
    source: names the file in error messages. Returns ({"params", "batch_stats"}, report).
    """
    arrays = clean_state_dict(state_dict, source)
    layout = layout_of(model)
    # Shapes by tracing only: a random init is paid for only if something is left initialised.
    targets = _flatten(jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), model.example_input(), train=False)))
    classifiers = CLASSIFIERS[layout]  # e.g. ("fc7", "fc8"): the last one counts the classes
    flat: dict[tuple[str, ...], np.ndarray] = {}  # what the file provides
    report = ConversionReport(layout)
    for key, value in arrays.items():
        if key.rpartition(".")[2] in IGNORED_FIELDS:
            continue
        mapped = flax_path(layout, key)
        if mapped is None or mapped[0] not in targets:
            report.skipped.append((key, "the model has no classifier (num_classes=None)"
                                   if _is_classifier(layout, key)
                                   else f"no such layer in this {layout} model"))
            continue
        path, kind = mapped
        value, target = to_flax(kind, path[-1], value), targets[path]
        if value.shape != target.shape:
            if kind == "conv" and path[-1] == "kernel" and target.shape[-2] == 1 and (
                    value.shape[:-2] + value.shape[-1:] == target.shape[:-2] + target.shape[-1:]):
                value = value.sum(axis=-2, keepdims=True)
                report.adapted.append(f"{key}: {arrays[key].shape[1]} input channels summed to 1")
            elif path[1] == classifiers[-1] and value.shape[:-1] == target.shape[:-1]:
                report.skipped.append((key, f"{value.shape[-1]} classes in the file, the model "
                                            f"has {target.shape[-1]}"))
                continue
            else:
                problem = (f"{key} has shape {tuple(arrays[key].shape)}, the model needs "
                           f"{torch_shape(kind, path[-1], target.shape)}")
                if not skip_mismatched:
                    raise ConversionError(source, f"{problem}; weights of another architecture? "
                                                  "(--skip_mismatched skips such tensors)")
                report.skipped.append((key, problem))
                continue
        flat[path] = value.astype(target.dtype)
        report.copied.append(f"{key} -> {'/'.join(path)}")
    report.left_initialised = ["/".join(p) for p in targets if p not in flat]
    if not report.copied:
        raise ConversionError(source, f"no tensor matches the {layout} layout "
                                      f"(first keys: {', '.join(list(arrays)[:3])})")
    if strict:
        _check_one_to_one(report, source)
    if report.left_initialised:  # only then pay for a random init
        initial = _flatten(init_arch_variables(model, rng))
        flat.update({path: initial[path] for path in targets if path not in flat})
    variables: dict = {}
    for path in targets:  # the model's own order
        leaf = flat[path]
        node = variables
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = leaf
    return variables, report


def _is_classifier(layout: str, key: str) -> bool:
    """Whether a PyTorch key belongs to a layer that only a model with num_classes has."""
    mapped = flax_path(layout, key)
    return mapped is not None and mapped[0][1] in CLASSIFIERS[layout]


def _check_one_to_one(report: ConversionReport, source: Any) -> None:
    unused = [key for key, _ in report.skipped if not _is_classifier(report.layout, key)]
    missing = [p for p in report.left_initialised
               if p.split("/")[1] not in CLASSIFIERS[report.layout]]
    problems = [f"{len(items)} {what} (e.g. {', '.join(items[:2])})" for items, what in
                ((unused, "file tensors unused"), (missing, "model tensors not in the file"))
                if items]
    if problems:
        raise ConversionError(source, f"does not fit the {report.layout} model: "
                              f"{'; '.join(problems)}; weights of another depth or layout? "
                              "(--allow_partial loads it anyway)")
