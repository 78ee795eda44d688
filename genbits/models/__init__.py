"""Model families; importing a family registers its factories in ``genbits.registry.MODELS``."""

from genbits.models import classifier, diffusion, dirac, flows, gan, gaussian, hvae, vae

__all__ = ["classifier", "diffusion", "dirac", "flows", "gan", "gaussian", "hvae", "vae"]
