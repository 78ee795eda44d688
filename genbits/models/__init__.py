"""Model families; importing a family registers its factories in ``genbits.registry.MODELS``."""

from genbits.models import flows, gaussian

__all__ = ["flows", "gaussian"]
