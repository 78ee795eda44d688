"""Model contracts and the sampling contract: ``model.sample(n, y=None, generator=None, **how)``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor

from genbits.errors import ConfigError
from genbits.models.base import (
    Conditional,
    Density,
    Game,
    Generative,
    LatentVariable,
    balanced_labels,
    check_how,
    how_key,
    num_classes_of,
)
from genbits.models.dirac import dirac_gan
from genbits.models.flows import flow
from genbits.models.gan import gan
from genbits.models.gaussian import Gaussian
from genbits.runs.evaluate import model_samples


def trained_looking_gaussian(seed: int = 0) -> Gaussian:
    """A Gaussian with a non-trivial mean and full covariance (as if trained)."""
    torch.manual_seed(seed)
    model = Gaussian(3)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


def test_each_family_states_its_contract() -> None:
    cases = {
        "flow": (flow((2,), layers=1, hidden=(8,)), {Generative, Density}),
        "gaussian": (Gaussian(2), {Generative, Density}),
        "dirac-gan": (dirac_gan((2,)), {Generative, Game}),
        "conditional gan": (gan((2,), num_classes=8, conditioning="concat"), {Generative, Game, Conditional}),
    }
    for name, (model, promised) in cases.items():
        held = {p for p in (Generative, Density, LatentVariable, Game, Conditional) if isinstance(model, p)}
        assert held == promised, name
    assert num_classes_of(cases["conditional gan"][0]) == 8 and num_classes_of(cases["flow"][0]) is None


def test_check_how_names_the_option_the_model_and_the_closest_choice() -> None:
    check_how("flow", {"temperature": 0.5}, ("temperature",))
    check_how("dirac-gan", {}, ())
    with pytest.raises(ConfigError) as error:
        check_how("flow", {"temprature": 0.5}, ("temperature",))
    assert str(error.value) == (
        "sampling option 'temprature' is not understood by flow (it takes: temperature) (did you mean 'temperature'?)"
    )
    with pytest.raises(ConfigError) as error:
        check_how("dirac-gan", {"steps": 10}, ())
    assert str(error.value) == "sampling option 'steps' is not understood by dirac-gan (it takes none)"


def test_every_model_refuses_what_it_does_not_understand() -> None:
    for name, model in {"flow": flow((2,)), "gaussian": Gaussian(2), "dirac-gan": dirac_gan((2,))}.items():
        with pytest.raises(ConfigError, match=f"'steps' is not understood by {name}"):
            model.sample(3, steps=10)
        with pytest.raises(ValueError, match="unconditional"):
            model.sample(3, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match="'temperature' is not understood by dirac-gan"):
        dirac_gan((2,)).sample(3, temperature=0.5)
    for bad in (0, -1.0, float("inf"), float("nan"), "hot", True):
        for model in (flow((2,)), Gaussian(2)):
            with pytest.raises(ConfigError, match="temperature must be a finite number > 0"):
                model.sample(3, temperature=bad)


@pytest.mark.parametrize("t", [0.25, 0.8, 1.7])
def test_gaussian_temperature_scales_the_noise_exactly(t: float) -> None:
    """x_T − μ = T·(x_1 − μ) under the same generator, so the std scales by T; the covariance is T²Σ."""
    model = trained_looking_gaussian()
    mean, tril = model.mean.detach(), model.scale_tril().detach()
    cold = model.sample(20000, generator=torch.Generator().manual_seed(1))
    warm = model.sample(20000, generator=torch.Generator().manual_seed(1), temperature=t)
    torch.testing.assert_close(warm - mean, t * (cold - mean), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(warm.std(0), t * cold.std(0), rtol=1e-5, atol=0)
    sigma = tril @ tril.T
    torch.testing.assert_close(torch.cov(warm.T), t**2 * sigma, rtol=0, atol=0.05 * t**2)


def test_gaussian_default_sampling_is_temperature_one_and_log_prob_ignores_sampling() -> None:
    model = trained_looking_gaussian()
    x = torch.randn(50, 3)
    reference = torch.distributions.MultivariateNormal(model.mean.detach(), scale_tril=model.scale_tril().detach())
    before = model.log_prob(x).detach()
    torch.testing.assert_close(before, reference.log_prob(x), rtol=1e-5, atol=1e-5)
    default = model.sample(100, generator=torch.Generator().manual_seed(2))
    assert torch.equal(default, model.sample(100, generator=torch.Generator().manual_seed(2), temperature=1.0))
    model.sample(100, temperature=0.3)  # sampling leaves the density alone
    assert torch.equal(model.log_prob(x).detach(), before)


@pytest.mark.parametrize("transform", ["spline-coupling", "maf"])
def test_flow_temperature_scales_the_base_noise(transform: str) -> None:
    """Samples at temperature T map back (through the data → noise transform) to T times the generator's noise.
    In float64: a spline's float32 round trip is off by ~1e-4 at a few steep bins, which says nothing about T."""
    torch.manual_seed(0)
    model = flow((2,), transform=transform, layers=2, hidden=(16,), bins=6).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    t = 0.6
    x = model.sample(500, generator=torch.Generator().manual_seed(5), temperature=t)
    noise = torch.randn(500, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        z, _ = model.transform(x)
    torch.testing.assert_close(z, t * noise, rtol=1e-9, atol=1e-9)
    default = model.sample(500, generator=torch.Generator().manual_seed(5))
    assert torch.equal(default, model.sample(500, generator=torch.Generator().manual_seed(5), temperature=1))


def test_how_key_is_canonical() -> None:
    assert how_key({"temperature": 0.8}) == "temperature=0.8"
    assert how_key({"temperature": 0.8, "steps": 50, "sampler": "ddim"}) == "sampler=ddim,steps=50,temperature=0.8"
    assert how_key({"steps": 50, "temperature": 0.8}) == how_key({"temperature": 0.8, "steps": 50})


def test_balanced_labels() -> None:
    labels = balanced_labels(23, 5)
    assert labels.dtype == torch.long and labels.bincount().tolist() == [5, 5, 5, 4, 4]
    assert labels[:10].bincount().tolist() == [2] * 5  # interleaved: every chunk is balanced too


class Recorder:
    """A conditional model that returns the labels and options it was sampled with."""

    num_classes = 4
    SAMPLING_OPTIONS = ("temperature",)

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.weight = torch.zeros(1)

    def parameters(self):
        return iter([self.weight])

    def buffers(self):
        return iter([])

    def sample(self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **how: Any) -> Tensor:
        self.calls.append(how)
        return y.float()[:, None]


def test_model_samples_give_a_conditional_model_balanced_labels_and_the_options() -> None:
    model = Recorder()
    assert isinstance(model, Conditional) and isinstance(model, Generative)
    run = SimpleNamespace(model=model, dataset=SimpleNamespace(levels=None))  # continuous data: no clipping
    labels = model_samples(run, 10, chunk=3, how={"temperature": 0.5})[:, 0].long()
    assert labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert model.calls == [{"temperature": 0.5}] * 4  # chunks of 3, 3, 3, 1
