"""Sampling a diffusion model: the sampling options of a call resolved into a grid, a (guided) ε̂ and a sampler.

``draw(model, n, y, generator, **how)`` is what ``Diffusion.sample`` runs; the samplers (``samplers.py``) and
guidance (``guidance.py``) are plain functions of ε̂ that know nothing of the model.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import torch
from torch import Tensor

from genbits.errors import ConfigError
from genbits.models.base import num_classes_of
from genbits.models.diffusion import Diffusion, DiscreteSchedule, load_classifier
from genbits.registry import closest
from genbits.sampling.clipping import clip_denoised
from genbits.sampling.guidance import classifier_free, classifier_guidance
from genbits.sampling.samplers import SAMPLER_FUNCTIONS, SAMPLERS, grid_size

VARIANCES = ("beta-tilde", "beta")


def number(how: dict[str, Any], name: str, default: float) -> float:
    value = how.get(name, default)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"sampling option {name} must be a number, got {value!r}")
    return float(value)


def resolve(model: Diffusion, how: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """The sampler, its NFE and its own options, checked: a bad value fails before any sampling."""
    discrete = isinstance(model.schedule, DiscreteSchedule)
    sampler = how.get("sampler") or ("ddpm" if discrete else "heun")
    if sampler not in SAMPLERS:
        raise ConfigError(
            f"sampling option sampler: unknown sampler {sampler!r}{closest(str(sampler), SAMPLERS)}; "
            f"use one of {', '.join(SAMPLERS)}"
        )
    steps = how.get("steps", model.schedule.T if discrete else 35)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"sampling option steps must be an integer >= 1, got {steps!r}")
    if discrete and grid_size(sampler, steps) > model.schedule.T:
        raise ConfigError(
            f"sampling option steps: {steps} is more than the model's T = {model.schedule.T} for {sampler}"
        )
    options: dict[str, Any] = {"variance": model.variance} if sampler == "ddpm" else {}
    if "eta" in how:
        if sampler != "ddim":
            raise ConfigError(f"sampling option eta is for the ddim sampler, not {sampler}")
        options["eta"] = number(how, "eta", 0.0)
        if options["eta"] < 0:
            raise ConfigError(f"sampling option eta must be >= 0, got {options['eta']}")
    if "variance" in how:
        if sampler != "ddpm":
            raise ConfigError(f"sampling option variance is for the ddpm sampler, not {sampler}")
        if how["variance"] not in VARIANCES:
            raise ConfigError(f"sampling option variance: {how['variance']!r} is unknown; use {' or '.join(VARIANCES)}")
        options["variance"] = how["variance"]
    return sampler, steps, options


def clipping(model: Diffusion, how: dict[str, Any]) -> bool:
    """Whether x̂₀ is clipped to [−1, 1] (``clipping.py``): by default on images, never on continuous data (no range)."""
    clip = how.get("clip", model.levels is not None)
    if not isinstance(clip, bool):
        raise ConfigError(f"sampling option clip must be true or false, got {clip!r}")
    if clip and model.levels is None:
        raise ConfigError("sampling option clip: this model's data are not images; there is no range to clip x̂₀ to")
    return clip


def draw(model: Diffusion, n: int, y: Tensor | None, generator: torch.Generator | None, **how: Any) -> Tensor:
    """n samples in model space (images in [−1, 1])."""
    sampler, steps, options = resolve(model, how)
    clip = clipping(model, how)
    scale = number(how, "guidance", 0.0)
    classes = num_classes_of(model)
    classifier = None
    if "classifier" in how:
        classifier, classes = load_classifier(how["classifier"], model)
    elif scale != 0 and classes is None:
        raise ConfigError("sampling option guidance: this model is unconditional; give a classifier run to guide it")
    if y is not None:
        if classes is None:
            raise ValueError("this diffusion model is unconditional: got a conditioning input y, expected None")
        if y.shape != (n,) or not ((y >= 0) & (y < classes)).all():
            raise ConfigError(f"labels y must be (n,) = ({n},) classes in [0, {classes}), got {y.tolist()[:8]}…")
    elif classes is not None:  # a conditional (or classifier-guided) draw with no labels: uniform classes
        y = torch.randint(0, classes, (n,), generator=generator)
    y = None if y is None else y.to(model.device)

    times = model.schedule.grid(grid_size(sampler, steps), how.get("spacing"))
    alpha_bars = model.schedule.alpha_bar(times).to(model.device)

    def labelled(x: Tensor, k: int, labels: Tensor | None) -> Tensor:
        return model.eps(x, times[k], labels)

    own = num_classes_of(model)
    if own is None:
        eps_fn = model.eps_fn(times, None)
    elif classifier is None:
        null = torch.full_like(y, own)
        eps_fn = classifier_free(labelled, y, null, scale)
    else:
        eps_fn = model.eps_fn(times, y)
    if classifier is not None:
        wanted = y

        def log_prob(x: Tensor, k: int) -> Tensor:
            noise = model.schedule.noise_input(times[k]).to(x.device).expand(len(x))
            return classifier.log_prob_class(x, noise, wanted)

        eps_fn = classifier_guidance(eps_fn, log_prob, alpha_bars, scale)
    if clip:
        eps_fn = clip_denoised(eps_fn, alpha_bars)

    x = torch.randn((n, *model.event_shape), generator=generator).to(model.device)
    return SAMPLER_FUNCTIONS[sampler](eps_fn, x, alpha_bars, generator=generator, progress=True, **options)
