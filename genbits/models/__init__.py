"""Model families; importing a family registers its factories in ``genbits.registry.MODELS``."""

from genbits.models import diffusion, dirac, flows, gan, gaussian

__all__ = ["diffusion", "dirac", "flows", "gan", "gaussian"]
