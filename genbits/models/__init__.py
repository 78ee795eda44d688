"""Model families; importing a family registers its factories in ``genbits.registry.MODELS``."""

from genbits.models import flows, gan, gaussian

__all__ = ["flows", "gan", "gaussian"]
