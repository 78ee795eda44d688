"""Keep a sampler's data prediction in the data's range: x̂₀ = (x_t − √(1 − ᾱ) ε̂)/√ᾱ clipped to [−1, 1] for images.

Why: the cosine schedule (Nichol & Dhariwal 2021, "Improved denoising diffusion probabilistic models") clips β_t at
0.999 as the paper does, which leaves ᾱ_T ≈ 2.4e-9 at T = 1000. A sampler whose first level is t = T (the default
"trailing" spacing, Lin et al. 2024) then divides the network's ε error by √ᾱ_T ≈ 5e-5: a 1% error in ε̂ is an x̂₀
of ~200 where the data live in [−1, 1], and DDIM, Heun and DPM-Solver++ carry it into the samples (|x| ~ 10³).
Rather than change the schedule (models are trained on it), the samplers do what the papers' own code does:
DDPM's and improved-diffusion's ``clip_denoised`` and diffusers' ``clip_sample`` clamp x̂₀ to [−1, 1] at every step,
Saharia et al. 2022 (Imagen) call it static thresholding, and Lu et al. 2022 (DPM-Solver++) recommend thresholding
the data prediction. Every sampler here reads ε̂, so the clipped x̂₀ is handed back as the ε̂ consistent with it,
ε̂' = (x_t − √ᾱ x̂₀)/√(1 − ᾱ): where nothing is clipped, ε̂' = ε̂. It is applied after guidance, so guided
samplers also see a data prediction inside the range. The exact denoiser of data inside the range never needs it.
"""

from __future__ import annotations

from torch import Tensor

from genbits.models.diffusion import EpsFn, convert


def clip_denoised(eps_fn: EpsFn, alpha_bars: Tensor, bound: float = 1.0) -> EpsFn:
    """ε̂(x, k) whose data prediction x̂₀ is clipped to [−bound, bound] at the k-th of ``alpha_bars``."""

    def eps(x: Tensor, k: int) -> Tensor:
        x0 = convert(eps_fn(x, k), "eps", "x0", x, alpha_bars[k]).clamp(-bound, bound)
        return convert(x0, "x0", "eps", x, alpha_bars[k])

    return eps
