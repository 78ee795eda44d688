"""Autoregressive models: p(x) = Π_i p(x_i | x_<i), an exact likelihood, sampled one dimension at a time.

- :class:`MADE` (Germain et al. 2015, "MADE: Masked Autoencoder for Distribution Estimation"): an MLP whose weights
  are masked so that output block i sees only the inputs before i in an ordering. With several (ordering,
  connectivity) mask sets it is trained order-agnostically (one set drawn per training batch) and evaluated as the
  connectivity-agnostic ensemble: the uniform mixture over the sets, itself a normalized density.
- :class:`PixelCNN`, gated (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders"): a
  vertical stack (rows above) and a horizontal stack (pixels to the left in the row) of gated convolutions, the
  vertical one feeding the horizontal one after a one-row shift, so no earlier pixel is lost in a blind spot; class
  conditioning by a per-class bias in every gate, with a null class for classifier-free guidance.

**Discrete likelihoods.** On images (data with ``levels`` grey levels) each conditional is a distribution over the
levels themselves: a ``levels``-way softmax, or for the PixelCNN a discretized logistic mixture (Salimans et al.
2017). ``log_prob`` is then the exact log-probability *mass* of the integer pixel values k = round(x·(levels − 1)),
never of dequantized values; such a model declares it by having ``levels`` (the :class:`~genbits.models.base.Discrete`
contract), and the likelihood objective and evaluation use it as it is. On continuous data (the 2-D toys) MADE's
conditionals are mixtures of Gaussians and ``log_prob`` is a density.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genbits.data.base import SampledDataset, TensorDataset
from genbits.errors import ConfigError
from genbits.models.base import check_how, num_classes_of, refuse_condition, temperature
from genbits.nn.likelihoods import build_likelihood
from genbits.registry import MODELS

# ----------------------------------------------------------------------------------------------------
# Conditionals: parameters (..., P) for values x (...) → log-probabilities (...) and samples (...).


class Categorical:
    """A ``levels``-way softmax over the grey levels k = round(x·(levels − 1)); x is returned as k / (levels − 1)."""

    def __init__(self, levels: int):
        self.levels = self.params = levels

    def levels_of(self, x: Tensor) -> Tensor:
        return (x * (self.levels - 1)).round().long().clamp(0, self.levels - 1)

    def level_log_probs(self, params: Tensor) -> Tensor:
        """log P(k) for every level: (..., levels)."""
        return F.log_softmax(params, -1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return self.level_log_probs(params).gather(-1, self.levels_of(x)[..., None])[..., 0]


class GaussianMixture:
    """A mixture of ``components`` Gaussians per dimension: (logits, means, log-scales), a density on the real line."""

    def __init__(self, components: int):
        self.components, self.params = components, 3 * components

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logits, mean, log_scale = params.chunk(3, -1)
        z = (x[..., None] - mean) * torch.exp(-log_scale)
        log_normal = -0.5 * z * z - log_scale - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(F.log_softmax(logits, -1) + log_normal, -1)

    def sample(self, params: Tensor, generator: torch.Generator | None, scale: float) -> Tensor:
        """Draw a component, then a value; ``scale`` T multiplies every component's standard deviation."""
        logits, mean, log_scale = params.chunk(3, -1)
        k = torch.multinomial(F.softmax(logits, -1).reshape(-1, self.components).cpu(), 1, generator=generator)
        k = k.to(params.device).reshape(*logits.shape[:-1], 1)
        noise = torch.randn(k.shape, generator=generator).to(params.device, params.dtype)
        return (mean.gather(-1, k) + scale * log_scale.gather(-1, k).exp() * noise)[..., 0]


def sample_levels(log_probs: Tensor, generator: torch.Generator | None, scale: float) -> Tensor:
    """One level per row of log-probabilities (..., L), drawn from softmax(log_probs / T) on the CPU (so a seeded
    generator gives the same draws on any device); returns the values k / (L − 1)."""
    probs = F.softmax(log_probs.float() / scale, -1)
    k = torch.multinomial(probs.reshape(-1, probs.shape[-1]).cpu(), 1, generator=generator)
    return (k.reshape(probs.shape[:-1]) / (probs.shape[-1] - 1)).to(log_probs.device, log_probs.dtype)


class LogisticMixtureHead:
    """The discretized logistic mixture of ``nn.likelihoods`` (Salimans et al. 2017) as one pixel's conditional:
    ``components`` logistics whose bins over the ``levels`` grey levels carry the exact mass of each level."""

    def __init__(self, levels: int, components: int):
        self.mixture = build_likelihood("logistic-mixture", levels, components)
        self.levels, self.params = levels, self.mixture.num_params

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        flat = self.mixture.log_prob(params.reshape(-1, self.params, 1), x.reshape(-1, 1))  # one value per row
        return flat.reshape(x.shape)

    def level_log_probs(self, params: Tensor) -> Tensor:
        """log P(k) for every level: (..., levels), each level scored as a value of its own."""
        grid = torch.arange(self.levels, device=params.device, dtype=params.dtype) / (self.levels - 1)
        shape = (*params.shape[:-1], self.levels)
        return self.log_prob(params[..., None, :].expand(*shape, self.params), grid.expand(shape))


def discrete_head(output: str, levels: int, mixtures: int) -> Categorical | LogisticMixtureHead:
    """The conditional of a pixel: a ``levels``-way ``softmax`` or a ``logistic-mixture`` of ``mixtures`` logistics
    (which needs grey levels: on binarized data a softmax is already the exact Bernoulli)."""
    if output == "softmax":
        return Categorical(levels)
    if output == "logistic-mixture":
        return LogisticMixtureHead(levels, mixtures)
    raise ValueError(f"output must be softmax or logistic-mixture, got {output!r}")


# ----------------------------------------------------------------------------------------------------
# MADE.


def made_masks(order: Tensor, hidden: Sequence[int], outputs_per_feature: int, generator: torch.Generator):
    """The masks of one MADE (Germain et al. 2015, §4): ``order[i]`` is input i's position (1 … D) in the ordering.

    Every hidden unit gets a degree m drawn uniformly from [min of the previous layer's degrees, D − 1] and sees the
    units of degree ≤ m below it; output block i (``outputs_per_feature`` units) sees hidden units of degree
    < order[i], so it depends exactly on the inputs before i in the ordering. Returns one (out, in) mask per layer.
    """
    features = len(order)
    degrees = [order]
    for size in hidden:
        low = min(int(degrees[-1].min()), features - 1)
        degrees.append(torch.randint(max(low, 1), max(features, 2), (size,), generator=generator))
    masks = [later[:, None] >= earlier for earlier, later in zip(degrees[:-1], degrees[1:], strict=True)]
    masks.append(order.repeat_interleave(outputs_per_feature)[:, None] > degrees[-1])
    return [m.float() for m in masks]


class MADE(nn.Module):
    """A MADE over a flat event of D features with ``orderings`` mask sets (set 0: the natural ordering).

    Order-agnostic training: in training mode ``log_prob`` uses one mask set drawn (from the global RNG, which
    checkpoints carry) per call; in evaluation mode it is the connectivity-agnostic ensemble, log (1/K) Σ_k p_k(x):
    a uniform mixture of K normalized autoregressive models, so still an exact density. Sampling draws a set per
    example (the mixture's component), then the features in that set's ordering, one network pass per feature.
    ``temperature`` T scales the conditionals: logits / T for levels, standard deviations × T for Gaussians.
    """

    SAMPLING_OPTIONS = ("temperature",)

    def __init__(
        self,
        event_shape: Sequence[int],
        hidden: Sequence[int],
        head: Categorical | GaussianMixture,
        orderings: int = 1,
        seed: int = 0,
    ):
        super().__init__()
        self.event_shape, self.head = torch.Size(event_shape), head
        self.features = math.prod(self.event_shape)
        if isinstance(head, Categorical):
            self.levels = head.levels  # the Discrete contract: log_prob is a probability mass on the levels
        generator = torch.Generator().manual_seed(seed)
        orders = [torch.arange(1, self.features + 1)]
        orders += [torch.randperm(self.features, generator=generator) + 1 for _ in range(orderings - 1)]
        masks = [made_masks(order, hidden, head.params, generator) for order in orders]
        sizes = [self.features, *hidden, self.features * head.params]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.register_buffer("orders", torch.stack(orders))  # (K, D)
        for i, layer_masks in enumerate(zip(*masks, strict=True)):
            self.register_buffer(f"mask{i}", torch.stack(layer_masks))  # (K, out, in)

    @property
    def orderings(self) -> int:
        return len(self.orders)

    def _encode(self, x: Tensor) -> Tensor:
        return 2 * x - 1 if isinstance(self.head, Categorical) else x

    def params(self, x: Tensor, k: int) -> Tensor:
        """The conditionals' parameters under mask set k: (B, D) → (B, D, P)."""
        h = self._encode(x)
        for i, layer in enumerate(self.layers):
            h = F.linear(h, layer.weight * getattr(self, f"mask{i}")[k], layer.bias)
            h = F.relu(h) if i < len(self.layers) - 1 else h
        return h.reshape(len(x), self.features, self.head.params)

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x), (B,): one random mask set in training mode, the ensemble of all of them in evaluation mode."""
        refuse_condition("made", y)
        x = x.reshape(len(x), self.features)
        if self.training:
            k = int(torch.randint(self.orderings, ())) if self.orderings > 1 else 0
            return self.head.log_prob(self.params(x, k), x).sum(-1)
        per_set = torch.stack([self.head.log_prob(self.params(x, k), x).sum(-1) for k in range(self.orderings)])
        return torch.logsumexp(per_set, 0) - math.log(self.orderings)

    def _draw(self, params: Tensor, generator: torch.Generator | None, scale: float) -> Tensor:
        if isinstance(self.head, Categorical):
            return sample_levels(self.head.level_log_probs(params), generator, scale)
        return self.head.sample(params, generator, scale)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **how: Any) -> Tensor:
        refuse_condition("made", y)
        check_how("made", how, self.SAMPLING_OPTIONS)
        scale = temperature(how)
        weight = self.layers[0].weight
        sets = torch.randint(self.orderings, (n,), generator=generator)
        x = torch.zeros(n, self.features, device=weight.device, dtype=weight.dtype)
        for k in sets.unique().tolist():
            rows = (sets == k).nonzero()[:, 0].to(x.device)
            part = x[rows]
            for i in torch.argsort(self.orders[k]).tolist():  # features in the ordering of set k
                part[:, i] = self._draw(self.params(part, k)[:, i], generator, scale)
            x[rows] = part
        return x.reshape(n, *self.event_shape)


@MODELS.register("made")
def made(
    event_shape: Sequence[int],
    dataset: SampledDataset | TensorDataset,
    hidden: tuple[int, ...] = (256, 256),
    orderings: int = 1,
    components: int = 10,
    seed: int = 0,
) -> MADE:
    """A MADE on the dataset: a ``levels``-way softmax per pixel on images (a Bernoulli on binarized ones), a
    mixture of ``components`` Gaussians per coordinate on continuous data. ``orderings`` > 1: order-agnostic
    training and the ensemble at evaluation; ``seed`` fixes the orderings and connectivities."""
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden must be one or more sizes >= 1, got {hidden}")
    if orderings < 1:
        raise ValueError(f"orderings must be >= 1, got {orderings}")
    if components < 1:
        raise ValueError(f"components must be >= 1, got {components}")
    levels = dataset.levels
    head = GaussianMixture(components) if levels is None else Categorical(levels)
    return MADE(event_shape, hidden, head, orderings, seed)


# ----------------------------------------------------------------------------------------------------
# Gated PixelCNN.


def shift_down(x: Tensor) -> Tensor:
    """Row i takes row i − 1 (row 0 zeros): what sees rows ≤ i now sees rows < i."""
    return F.pad(x, (0, 0, 1, 0))[..., :-1, :]


def shift_right(x: Tensor) -> Tensor:
    """Column j takes column j − 1 (column 0 zeros)."""
    return F.pad(x, (1, 0))[..., :-1]


def gate(x: Tensor) -> Tensor:
    a, b = x.chunk(2, 1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated layer of both stacks (van den Oord et al. 2016, Fig. 2).

    Vertical: a (r + 1) × (2r + 1) convolution over rows i − r … i, padded so the output keeps the image size.
    Horizontal: a 1 × (r + 1) convolution over columns j − r … j of the same row, plus the vertical features shifted
    down one row (a 1×1 convolution), so the horizontal stack sees rows < i and never row i to the right of j.
    The first layer's horizontal input is the image shifted right (mask A: pixel (i, j) itself excluded); later
    layers include j (mask B) and add a residual. A class adds its learned bias to both gates' pre-activations.
    """

    def __init__(self, in_channels: int, channels: int, kernel: int, classes: int | None, first: bool):
        super().__init__()
        self.r, self.first = kernel // 2, first
        self.vertical = nn.Conv2d(in_channels, 2 * channels, (self.r + 1, 2 * self.r + 1))
        self.horizontal = nn.Conv2d(in_channels, 2 * channels, (1, self.r + 1))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.embed = nn.Embedding(classes, 4 * channels) if classes else None

    def forward(self, v: Tensor, h: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        r = self.r
        v_pre = self.vertical(F.pad(v, (r, r, r, 0)))  # (B, 2C, H, W): rows i − r … i
        h_pre = self.horizontal(F.pad(h, (r, 0, 0, 0))) + self.vertical_to_horizontal(shift_down(v_pre))
        if self.embed is not None:
            v_bias, h_bias = self.embed(y)[:, :, None, None].chunk(2, 1)
            v_pre, h_pre = v_pre + v_bias, h_pre + h_bias
        h_out = self.out(gate(h_pre))
        return gate(v_pre), h_out if self.first else h + h_out


class PixelCNN(nn.Module):
    """A gated PixelCNN over one-channel images (1, H, W) with ``levels`` grey levels.

    ``log_prob(x, y)`` is the exact log-probability of the integer levels (no dequantization). Conditional models
    (``num_classes``) have a learned null class, index ``num_classes``: in training mode each label is replaced by it
    with probability ``p_uncond`` (from the global RNG, which checkpoints carry), so one network is both p(x | y)
    and p(x); ``y=None`` asks for p(x) and needs ``p_uncond`` > 0.

    Sampling, raster order, one network pass per pixel: ``temperature`` T divides the log-probabilities of the
    levels; ``guidance`` w (classifier-free, Ho & Salimans 2022, on the logits of each pixel's conditional):
    log p̃ = (1 + w)·log p(k | x_<, y) − w·log p(k | x_<), renormalized; w = 0 is plain conditional sampling.
    """

    SAMPLING_OPTIONS = ("temperature", "guidance")

    def __init__(
        self,
        event_shape: Sequence[int],
        head: Categorical | LogisticMixtureHead,
        channels: int,
        layers: int,
        kernel: int,
        num_classes: int | None,
        p_uncond: float,
    ):
        super().__init__()
        self.event_shape, self.head, self.levels, self.p_uncond = torch.Size(event_shape), head, head.levels, p_uncond
        if num_classes is not None:
            self.num_classes = num_classes
        classes = None if num_classes is None else num_classes + 1  # + the null class
        self.stack = nn.ModuleList(
            GatedLayer(1 if i == 0 else channels, channels, kernel, classes, first=i == 0) for i in range(layers)
        )
        self.output = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, head.params, 1)
        )

    def params(self, x: Tensor, y: Tensor | None) -> Tensor:
        """Each pixel's conditional parameters given the pixels before it: (B, 1, H, W) → (B, 1, H, W, P)."""
        v = 2 * x - 1
        h = shift_right(v)
        for layer in self.stack:
            v, h = layer(v, h, y)
        return self.output(h).permute(0, 2, 3, 1)[:, None]

    def _labels(self, y: Tensor | None, n: int, device: torch.device) -> Tensor | None:
        """The labels the network sees: y, or the null class where y is None (a conditional model's p(x))."""
        classes = num_classes_of(self)
        if classes is None:
            refuse_condition("pixelcnn", y)
            return None
        if y is None:
            if self.p_uncond <= 0:
                raise ValueError("this pixelcnn was trained with p_uncond=0: it has no unconditional p(x); pass y")
            return torch.full((n,), classes, dtype=torch.long, device=device)
        return y

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log P(x | y) of the grey levels, (B,), in nats."""
        labels = self._labels(y, len(x), x.device)
        if labels is not None and self.training and self.p_uncond > 0:
            dropped = torch.rand(len(x), device=x.device) < self.p_uncond
            labels = torch.where(dropped, torch.full_like(labels, self.num_classes), labels)
        return self.head.log_prob(self.params(x, labels), x).flatten(1).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **how: Any) -> Tensor:
        check_how("pixelcnn", how, self.SAMPLING_OPTIONS)
        scale, w = temperature(how), guidance(how)
        anchor = self.output[-1].weight
        classes = num_classes_of(self)
        if classes is not None and y is None:
            y = torch.randint(0, classes, (n,), generator=generator)
        labels = None if y is None and classes is None else self._labels(y, n, anchor.device)
        if w != 0:
            if classes is None or self.p_uncond <= 0:
                raise ConfigError(
                    "sampling option guidance needs a class-conditional pixelcnn trained with p_uncond > 0"
                )
            labels = torch.cat([labels.to(anchor.device), torch.full((n,), classes, device=anchor.device)])
        x = torch.zeros(n, *self.event_shape, device=anchor.device, dtype=anchor.dtype)
        _, height, width = self.event_shape
        for i in range(height):
            for j in range(width):
                inputs = x if w == 0 else torch.cat([x, x])
                log_p = self.head.level_log_probs(self.params(inputs, labels)[:, 0, i, j])  # (B, levels)
                if w != 0:
                    conditional, unconditional = log_p.chunk(2)
                    log_p = (1 + w) * conditional - w * unconditional
                x[:, 0, i, j] = sample_levels(log_p, generator, scale)
        return x


def guidance(how: dict[str, Any]) -> float:
    """The ``guidance`` option w (default 0: conditional sampling): a finite number ≥ 0."""
    value = how.get("guidance", 0.0)
    if isinstance(value, bool) or not isinstance(value, Real) or not (0 <= value < math.inf):
        raise ConfigError(f"sampling option guidance must be a finite number >= 0, got {value!r}")
    return float(value)


@MODELS.register("pixelcnn")
def pixelcnn(
    event_shape: Sequence[int],
    dataset: SampledDataset | TensorDataset,
    num_classes: int | None = None,
    channels: int = 32,
    layers: int = 6,
    kernel: int = 3,
    output: Literal["softmax", "logistic-mixture"] = "softmax",
    mixtures: int = 5,
    conditional: bool = False,
    p_uncond: float = 0.1,
) -> PixelCNN:
    """A gated PixelCNN on the dataset's one-channel images; ``output``: a softmax over the data's levels or a
    discretized mixture of ``mixtures`` logistics (PixelCNN++'s, fewer outputs than 256 levels).
    ``conditional``: on the dataset's classes, with the null class dropped in with probability ``p_uncond``
    (classifier-free guidance at sampling). ``kernel`` is odd; ``layers`` × (kernel // 2) rows and columns
    of receptive field."""
    shape = tuple(event_shape)
    if dataset.levels is None or len(shape) != 3 or shape[0] != 1:
        raise ValueError(f"pixelcnn needs one-channel images with grey levels, got event shape {shape}")
    if kernel < 3 or kernel % 2 == 0:
        raise ValueError(f"kernel must be odd and >= 3, got {kernel}")
    if layers < 1 or channels < 1:
        raise ValueError(f"layers and channels must be >= 1, got {layers} and {channels}")
    if conditional and not num_classes:
        raise ValueError("conditional=true needs a dataset with classes")
    if not 0 <= p_uncond < 1:
        raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond}")
    head = discrete_head(output, dataset.levels, mixtures)
    return PixelCNN(shape, head, channels, layers, kernel, num_classes if conditional else None, p_uncond)
