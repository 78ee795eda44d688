"""Holes in the aggregate posterior of a VAE, on scikit-learn's 8×8 digits: ``vae-posterior-holes``' arms, claim
and rule on a second dataset (binarized, scored by the shipped digits classifier), minutes on a CPU."""

from functools import partial

from genbits.experiments.vae_posterior_holes import run as run_on
from genbits.experiments.vae_posterior_holes import table

run = partial(run_on, data="digits")

__all__ = ["run", "table"]
