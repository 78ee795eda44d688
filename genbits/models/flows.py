"""Normalizing flows: invertible maps from data to standard-normal noise, trained by exact likelihood.

A :class:`Transform` maps data to noise (``forward``: the direction ``log_prob`` needs, one pass) and back
(``inverse``: the direction ``sample`` needs); each returns the log |det J| of the map it applies. A learnable
transform is an element-wise bijection (:class:`Affine` or :class:`RQSpline`) whose parameters come from a
conditioner: :class:`Coupling` (an MLP on half of the features, one pass both ways) or :class:`Autoregressive`
(a MADE on all features, one pass to noise, D passes back). The four named transforms are those pairs.

Shapes: transforms see flat ``(B, D)`` batches; :class:`Flow` flattens any event shape to D and back.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genbits.data.base import require
from genbits.models.base import check_how, refuse_condition, standard_normal_log_prob, temperature
from genbits.registry import MODELS

# ----------------------------------------------------------------------------------------------------
# Conditioners: one MLP, optionally masked (a MADE).


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask: chosen outputs ignore chosen inputs."""

    def __init__(self, mask: Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MLP(nn.Sequential):
    """Linear → ReLU → … → Linear; with ``masks`` every linear layer is masked (that is all a MADE is).

    The last layer starts at a tenth of the default init: the flow starts near the identity (the first steps
    do not fight a random warp of the data) while every weight already gets a gradient.
    """

    def __init__(self, sizes: Sequence[int], masks: Sequence[Tensor] | None = None):
        layers: list[nn.Module] = []
        with warnings.catch_warnings():  # a 1-feature coupling conditions on nothing: a 0-input first layer
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
                layers += [nn.Linear(fan_in, fan_out) if masks is None else MaskedLinear(masks[i]), nn.ReLU()]
        super().__init__(*layers[:-1])
        with torch.no_grad():
            self[-1].weight.mul_(0.1)
            self[-1].bias.zero_()


def made(features: int, outputs_per_feature: int, hidden: Sequence[int]) -> MLP:
    """A MADE (Germain et al. 2015): output block i (``outputs_per_feature`` units) sees only inputs j < i.

    Degrees: input j has degree j + 1; hidden units cycle through 1 … D − 1 (deterministic, so each input
    reaches every output allowed to see it); output block i has degree i + 1. A hidden unit sees inputs of
    degree ≤ its own, an output sees hidden units of strictly smaller degree. Output layout: (D, P).
    """
    inputs = torch.arange(1, features + 1)
    degrees = [inputs] + [torch.arange(h) % max(features - 1, 1) + 1 for h in hidden]
    masks = [later[:, None] >= earlier for earlier, later in zip(degrees[:-1], degrees[1:], strict=True)]
    masks.append(inputs.repeat_interleave(outputs_per_feature)[:, None] > degrees[-1])
    return MLP([features, *hidden, features * outputs_per_feature], masks)


# ----------------------------------------------------------------------------------------------------
# Element-wise bijections y = f(x; θ), θ of shape (..., num_params) per feature, given by a conditioner.


class Affine(nn.Module):
    """y = x·exp(s) + t, s = S·tanh(ŝ/S): the soft bound S stops one layer from scaling by more than e^S."""

    num_params = 2

    def __init__(self, scale_bound: float = 3.0):
        super().__init__()
        self.scale_bound = scale_bound

    def _shift_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw = params.unbind(-1)
        return shift, self.scale_bound * torch.tanh(raw / self.scale_bound)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale = self._shift_log_scale(params)
        return x * log_scale.exp() + shift, log_scale

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale = self._shift_log_scale(params)
        return (y - shift) * (-log_scale).exp(), -log_scale


class RQSpline(nn.Module):
    """Monotonic rational-quadratic spline (Durkan et al. 2019) on [−bound, bound], the identity outside.

    3·bins − 1 parameters per feature: bin widths and heights (softmax, each bin ≥ ``min_bin`` of the range)
    and the slopes at the interior knots (softplus, ≥ ``min_slope``; 1 at both end knots, so the linear tails
    join smoothly). All-zero parameters give the identity. Written for small batches on CPU, where the cost is
    the number of ops: the slopes are squashed after the gather (on the 2 knots a value needs, not all K + 1).
    """

    def __init__(self, bins: int = 8, bound: float = 3.0, min_bin: float = 1e-3, min_slope: float = 1e-3):
        super().__init__()
        if bins * min_bin >= 1:
            raise ValueError(f"bins must be < {1 / min_bin:g} (1 / min_bin), got {bins}")
        self.bins, self.bound, self.min_slope = bins, bound, min_slope
        self.num_params = 3 * bins - 1
        self._slope_shift = math.log(math.expm1(1 - min_slope))  # softplus(0 + shift) + min_slope = 1
        # knot j = −bound + 2·bound·(j·min_bin + (1 − bins·min_bin)·Σ_{i<j} softmax_i): one matmul with a
        # scaled triangular matrix is the cumulative sum (fewer ops than pad + cumsum, forward and backward)
        span = 2 * bound * (1 - bins * min_bin)
        offsets = 2 * bound * min_bin * torch.arange(bins + 1.0) - bound
        self.register_buffer("_cumulate", span * torch.ones(bins, bins + 1).triu(1), persistent=False)
        self.register_buffer("_offsets", offsets, persistent=False)

    def _bin(self, v: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, ...]:
        """Find each value's bin (among the x-knots forward, the y-knots inverse) and gather its geometry."""
        K = self.bins
        sizes = torch.softmax(params[..., : 2 * K].unflatten(-1, (2, K)), dim=-1)
        knots = torch.addmm(self._offsets, sizes.reshape(-1, K), self._cumulate).view(*v.shape, 2, K + 1)
        k = torch.searchsorted(knots[..., int(inverse), 1:-1].contiguous(), v[..., None])  # (..., 1): [0, K)
        raw_slopes = F.pad(params[..., 2 * K :], (1, 1))[..., None, :]  # (..., 1, K + 1); raw 0 is slope 1
        rows = torch.cat((knots, raw_slopes), dim=-2)  # (..., 3, K + 1): x, y, raw slope
        index = torch.cat((k, k + 1), -1)[..., None, :].expand(*k.shape[:-1], 3, 2).contiguous()
        xs, ys, raw_ds = rows.gather(-1, index).unbind(-2)  # (..., 2) each: the bin's left and right ends
        (x0, x1), (y0, y1) = xs.unbind(-1), ys.unbind(-1)
        d0, d1 = (F.softplus(raw_ds + self._slope_shift) + self.min_slope).unbind(-1)
        return x0, x1 - x0, y0, y1 - y0, d0, d1

    @staticmethod
    def _log_slope(s: Tensor, d0: Tensor, d1: Tensor, t: Tensor, denom: Tensor) -> Tensor:
        """log dy/dx at relative position t in a bin of mean slope s (Durkan et al. 2019)."""
        u = 1 - t
        return torch.log(s * s * (d1 * t * t + 2 * s * t * u + d0 * u * u) / (denom * denom))

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        x_in = x.clamp(-self.bound, self.bound)
        x0, w, y0, h, d0, d1 = self._bin(x_in, params, inverse=False)
        s = h / w
        t = (x_in - x0) / w
        tu = t * (1 - t)
        denom = s + (d0 + d1 - 2 * s) * tu
        y = y0 + h * (s * t * t + d0 * tu) / denom
        inside = x_in == x
        return torch.where(inside, y, x), self._log_slope(s, d0, d1, t, denom) * inside

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        y_in = y.clamp(-self.bound, self.bound)
        x0, w, y0, h, d0, d1 = self._bin(y_in, params, inverse=True)
        s = h / w
        dy = y_in - y0
        curve = d0 + d1 - 2 * s
        a = h * (s - d0) + dy * curve
        b = h * d0 - dy * curve
        c = -s * dy
        t = 2 * c / (-b - (b * b - 4 * a * c).clamp(min=0).sqrt())  # the root in [0, 1], stable form
        denom = s + curve * t * (1 - t)
        inside = y_in == y
        return torch.where(inside, x0 + t * w, y), -self._log_slope(s, d0, d1, t, denom) * inside


Bijection = Affine | RQSpline
Step = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


# ----------------------------------------------------------------------------------------------------
# Transforms.


class Transform(nn.Module):
    """Data → noise: ``forward(x) -> (z, log|det ∂z/∂x|)``; ``inverse(z) -> (x, log|det ∂x/∂z|)``; (B,)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class Coupling(Transform):
    """Transforms the second half of the features with parameters computed from the first (Dinh et al. 2017).

    The halves alternate through the permutation between layers (``Reverse`` swaps them: RealNVP's alternating
    mask). One network pass in both directions.
    """

    def __init__(self, features: int, bijection: Bijection, hidden: Sequence[int]):
        super().__init__()
        self.bijection, self.split = bijection, features // 2
        self.net = MLP([self.split, *hidden, (features - self.split) * bijection.num_params])

    def _couple(self, v: Tensor, step: Step) -> tuple[Tensor, Tensor]:
        kept, changed = v[:, : self.split], v[:, self.split :]
        params = self.net(kept).unflatten(-1, (changed.shape[1], self.bijection.num_params))
        out, ladj = step(changed, params)
        return torch.cat((kept, out), dim=1), ladj.sum(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._couple(x, self.bijection.forward)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._couple(z, self.bijection.inverse)


class Autoregressive(Transform):
    """z_i = f(x_i; θ_i(x_<i)), θ from a MADE (Papamakarios et al. 2017): one pass to noise, D passes back."""

    def __init__(self, features: int, bijection: Bijection, hidden: Sequence[int]):
        super().__init__()
        self.bijection, self.features = bijection, features
        self.net = made(features, bijection.num_params, hidden)

    def _params(self, x: Tensor) -> Tensor:
        return self.net(x).unflatten(-1, (self.features, self.bijection.num_params))  # (B, D, P)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, ladj = self.bijection.forward(x, self._params(x))
        return z, ladj.sum(1)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.zeros_like(z)
        for _ in range(self.features):  # pass i fixes x_i, so the last pass's parameters are all exact
            x, ladj = self.bijection.inverse(z, self._params(x))
        return x, ladj.sum(1)


class AffineCoupling(Coupling):
    """RealNVP's affine coupling."""

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64)):
        super().__init__(features, Affine(), hidden)


class MaskedAutoregressive(Autoregressive):
    """MAF: an affine autoregressive transform."""

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64)):
        super().__init__(features, Affine(), hidden)


class SplineCoupling(Coupling):
    """A rational-quadratic spline coupling (NSF-C)."""

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64), bins: int = 8, bound: float = 3.0):
        super().__init__(features, RQSpline(bins, bound), hidden)


class SplineAutoregressive(Autoregressive):
    """A rational-quadratic spline autoregressive transform (NSF-AR; the transform of zuko's NSF)."""

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64), bins: int = 8, bound: float = 3.0):
        super().__init__(features, RQSpline(bins, bound), hidden)


class ActNorm(Transform):
    """z = (x − loc)/scale per feature (Kingma & Dhariwal 2018), both set from the first training batch.

    The data-dependent init lets the next layer see standardized inputs from step one. ``initialized`` is a
    buffer, so a loaded or resumed model keeps its learned values rather than re-initialize on its next batch.
    Only a forward pass in training mode initializes (pure reverse-KL training leaves it at the identity).
    """

    def __init__(self, features: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _init(self, x: Tensor) -> None:
        self.loc.copy_(x.mean(0))
        self.log_scale.copy_(x.std(0).clamp(min=1e-6).log())
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and len(x) > 1 and not self.initialized:
            self._init(x)
        return (x - self.loc) * (-self.log_scale).exp(), (-self.log_scale.sum()).expand(len(x))

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z * self.log_scale.exp() + self.loc, self.log_scale.sum().expand(len(z))


class Permutation(Transform):
    """z = x[:, perm]: volume-preserving (log-det 0). The permutation is a buffer, saved with the model."""

    def __init__(self, perm: Tensor):
        super().__init__()
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.index_select(1, self.perm), x.new_zeros(len(x))

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z.index_select(1, self.inverse_perm), z.new_zeros(len(z))


class Reverse(Permutation):
    """Reverses the features: the next coupling or autoregressive layer sees them the other way round."""

    def __init__(self, features: int):
        super().__init__(torch.arange(features - 1, -1, -1))


class RandomPermutation(Permutation):
    """A fixed random permutation, drawn once from the global RNG at construction."""

    def __init__(self, features: int):
        super().__init__(torch.randperm(features))


class Chain(Transform):
    """Transforms applied in order on the way to noise, in reverse order on the way back; log-dets add up."""

    def __init__(self, transforms: Sequence[Transform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = 0.0
        for t in self.transforms:
            x, ladj = t(x)
            total = total + ladj
        return x, total

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        total = 0.0
        for t in reversed(self.transforms):
            z, ladj = t.inverse(z)
            total = total + ladj
        return z, total


# ----------------------------------------------------------------------------------------------------
# The distribution.


class Flow(nn.Module):
    """p(x) = N(z; 0, I)·|det ∂z/∂x| with z = transform(x), over ``event_shape`` (flat for the transforms).

    Unconditional: a conditioning input ``y`` is refused rather than silently ignored. Sampling understands
    ``temperature`` T (default 1): z ~ N(0, T²I) pushed through the inverse transform (Glow-style).
    """

    SAMPLING_OPTIONS = ("temperature",)

    def __init__(self, transform: Transform, event_shape: Sequence[int]):
        super().__init__()
        self.transform, self.event_shape = transform, torch.Size(event_shape)
        self.features = math.prod(self.event_shape)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # device and dtype of the noise

    def _noise(self, n: int, generator: torch.Generator | None) -> Tensor:
        a = self._anchor
        return torch.randn(n, self.features, generator=generator, device=a.device, dtype=a.dtype)

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x), shape (B,)."""
        refuse_condition("flow", y)
        z, ladj = self.transform(x.reshape(len(x), self.features))
        return standard_normal_log_prob(z) + ladj

    def rsample_and_log_prob(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n reparameterized samples and their log p, differentiable in the parameters (for reverse KL)."""
        z = self._noise(n, generator)
        x, ladj = self.transform.inverse(z)
        return x.reshape(n, *self.event_shape), standard_normal_log_prob(z) - ladj

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **how: Any) -> Tensor:
        """n samples, shape (n, *event_shape); with a generator, the global RNG is left untouched."""
        refuse_condition("flow", y)
        check_how("flow", how, self.SAMPLING_OPTIONS)
        x, _ = self.transform.inverse(temperature(how) * self._noise(n, generator))
        return x.reshape(n, *self.event_shape)


def num_parameters(module: nn.Module) -> int:
    """The number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------------
# The registered factory.

TRANSFORMS: dict[str, Callable[[int, Sequence[int], int, float], Transform]] = {
    "affine-coupling": lambda features, hidden, bins, bound: AffineCoupling(features, hidden),
    "maf": lambda features, hidden, bins, bound: MaskedAutoregressive(features, hidden),
    "spline-coupling": lambda features, hidden, bins, bound: SplineCoupling(features, hidden, bins, bound),
    "spline-ar": lambda features, hidden, bins, bound: SplineAutoregressive(features, hidden, bins, bound),
}
"""The learnable transforms by config name: ``TRANSFORMS[name](features, hidden, bins, bound)``."""

PERMUTATIONS: dict[str, Callable[[int], Transform]] = {"reverse": Reverse, "random": RandomPermutation}


@MODELS.register("flow")
def flow(
    event_shape: Sequence[int],
    transform: Literal["affine-coupling", "maf", "spline-coupling", "spline-ar"] = "spline-coupling",
    layers: int = 4,
    hidden: tuple[int, ...] = (64, 64),
    bins: int = 24,
    bound: float = 3.0,
    actnorm: bool = True,
    permutation: Literal["reverse", "random"] = "reverse",
) -> Flow:
    """``layers`` × ([ActNorm] → [permutation, from the second layer on] → transform) on the flat event.

    The defaults fit the 8-Gaussian ring to within ~0.03 nats of its entropy in 2,000 Adam steps (EMA weights)
    with fewer parameters than zuko's 5-layer NSF (35.6k); ``bins``/``bound`` only matter for the splines.
    """
    shape = tuple(event_shape)
    require(len(shape) >= 1 and min(shape) >= 1, f"event_shape must be non-empty with sizes >= 1, got {shape}")
    require(transform in TRANSFORMS, f"transform must be one of {', '.join(TRANSFORMS)}; got {transform!r}")
    require(permutation in PERMUTATIONS, f"permutation must be reverse or random; got {permutation!r}")
    require(layers >= 1, f"layers must be >= 1, got {layers}")
    require(all(h >= 1 for h in hidden), f"hidden sizes must be >= 1, got {hidden}")
    require(bins >= 2, f"bins must be >= 2, got {bins}")
    require(math.isfinite(bound) and bound > 0, f"bound must be a finite number > 0, got {bound}")
    features = math.prod(shape)
    parts: list[Transform] = []
    for i in range(layers):
        if actnorm:
            parts.append(ActNorm(features))
        if i > 0:
            parts.append(PERMUTATIONS[permutation](features))
        parts.append(TRANSFORMS[transform](features, hidden, bins, bound))
    return Flow(Chain(parts), shape)
