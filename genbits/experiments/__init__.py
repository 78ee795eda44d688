"""One module per case study: ``run(run_dir, seeds, steps, progress, full, placement) -> results`` writes
results.json, figures and tables into the run directory (the CLI adds the placement to results.json, provenance.json
and report.html); ``full`` selects the larger GPU-sized setting, ``placement`` the device and runs at a time
(``genbits.experiments.placement``)."""

from genbits.experiments import (
    diffusion_elbo,
    diffusion_guidance,
    diffusion_samplers,
    diffusion_stability,
    dirac_gan,
    divergences,
    gan_adam_beta1,
    gan_batch_size,
    gan_conditioning,
    gan_late_degradation,
    gan_mog,
    gan_mog_rk4_step,
    gan_spectral_norm,
    latent_families,
    lm_adam_vs_sgd,
    lm_entropy_collapse,
    mode_seeking,
    nvae_bits,
    pixelcnn_guidance,
    vae_posterior_holes,
    vae_posterior_holes_digits,
)

EXPERIMENTS = {"mode-seeking": mode_seeking, "divergences": divergences, "dirac-gan": dirac_gan, "gan-mog": gan_mog}
EXPERIMENTS |= {
    "gan-spectral-norm": gan_spectral_norm,
    "gan-adam-beta1": gan_adam_beta1,
    "gan-batch-size": gan_batch_size,
    "gan-conditioning": gan_conditioning,
    "diffusion-guidance": diffusion_guidance,
    "gan-mog-rk4-step": gan_mog_rk4_step,
    "gan-late-degradation": gan_late_degradation,
}
EXPERIMENTS |= {"vae-posterior-holes": vae_posterior_holes, "latent-families": latent_families}
EXPERIMENTS |= {"vae-posterior-holes-digits": vae_posterior_holes_digits}
EXPERIMENTS |= {"nvae-bits": nvae_bits}
EXPERIMENTS |= {"pixelcnn-guidance": pixelcnn_guidance}
EXPERIMENTS |= {"diffusion-samplers": diffusion_samplers}
EXPERIMENTS |= {"diffusion-stability": diffusion_stability, "diffusion-elbo": diffusion_elbo}
EXPERIMENTS |= {"lm-entropy-collapse": lm_entropy_collapse, "lm-adam-vs-sgd": lm_adam_vs_sgd}

__all__ = ["EXPERIMENTS"]
