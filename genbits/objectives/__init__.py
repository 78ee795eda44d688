"""Objectives: small callables returning one loss per player (see ``base.Losses``)."""

from genbits.objectives import adversarial, likelihood, nvae, quadrature
from genbits.objectives.base import Losses, players_of

__all__ = ["Losses", "adversarial", "likelihood", "nvae", "players_of", "quadrature"]
