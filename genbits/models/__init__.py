"""Model families; importing a family registers its factories in ``genbits.registry.MODELS``."""

from genbits.models import autoregressive, dirac, flows, gan, gaussian, vae

__all__ = ["autoregressive", "dirac", "flows", "gan", "gaussian", "vae"]
