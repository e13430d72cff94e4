"""Start the backbones from converted PyTorch weights (python -m pisa_jax.convert ...).

Only a run that restores no checkpoint of its own starts here: a resumed run's checkpoint holds
the weights, so the converted folders are not even read then.

The converted tree must cover every parameter and BatchNorm statistic of the backbone with the
same shape, and nothing more: a classifier the converted model may carry (the ResNets' `fc`,
C3D's `fc7` + `fc8`: `pisa_jax.convert.CLASSIFIERS`) is left out with a note; anything else that
does not fit (missing, extra or differently shaped) is an error naming the path: a silently
partial start would void the comparison with the paper. C3D's fc6 takes the flattened pool5, so
its shape also fixes the clip shape (16x112x112 for the Sports-1M weights).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from flax import traverse_util

from pisa_jax.errors import UserError


class InitWeightsError(UserError):
    """Converted weights that do not fit the backbone of this config."""


def _flat(tree) -> dict[tuple, object]:
    return traverse_util.flatten_dict(dict(tree)) if tree else {}


def classifier_layers(modality: str, visual_backbone: str = "resnet3d",
                      visual_stem: str = "hara") -> tuple[str, ...]:
    """The top-level layers of a converted net that are its own classifier, not our backbone."""
    from pisa_jax.convert import CLASSIFIERS
    if modality == "aural":
        return CLASSIFIERS["torchvision-2d"]
    if visual_backbone == "c3d":
        return CLASSIFIERS["c3d"]
    return CLASSIFIERS["hara" if visual_stem == "hara" else "torchvision-video"]


def merge_backbone(variables: dict, converted: dict, backbone: str, source: str,
                   classifiers: tuple[str, ...] = ("fc",)) -> tuple[dict, list[str]]:
    """variables with params/batch_stats[backbone] replaced by the converted ones.

    variables: {"params": {...}, "batch_stats": {...}} of the whole SkillModel (numpy or jax).
    converted: {"params": ..., "batch_stats": ...} as load_converted returns it.
    classifiers: top-level layers of the converted net to leave out (classifier_layers).
    Returns (new variables, notes for the user)."""
    notes = []
    merged = {k: dict(v) for k, v in variables.items()}
    for collection in ("params", "batch_stats"):
        ours = variables.get(collection, {}).get(backbone)
        if ours is None:
            continue
        theirs = _flat(converted.get(collection, {}))
        wanted = _flat(ours)
        missing = sorted(set(wanted) - set(theirs))
        if missing:
            shown = ", ".join("/".join(map(str, p)) for p in missing[:5])
            raise InitWeightsError(
                f"{source}: {len(missing)} {collection} of {backbone} missing from the converted "
                f"weights (e.g. {shown}); was it converted for this depth and stem?")
        for path, leaf in wanted.items():
            if tuple(np.shape(theirs[path])) != tuple(np.shape(leaf)):
                raise InitWeightsError(
                    f"{source}: {collection}/{backbone}/{'/'.join(map(str, path))} has shape "
                    f"{tuple(np.shape(theirs[path]))}, the model expects {tuple(np.shape(leaf))} "
                    f"(depth, stem or base_width differ? C3D's fc6 also depends on the clip "
                    f"shape)")
        extra = sorted(set(theirs) - set(wanted))
        classifier = [p for p in extra if p[0] in classifiers]
        others = [p for p in extra if p[0] not in classifiers]
        if others:  # e.g. R34 weights for an R18: its first blocks would fit, the rest not
            shown = ", ".join("/".join(map(str, p)) for p in others[:5])
            raise InitWeightsError(
                f"{source}: {len(others)} {collection} are not in {backbone} (e.g. {shown}); "
                f"was it converted for another depth?")
        if classifier:
            notes.append(f"{source}: left out the converted classifier "
                         f"({', '.join(classifiers)}; {len(classifier)} {collection}): the "
                         f"heads replace it")
        merged[collection][backbone] = traverse_util.unflatten_dict(
            {p: np.asarray(theirs[p], dtype=np.float32) for p in wanted})
    return merged, notes


def load_pretrained(variables: dict, *, visual_init: str | None, aural_init: str | None,
                    modalities, visual_backbone: str = "resnet3d",
                    visual_stem: str = "hara") -> tuple[dict, list[str]]:
    """Apply --visual_init / --aural_init (converted weight directories) to fresh variables."""
    from pisa_jax.convert import load_converted
    notes = []
    for backbone, directory, modality in (("visual_backbone", visual_init, "visual"),
                                          ("aural_backbone", aural_init, "aural")):
        if directory is None:
            continue
        if modality not in modalities:
            raise InitWeightsError(f"--{modality}_init {directory}: the {modality} branch is not "
                                   f"built (modalities={','.join(modalities)})")
        if not Path(directory).is_dir():
            raise InitWeightsError(f"--{modality}_init {directory}: not a directory of converted "
                                   f"weights (make one with python -m pisa_jax.convert)")
        converted, meta = load_converted(directory)
        variables, more = merge_backbone(
            variables, converted, backbone, directory,
            classifier_layers(modality, visual_backbone, visual_stem))
        notes += more
        notes.append(f"{backbone} initialised from {directory} ({meta.get('arch', '?')}, "
                     f"source {meta.get('source', '?')})")
    return variables, notes


def with_pretrained(state, config) -> tuple[object, list[str]]:
    """The fresh TrainState with its backbones replaced by the config's converted weights."""
    if not (config.visual_init or config.aural_init):
        return state, []
    variables = state.variables
    variables, notes = load_pretrained(variables, visual_init=config.visual_init,
                                       aural_init=config.aural_init, modalities=config.modalities,
                                       visual_backbone=config.visual_backbone,
                                       visual_stem=config.visual_stem)
    # Adam's moments start at zero whatever the parameters are: opt_state stays valid.
    return state.replace(params=variables["params"], batch_stats=variables["batch_stats"]), notes
