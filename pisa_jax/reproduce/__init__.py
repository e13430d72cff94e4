"""Reproducing the paper: its experiments as data (`experiments`), one resumable command that
runs them (`python -m pisa_jax.reproduce EXPERIMENT`, `main`) and the report it writes
(RESULTS.md, results.csv, a figure) with spreads over seeds and confidence intervals by video."""
from pisa_jax.reproduce.cli import main
from pisa_jax.reproduce.experiments import EXPERIMENTS, Cell, Experiment

__all__ = ["Cell", "EXPERIMENTS", "Experiment", "main"]
