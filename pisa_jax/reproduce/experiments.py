"""The paper's experiments as data: which cells, which training flags, which published figure.

Every cell is one training configuration: `flags` are TrainConfig fields set on top of the
recipe (`--preset`), `init` names the converted backbone weights it starts from (folders under
`--weights_dir`, made by `python -m pisa_jax.convert`), `paper` is the figure the paper prints for
it (None where the paper shows it only in a plot). `position` places the cell in its figure:
(row, column) of the Table 4 heatmap, the x value of the Figure 7 curve.

The paper's figures are accuracy (%) on PISA's official test split, multimodal head, from one
run each; Table 5's are seconds per training epoch.
"""
from __future__ import annotations

import dataclasses
from typing import Any

DEPTHS = (18, 34, 50)
# The names `python -m pisa_jax.convert` gives the converted weights in the README.
VISUAL_WEIGHTS = {18: "r3d18_hara", 34: "r3d34_hara", 50: "r3d50_hara", "c3d": "c3d_sports1m"}
AURAL_WEIGHTS = {18: "r2d18_imagenet", 34: "r2d34_imagenet", 50: "r2d50_imagenet"}


@dataclasses.dataclass(frozen=True)
class Cell:
    name: str                        # the run directory and the --cells key
    label: str                       # as the paper names it
    flags: dict[str, Any]            # TrainConfig fields over the recipe
    paper: float | None = None       # the paper's figure (None: only plotted there)
    init: dict[str, str] = dataclasses.field(default_factory=dict)  # modality -> weights folder
    position: tuple = ()             # where the cell sits in its figure
    needs_pretrained: bool = False   # meaningless without the converted weights (Table 7)


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    question: str                    # what the experiment asks
    metric: str                      # "accuracy" or "seconds_per_epoch": the paper's figure
    plot: str                        # "heatmap", "curve", "heads" or "bars"
    cells: tuple[Cell, ...]
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)  # flags of every cell
    note: str = ""

    def cell(self, name: str) -> Cell:
        return {c.name: c for c in self.cells}[name]


def _pretrained(visual, aural) -> dict[str, str]:
    return {"visual": VISUAL_WEIGHTS[visual], "aural": AURAL_WEIGHTS[aural]}


def _resnet_label(visual, aural) -> str:
    return f"ResNet{visual}-3D + ResNet{aural}-2D"


TABLE4_ACCURACY = {(18, 18): 70.80, (18, 34): 66.39, (18, 50): 65.55,
                   (34, 18): 66.81, (34, 34): 65.97, (34, 50): 67.02,
                   (50, 18): 64.50, (50, 34): 61.34, (50, 50): 59.45}
C3D_ACCURACY = 68.70
C3D_FLAGS = {"visual_backbone": "c3d", "depths": (18, 18)}  # the visual depth is unused by C3D


def _grid(values: dict, c3d_value: float) -> tuple[Cell, ...]:
    cells = tuple(Cell(f"r{v}_r{a}", _resnet_label(v, a), {"depths": (v, a)}, values[v, a],
                       _pretrained(v, a), position=(i, j))
                  for i, v in enumerate(DEPTHS) for j, a in enumerate(DEPTHS))
    c3d = Cell("c3d_r18", "C3D + ResNet18-2D (Parmar)", C3D_FLAGS, c3d_value,
               _pretrained("c3d", 18), position=(len(DEPTHS), 0))
    return cells + (c3d,)


TABLE4 = Experiment(
    "table4", "Tables 4 and 6: visual x aural backbone depths, and the C3D baseline",
    "Which pair of backbones fuses best? The paper: R18-3D + R18-2D (70.80 %), ahead of "
    "Parmar's C3D + R18-2D (68.70 %).",
    "accuracy", "heatmap", _grid(TABLE4_ACCURACY, C3D_ACCURACY))

# Printed "Average time to train 100 epochs per model", read as seconds per epoch (74 s for
# 516 samples). The paper's row "ResNet34-3D + ResNet50-3D" is read as R34-3D + R50-2D, the
# grid's only cell it would otherwise lack.
TABLE5_SECONDS = {(18, 18): 74.02, (18, 34): 87.91, (18, 50): 96.75,
                  (34, 18): 97.95, (34, 34): 110.33, (34, 50): 118.79,
                  (50, 18): 96.71, (50, 34): 109.79, (50, 50): 119.93}
TABLE5 = Experiment(
    "table5", "Table 5: seconds per training epoch",
    "How long does an epoch take per pair of backbones (the paper's GPU is not named)?",
    "seconds_per_epoch", "bars", _grid(TABLE5_SECONDS, 111.08),
    # Three epochs: the first includes compilation and is left out of the timing.
    fixed={"epochs": 3, "eval_every_epochs": 3},
    note="Seconds per epoch are the median over epochs 2-3 (the first includes compilation); "
         "accuracy after 3 epochs means nothing here.")

# Table 7 and Figures 6-7 vary one thing of the paper's model, R18-3D + R18-2D: the recipe's
# depths (18, 18 in the paper and demo recipes; the smoke recipe's smaller net keeps tests fast).
RECIPE_DEPTHS = "Backbones: the recipe's depths (R18-3D + R18-2D except in the smoke recipe)."

TABLE7 = Experiment(
    "table7", "Table 7: with and without pretraining (R18-3D + R18-2D)",
    "How much do the Kinetics/Moments-in-Time and ImageNet weights add?",
    "accuracy", "bars", (
        Cell("pretrained", "KM + ImageNet pretraining", {}, 70.80, _pretrained(18, 18),
             position=(0,), needs_pretrained=True),
        Cell("scratch", "random initialisation", {}, 57.98, position=(1,)),
    ), note=RECIPE_DEPTHS)

FIGURE6 = Experiment(
    "figure6", "Figure 6: unimodal vs multimodal (R18-3D, R18-2D)",
    "Does fusing the two branches beat either alone? Every head of every model is shown: a "
    "multimodal head below the aural head means the fusion is not helping.",
    "accuracy", "heads", (
        Cell("visual", "visual only (R18-3D)", {"modalities": ("visual",)}, None,
             {"visual": VISUAL_WEIGHTS[18]}, position=(0,)),
        Cell("aural", "aural only (R18-2D)", {"modalities": ("aural",)}, None,
             {"aural": AURAL_WEIGHTS[18]}, position=(1,)),
        Cell("multimodal", "audio-visual fusion", {}, 70.80, _pretrained(18, 18), position=(2,)),
    ),
    note="The paper plots the unimodal accuracies without printing them: no figure beside "
         "them. With the multimodal head behind stop_gradient, a unimodal model trains like "
         "the same branch of the fused model (same initialisation, data order and dropout "
         "keys), so its accuracy should equal that branch's head in the fused model's row; a "
         "difference points to a leak through the fusion. " + RECIPE_DEPTHS)

# Figure 7 prints two values in its text: 65.55 % without dropout, the best (70.80 %) at 0.5.
DROPOUT_ACCURACY = {0.0: 65.55, 0.5: 70.80}
FIGURE7 = Experiment(
    "figure7", "Figure 7: dropout rate of the heads (R18-3D + R18-2D)",
    "How does the heads' dropout rate change accuracy? The paper: it rises to a peak at 0.5.",
    "accuracy", "curve", tuple(
        Cell(f"dropout_{rate:.1f}", f"dropout {rate:.1f}", {"dropout": rate},
             DROPOUT_ACCURACY.get(rate), _pretrained(18, 18), position=(rate,))
        for rate in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)),
    note="The paper prints only the values at 0.0 and 0.5; the rest are in its plot. "
         + RECIPE_DEPTHS)

EXPERIMENTS = {e.name: e for e in (TABLE4, TABLE5, TABLE7, FIGURE6, FIGURE7)}
