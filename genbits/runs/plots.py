"""Pictures of samples: scatter + learned density for 2-D data, grids for images. PNG files, no display needed."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from genbits.data.base import SampledDataset  # noqa: E402
from genbits.models.base import Density, Text, balanced_labels, device_of, num_classes_of  # noqa: E402
from genbits.models.latent import Encodes  # noqa: E402
from genbits.runs.units import label  # noqa: E402
from genbits.train.stream import seeded_generator  # noqa: E402


def image_grid(images: Tensor, columns: int = 8) -> np.ndarray:
    """(N, C, H, W) in [0, 1] → one (rows·H, columns·W[, C]) array with 1-pixel gaps."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    rows = -(-n // columns)
    grid = torch.ones(c, rows * (h + 1) - 1, columns * (w + 1) - 1)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        grid[:, r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = img
    array = grid.permute(1, 2, 0).numpy()
    return array[..., 0] if c == 1 else array


def scatter_limits(points: np.ndarray) -> tuple[float, float, float, float]:
    lo, hi = np.percentile(points, [0.5, 99.5], axis=0)
    pad = 0.15 * (hi - lo).max() + 1e-3
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2 + pad
    return centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half


@torch.no_grad()
def log_density_grid(
    log_prob, limits: tuple[float, float, float, float], nx: int = 200, ny: int | None = None, device="cpu"
) -> np.ndarray:
    """``log_prob`` evaluated on an (ny, nx) grid over ``limits`` = (x0, x1, y0, y1), rows bottom to top."""
    ny = ny or nx
    x0, x1, y0, y1 = limits
    xs, ys = torch.linspace(x0, x1, nx), torch.linspace(y0, y1, ny)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    values = torch.cat([log_prob(chunk.to(device)).cpu() for chunk in grid.split(8192)])
    return values.reshape(ny, nx).numpy()


@torch.no_grad()
def plot_samples(
    model,
    dataset,
    path: Path,
    generator: torch.Generator,
    n: int = 2000,
    y: Tensor | None = None,
    how: Mapping[str, Any] | None = None,
) -> int:
    """Data beside model samples (and the model's density where it has one); returns how many samples it drew (an
    image grid shows at most 64, a text picture 4).

    ``y``: labels for a conditional model; without them it gets balanced labels and an image grid shows one class
    per column. ``how``: sampling options, passed to ``model.sample``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(model, Text):
        return plot_text(model, path, generator, how)
    classes = num_classes_of(model)
    by_class = classes is not None and y is None
    columns = classes if by_class and classes <= 16 else 8
    if len(dataset.event_shape) > 1:  # an image grid shows at most 64: draw no more (autoregressive sampling is slow)
        n = min(n, columns * max(1, 64 // columns))
        y = None if y is None else y[:n]
    if by_class:
        y = balanced_labels(n, classes, device_of(model))
    samples = model.sample(n, y, generator=generator, **(how or {})).cpu()
    if samples.dim() == 2 and samples.shape[1] == 2:
        data = (
            dataset.sample(n, seeded_generator(0, 11)).x
            if isinstance(dataset, SampledDataset)
            else dataset.x[:n].reshape(-1, 2)
        )
        density = isinstance(model, Density) and classes is None  # a conditional density has one per class
        plot_2d(data.numpy(), samples.numpy(), model if density else None, path)
    else:
        panels = {"samples": samples.reshape(-1, *dataset.event_shape)}
        if isinstance(model, Encodes):  # a model with an encoder: its reconstructions of training data too
            panels["data (odd rows) and reconstructions (even rows)"] = reconstructions(model, dataset, columns)
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
        for ax, (title, images) in zip(axes[0], panels.items(), strict=True):
            grid = image_grid(images, columns)
            ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_axis_off()
            if len(panels) > 1:
                ax.set_title(title)
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
    return len(samples)


@torch.no_grad()
def reconstructions(model: Encodes, dataset, columns: int, rows: int = 4) -> Tensor:
    """``rows`` rows of training images (as served, e.g. binarized) each followed by its row of reconstructions."""
    x = dataset.get(torch.arange(rows * columns), seeded_generator(0, 12)).x.to(device_of(model))
    recon = model.reconstruct(x)
    pairs = torch.stack([x.reshape(rows, columns, *x.shape[1:]), recon.reshape(rows, columns, *x.shape[1:])], 1)
    return pairs.reshape(-1, *x.shape[1:]).cpu()


def printable(text: str) -> str:
    """Tabs as spaces, other control characters (a corpus' bells and backspaces) as '·'."""
    return "".join(c if c.isprintable() or c == "\n" else "·" for c in text.expandtabs(4))


def plot_text(model, path: Path, generator: torch.Generator, how: Mapping[str, Any] | None = None, n: int = 4) -> int:
    """A language model's samples as a picture of text: ``n`` blocks, one per panel row; returns ``n``."""
    texts = [model.decode(t) for t in model.sample(n, generator=generator, **(how or {})).cpu()]
    fig, ax = plt.subplots(figsize=(9, 1.6 * n))
    shown = "\n\n".join("\n".join(textwrap.wrap(printable(t), 100, replace_whitespace=False)) for t in texts)
    ax.text(0, 1, shown, family="monospace", fontsize=7, va="top", parse_math=False)
    ax.set_axis_off()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return n


def plot_2d(data: np.ndarray, samples: np.ndarray, model, path: Path) -> None:
    panels = 3 if model is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 4))
    limits = scatter_limits(data)
    for ax, points, title in ((axes[0], data, "data"), (axes[1], samples, "model samples")):
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, color="C0" if title == "data" else "C1")
        ax.set_title(title)
    if model is not None:
        device = next(model.parameters()).device
        log_density = log_density_grid(model.log_prob, limits, device=device)
        top = np.nanmax(log_density)
        # log scale, 12 nats deep: sharp modes and the mass between them both stay visible
        axes[2].imshow(np.clip(log_density, top - 12, top), origin="lower", extent=limits, cmap="viridis")
        axes[2].set_title("model log-density")
    for ax in axes:
        ax.set_xlim(limits[:2])
        ax.set_ylim(limits[2:])
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


DYNAMICS = ("grad_norm/", "update_ratio/", "spectral_norm/", "attention_entropy/")
LINEAR_SCALE = ("attention_entropy/",)  # entropies are compared with log n on a plain axis
DYNAMICS_TITLES = {  # what each panel shows, so the figure reads without genbits/metrics/dynamics.py at hand
    "grad_norm/": "gradient norm before clipping (thick: a player's whole gradient; thin: one parameter)",
    "update_ratio/": "‖Δθ‖ / ‖θ‖ of each update, per parameter",
    "spectral_norm/": "largest singular value of each weight matrix (power iteration)",
    "attention_entropy/": "attention entropy in nats, averaged over queries (thick: a layer's mean over heads)",
}


def plot_dynamics(records: list[dict], path: Path) -> bool:
    """Diagnostics logged with train.diagnostics: one panel per kind (log scale but for entropies), one line per
    player or layer."""
    kinds = [k for k in DYNAMICS if any(key.startswith(k) for r in records for key in r)]
    if not kinds:
        return False
    fig, axes = plt.subplots(len(kinds), 1, figsize=(8, 3 * len(kinds)), squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds, strict=True):
        keys = sorted({key for r in records for key in r if key.startswith(kind)})
        for key in keys:
            points = [(r["step"], r[key]) for r in records if key in r and r[key] > 0]
            if points:
                player_total = key.count("/") == 1
                ax.plot(*zip(*points, strict=True), lw=2.5 if player_total else 0.8, label=key.removeprefix(kind))
        ax.set_yscale("linear" if kind in LINEAR_SCALE else "log")
        ax.set_ylabel(kind.rstrip("/"))
        ax.set_title(DYNAMICS_TITLES[kind], fontsize=9)
        if len(keys) <= 12:
            ax.legend(fontsize=6, loc="best")
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_metrics(records: list[dict], path: Path) -> list[str]:
    """One panel per logged metric against step; returns the metric names plotted."""
    names, seen = [], []
    skip = ("step", "samples", "time", "event", "lr_scale")
    for name in sorted({k for r in records for k in r if k not in skip and not k.startswith(DYNAMICS)}):
        series = [r.get(name) for r in records]
        if series not in seen:  # e.g. a likelihood run logs its loss also as nll: one panel
            names.append(name)
            seen.append(series)
    if not names:
        return []
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 2.2 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        points = [(r["step"], r[name]) for r in records if name in r]
        ax.plot(*zip(*points, strict=True))
        ax.set_ylabel(label(name))
        for r in records:
            if r.get("event") == "rollback":
                ax.axvline(r["step"], color="red", alpha=0.4)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return names
