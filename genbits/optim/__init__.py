"""Update rules and the gradient field they evaluate."""

from genbits.optim import games, rules
from genbits.optim.field import GradientField
from genbits.optim.rules import Batches, UpdateRule

__all__ = ["Batches", "GradientField", "UpdateRule", "games", "rules"]
