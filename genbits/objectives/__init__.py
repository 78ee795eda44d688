"""Objectives: small callables returning one loss per player (see ``base.Losses``)."""

from genbits.objectives import adversarial, elbo, likelihood, quadrature
from genbits.objectives.base import Losses, players_of

__all__ = ["Losses", "adversarial", "elbo", "likelihood", "players_of", "quadrature"]
