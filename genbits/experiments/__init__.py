"""One module per case study: ``run(run_dir, seeds, steps, progress, full, placement) -> results`` writes
results.json, figures and tables into the run directory (the CLI adds the placement to results.json, provenance.json
and report.html); ``full`` selects the larger GPU-sized setting, ``placement`` the device and runs at a time
(``genbits.experiments.placement``)."""

from genbits.experiments import (
    diffusion_guidance,
    diffusion_samplers,
    dirac_gan,
    divergences,
    gan_adam_beta1,
    gan_batch_size,
    gan_conditioning,
    gan_mog,
    gan_spectral_norm,
    mode_seeking,
)

EXPERIMENTS = {"mode-seeking": mode_seeking, "divergences": divergences, "dirac-gan": dirac_gan, "gan-mog": gan_mog}
EXPERIMENTS |= {
    "gan-spectral-norm": gan_spectral_norm,
    "gan-adam-beta1": gan_adam_beta1,
    "gan-batch-size": gan_batch_size,
    "gan-conditioning": gan_conditioning,
    "diffusion-guidance": diffusion_guidance,
}
EXPERIMENTS |= {"diffusion-samplers": diffusion_samplers}

__all__ = ["EXPERIMENTS"]
