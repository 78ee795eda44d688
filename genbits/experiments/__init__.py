"""One module per case study: ``run(run_dir, seeds, steps, progress, full, placement) -> results`` writes
results.json, figures and tables into the run directory (the CLI adds the placement to results.json, provenance.json
and report.html); ``full`` selects the larger GPU-sized setting, ``placement`` the device and runs at a time
(``genbits.experiments.placement``)."""

from genbits.experiments import (
    dirac_gan,
    divergences,
    gan_adam_beta1,
    gan_batch_size,
    gan_conditioning,
    gan_late_degradation,
    gan_mog,
    gan_mog_rk4_step,
    gan_spectral_norm,
    mode_seeking,
)

EXPERIMENTS = {"mode-seeking": mode_seeking, "divergences": divergences, "dirac-gan": dirac_gan, "gan-mog": gan_mog}
EXPERIMENTS |= {
    "gan-spectral-norm": gan_spectral_norm,
    "gan-adam-beta1": gan_adam_beta1,
    "gan-batch-size": gan_batch_size,
    "gan-conditioning": gan_conditioning,
    "gan-mog-rk4-step": gan_mog_rk4_step,
    "gan-late-degradation": gan_late_degradation,
}

__all__ = ["EXPERIMENTS"]
