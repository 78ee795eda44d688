"""Holes in the aggregate posterior of a VAE, on scikit-learn's 8×8 digits: ``vae-posterior-holes``' arms, claim
and rule on a second dataset (binarized, scored by the shipped digits classifier), minutes on a CPU."""

from functools import partial

from genbits.experiments.vae_posterior_holes import CLAIM, RULE, decide, table
from genbits.experiments.vae_posterior_holes import run as run_on

run = partial(run_on, data="digits")

__all__ = ["CLAIM", "RULE", "decide", "run", "table"]
