"""Objectives: small callables returning one loss per player (see ``base.Losses``)."""

from genbits.objectives import adversarial, denoising, likelihood, quadrature
from genbits.objectives.base import Losses, players_of

__all__ = ["Losses", "adversarial", "denoising", "likelihood", "players_of", "quadrature"]
