"""genbits' FID / KID / precision-recall vs torchmetrics and prdc on the same feature vectors.

    python benchmarks/metrics.py [--n 10000] [--dim 2048] [--repeats 3] [--threads 2]

Features: two sets of n ReLU'd correlated Gaussian vectors (Inception pool features are ReLU outputs too),
the second with a shifted mean and scaled covariance, in float64, fed identically to every library.
torchmetrics gets an identity feature module. KID is compared on a single subset holding all n rows of each
set (random subsets differ between libraries), FID on all rows, precision/recall (k = 3) against prdc.
Each timing is the median of ``repeats`` runs, genbits and its peer alternating; relative differences are
|genbits − peer| / |peer|.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from prdc import compute_prdc
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from genbits.metrics import fid, kid, precision_recall


class Identity(nn.Module):
    """Features in, features out: how torchmetrics is handed precomputed features."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: Tensor) -> Tensor:
        return x


def features(n: int, dim: int, seed: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=generator, dtype=torch.float64) / dim**0.5
    real = torch.relu(torch.randn(n, dim, generator=generator, dtype=torch.float64) @ mixing)
    fake = torch.relu((1.1 * torch.randn(n, dim, generator=generator, dtype=torch.float64) + 0.1) @ mixing)
    return real, fake


def timed_pair(
    ours: Callable[[], object], peer: Callable[[], object], repeats: int
) -> tuple[object, float, object, float]:
    """Values and median seconds of two computations, run alternately so machine load hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    values: list[object] = [None, None]
    for _ in range(repeats):
        for i, fn in enumerate((ours, peer)):
            start = time.perf_counter()
            values[i] = fn()
            times[i].append(time.perf_counter() - start)
    return values[0], statistics.median(times[0]), values[1], statistics.median(times[1])


def torchmetrics_fid(real: Tensor, fake: Tensor) -> float:
    metric = FrechetInceptionDistance(feature=Identity(real.shape[1]))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def torchmetrics_kid(real: Tensor, fake: Tensor) -> float:
    metric = KernelInceptionDistance(feature=Identity(real.shape[1]), subsets=1, subset_size=len(real))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute()[0])


def prdc_pr(real: Tensor, fake: Tensor) -> tuple[float, float]:
    result = compute_prdc(real.numpy(), fake.numpy(), nearest_k=3)
    return float(result["precision"]), float(result["recall"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    real, fake = features(args.n, args.dim, seed=0)
    rows = []
    for metric, ours, peer_name, peer in (
        ("FID", lambda: fid(real, fake), "torchmetrics", lambda: torchmetrics_fid(real, fake)),
        (
            "KID (1 subset of n)",
            lambda: kid(real, fake, 1, args.n)[0],
            "torchmetrics",
            lambda: torchmetrics_kid(real, fake),
        ),
        ("precision, recall", lambda: precision_recall(real, fake), "prdc", lambda: prdc_pr(real, fake)),
    ):
        value, seconds, peer_value, peer_seconds = timed_pair(ours, peer, args.repeats)
        ours_values, peer_values = np.atleast_1d(value), np.atleast_1d(peer_value)
        difference = float(np.max(np.abs(ours_values - peer_values) / np.abs(peer_values)))
        rows.append((metric, ours_values, seconds, peer_name, peer_values, peer_seconds, difference))
    print(f"n = {args.n} × {args.n}, dim = {args.dim}, threads = {args.threads}, median of {args.repeats}\n")
    print(f"| metric | genbits | s | peer | peer value | s | speed-up | rel. diff |\n|{'---|' * 8}")
    for metric, value, seconds, peer_name, peer_value, peer_seconds, difference in rows:
        show = ", ".join(f"{v:.6g}" for v in value)
        show_peer = ", ".join(f"{v:.6g}" for v in peer_value)
        print(
            f"| {metric} | {show} | {seconds:.2f} | {peer_name} | {show_peer} | {peer_seconds:.2f} | "
            f"{peer_seconds / seconds:.1f}× | {difference:.1e} |"
        )


if __name__ == "__main__":
    main()
