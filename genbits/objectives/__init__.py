"""Objectives: small callables returning one loss per player (see ``base.Losses``)."""

from genbits.objectives import adversarial, classification, denoising, likelihood, quadrature
from genbits.objectives.base import Losses, players_of

__all__ = ["Losses", "adversarial", "classification", "denoising", "likelihood", "players_of", "quadrature"]
