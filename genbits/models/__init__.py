"""Model families; importing a family registers its factories in ``genbits.registry.MODELS``."""

from genbits.models import dirac, flows, gan, gaussian, transformer

__all__ = ["dirac", "flows", "gan", "gaussian", "transformer"]
