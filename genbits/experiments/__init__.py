"""One module per case study: ``run(run_dir, seeds, steps, progress, full) -> results`` writes figures and tables
into the run directory (the CLI adds report.html); ``full`` selects the larger GPU-sized setting."""

from genbits.experiments import dirac_gan, divergences, gan_mog, mode_seeking

EXPERIMENTS = {"mode-seeking": mode_seeking, "divergences": divergences, "dirac-gan": dirac_gan, "gan-mog": gan_mog}

__all__ = ["EXPERIMENTS"]
