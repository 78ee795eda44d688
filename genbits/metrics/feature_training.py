"""Train and save genbits' own feature classifiers (``genbits features train``).

The shipped weights in ``genbits/metrics/weights/`` were made by this code; the command that rebuilds them is in
the README, and each file records its training settings and test accuracy in its safetensors metadata.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from genbits.data import build_dataset
from genbits.metrics.extractors import METADATA_KEY, FeatureNet
from genbits.train.checkpoint import write_safetensors


@torch.no_grad()
def accuracy(net: FeatureNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Share of correctly classified images (eval mode)."""
    net.eval()
    correct = sum(
        (net(xb).argmax(1) == yb).sum().item() for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True)
    )
    return correct / len(x)


def train_feature_net(
    dataset: str,
    options: dict[str, Any] | None = None,
    epochs: int = 6,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    channels: tuple[int, ...] = (32, 64),
    hidden: int = 128,
    progress: bool = True,
) -> tuple[FeatureNet, dict[str, Any]]:
    """Fit a :class:`FeatureNet` on the dataset's train split with Adam and a cosine schedule; report test accuracy.

    Returns the net (eval mode) and metadata to store beside the weights.
    """
    options = dict(options or {})
    train_set = build_dataset(dataset, options, split="train", seed=seed)
    test_set = build_dataset(dataset, options, split="test", seed=seed)
    if train_set.y is None or train_set.num_classes is None:
        raise ValueError(f"{dataset} has no labels: a feature classifier needs a labelled dataset")
    size = train_set.x.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = FeatureNet(size, channels, hidden, train_set.num_classes)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * math.ceil(len(train_set.x) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    bar = tqdm(total=steps, desc=f"feature net on {dataset}", unit="step", disable=not progress)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(train_set.x), generator=generator)
        for index in order.split(batch_size):
            loss = F.cross_entropy(net(train_set.x[index]), train_set.y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    metadata = {
        "architecture": net.architecture(),
        "dataset": dataset,
        "options": options,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "train_accuracy": accuracy(net, train_set.x, train_set.y),
        "test_accuracy": accuracy(net, test_set.x, test_set.y),
    }
    return net.eval(), metadata


def save_feature_net(net: FeatureNet, metadata: dict[str, Any], path: str | Path) -> Path:
    """Weights as safetensors, metadata as JSON in the header (read back by ``load_feature_net``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    write_safetensors(state, path, {METADATA_KEY: json.dumps(metadata)})
    return path
