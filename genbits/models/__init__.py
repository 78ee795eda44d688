"""Model families; importing a family registers its factories in ``genbits.registry.MODELS``."""

from genbits.models import autoregressive, classifier, diffusion, dirac, flows, gan, gaussian, hvae, transformer, vae

__all__ = [
    "autoregressive",
    "classifier",
    "diffusion",
    "dirac",
    "flows",
    "gan",
    "gaussian",
    "hvae",
    "transformer",
    "vae",
]
