"""Objectives: small callables returning one loss per player (see ``base.Losses``)."""

from genbits.objectives import likelihood
from genbits.objectives.base import Losses, players_of

__all__ = ["Losses", "likelihood", "players_of"]
