"""Finite image datasets held in memory: scikit-learn's digits, MNIST-format IDX files, folders of PNGs.

Nothing is downloaded at run time: files are read from disk, and a missing one is a ``DatasetNotFound`` that
says how to install it or which option points at it, never a bare traceback. Images are float32 (N, 1, H, W)
in [0, 1].
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from genbits.data.base import Batch, TensorDataset, require
from genbits.errors import DatasetNotFound
from genbits.registry import DATASETS

SPLITS = ("train", "test")
DIGITS_TEST = 297  # the last 297 of sklearn's 1,797 digits; the first 1,500 train
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


TEST_BINARIZATION_SEED = 0  # the test split is binarized once, the same for every run, so NLLs compare


def _check_split(split: str) -> None:
    require(split in SPLITS, f"split must be 'train' or 'test', got {split!r}")


class DynamicallyBinarized(TensorDataset):
    """Grey images served as {0, 1} pixels drawn x ~ Bernoulli(grey) afresh every time an image is drawn (dynamic
    binarization, Salakhutdinov & Murray 2008): the model sees new binary images each epoch. ``x`` keeps the grey
    values (the Bernoulli means); ``levels`` is 2, the served data's."""

    def get(self, index: Tensor, generator: torch.Generator | None = None) -> Batch:
        batch = super().get(index)
        return Batch(torch.bernoulli(batch.x, generator=generator), batch.y)


def binarized(grey: TensorDataset, split: str) -> TensorDataset:
    """The binarized form of ``grey``: dynamic on the train split, drawn once with a fixed seed on the test split."""
    if split == "train":
        return DynamicallyBinarized(grey.x, grey.y, 2, grey.num_classes, grey.name)
    x = torch.bernoulli(grey.x, generator=torch.Generator().manual_seed(TEST_BINARIZATION_SEED))
    return TensorDataset(x, grey.y, 2, grey.num_classes, grey.name)


@DATASETS.register("digits")
def digits(split: str = "train", binarize: bool = False) -> TensorDataset:
    """scikit-learn's bundled 8×8 digits: 1,797 images, values 0..16 → 17 grey levels, 10 classes; ``binarize``:
    {0, 1} pixels (2 levels) drawn from the grey values, dynamically on the train split.

    Split: the first 1,500 images train, the last 297 test. A fixed cut rather than a shuffle, so it never
    depends on a seed; both halves hold every class in near-equal numbers.
    """
    _check_split(split)
    from sklearn.datasets import load_digits  # here, so that importing genbits.data does not import sklearn

    bunch = load_digits()
    cut = slice(None, -DIGITS_TEST) if split == "train" else slice(-DIGITS_TEST, None)
    x = torch.tensor(bunch.images[cut] / 16, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target[cut], dtype=torch.int64)
    data = TensorDataset(x, y, levels=17, num_classes=10, name="digits")
    return binarized(data, split) if binarize else data


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), raw or gzip-compressed: gzip is told by its bytes, not its name.

    Header: two zero bytes, a dtype code, the number of dimensions, then each dimension as a big-endian
    uint32; the data follow, big-endian. Anything that does not add up raises ValueError naming the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: broken gzip file ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES:
        raise ValueError(
            f"{path}: not an IDX file (magic number 0x{raw[:4].hex()}; "
            f"expected 0x0000, a dtype code in {[hex(c) for c in IDX_DTYPES]} and the number of dimensions)"
        )
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header cut short ({len(raw)} bytes, {raw[3]} dimensions announced)")
    shape = struct.unpack(f">{raw[3]}I", raw[4:header])
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes, but IDX data of shape {shape} and dtype {dtype} take {expected}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def downscale(values: Tensor, size: int) -> Tensor:
    """Area-average grey values 0..255 to size×size (0 keeps the native size), then round to whole values so
    that ``levels`` stays true for discrete models. Averaging the integers keeps ties exact."""
    if size == 0:
        return values
    native = min(values.shape[-2:])
    require(1 <= size <= native, f"size must be 0 (native) or between 1 and {native}, got {size}")
    return torch.round(F.interpolate(values, size=(size, size), mode="area"))


def _find_idx(folder: Path, stem: str, name: str, hint: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetNotFound(f"{name}: no {stem}[.gz] in {folder}; {hint}set data.path=DIR to the folder holding it")


def _mnist_format(path: str, split: str, size: int, name: str, hint: str, num_classes: int | None) -> TensorDataset:
    """The ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` pair of one split; 256 grey levels."""
    _check_split(split)
    require(bool(path), "path is required: set data.path=DIR to a folder of MNIST-format IDX files")
    require(size >= 0, f"size must be 0 (native) or >= 1, got {size}")
    prefix = "train" if split == "train" else "t10k"
    folder = Path(path)
    images_file = _find_idx(folder, f"{prefix}-images-idx3-ubyte", name, hint)
    labels_file = _find_idx(folder, f"{prefix}-labels-idx1-ubyte", name, hint)
    images, labels = read_idx(images_file), read_idx(labels_file)
    require(
        images.ndim == 3 and images.dtype == np.uint8,
        f"{images_file}: expected (N, H, W) unsigned bytes, got shape {images.shape} dtype {images.dtype}",
    )
    require(
        labels.ndim == 1 and labels.dtype.kind in "iu" and len(labels) > 0 and labels.min() >= 0,
        f"{labels_file}: expected (N,) integer labels >= 0, got shape {labels.shape} dtype {labels.dtype}",
    )
    x = downscale(torch.from_numpy(images).unsqueeze(1).float(), size) / 255
    y = torch.from_numpy(labels.astype(np.int64))
    return TensorDataset(x, y, levels=256, num_classes=num_classes or int(y.max()) + 1, name=name)


@DATASETS.register("idx")
def idx_dataset(path: str = "", split: str = "train", size: int = 0, binarize: bool = False) -> TensorDataset:
    """Any MNIST-format folder; num_classes is the largest label of the split + 1; ``binarize`` as for digits."""
    data = _mnist_format(path, split, size, "idx", hint="", num_classes=None)
    return binarized(data, split) if binarize else data


@DATASETS.register("fashion-mnist")
def fashion_mnist(
    path: str = FASHION_MNIST, split: str = "train", size: int = 0, binarize: bool = False
) -> TensorDataset:
    """Zalando's Fashion-MNIST: 28×28 grey clothes in 10 classes, 60,000 train and 10,000 test images;
    ``binarize`` as for digits."""
    hint = f"install it into {FASHION_MNIST} with `apt-get install dataset-fashion-mnist` or "
    data = _mnist_format(path, split, size, "fashion-mnist", hint, num_classes=10)
    return binarized(data, split) if binarize else data


def _pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")


def _read_grey(file: Path) -> np.ndarray:
    try:
        with Image.open(file) as image:
            return np.asarray(image.convert("L"))
    except OSError as e:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{file}: not a readable image ({e})") from None


@DATASETS.register("png-folder")
def png_folder(path: str = "", split: str = "train") -> TensorDataset:
    """A folder of same-sized PNGs, read as grey ("L", 256 levels; colour is not supported yet).

    Splits: ``train/`` and ``test/`` subfolders if there are any, else the whole folder is the train split
    and there is no test split. Labels: each subfolder is a class, named in sorted order (0, 1, ...) over both
    splits, so a class missing from one split keeps its label; without subfolders the images have no labels.
    """
    _check_split(split)
    require(bool(path), "path is required: set data.path=DIR to a folder of PNG files")
    root = Path(path)
    if not root.is_dir():
        raise DatasetNotFound(f"png-folder: no folder {root}; set data.path=DIR to a folder of PNG files")
    splits = [root / s for s in SPLITS if (root / s).is_dir()]
    if splits:
        root = root / split
        if not root.is_dir():
            raise DatasetNotFound(f"png-folder: {root.parent} has split subfolders but no {split}/")
    elif split == "test":
        raise ValueError(f"{root} has no train/ or test/ subfolder, so all its images are the train split")
    classes = sorted({d.name for f in splits or [root] for d in f.iterdir() if d.is_dir() and d.name[0] != "."})
    loose = _pngs(root)
    if classes and loose:
        raise ValueError(f"{loose[0]}: a PNG beside the class subfolders {classes}; move it into one of them")
    labelled = [(f, k) for k, c in enumerate(classes) if (root / c).is_dir() for f in _pngs(root / c)]
    files = labelled or [(f, 0) for f in loose]
    if not files:
        raise DatasetNotFound(f"png-folder: no PNG file in {root}; set data.path=DIR to a folder of PNG files")
    arrays = [_read_grey(f) for f, _ in files]
    for (file, _), array in zip(files, arrays, strict=True):
        if array.shape != arrays[0].shape:
            raise ValueError(
                f"{file}: {array.shape[1]}×{array.shape[0]} pixels, but {files[0][0]} is "
                f"{arrays[0].shape[1]}×{arrays[0].shape[0]}; all images must share one size"
            )
    x = torch.from_numpy(np.stack(arrays)).unsqueeze(1).float() / 255
    y = torch.tensor([k for _, k in files], dtype=torch.int64) if classes else None
    return TensorDataset(x, y, levels=256, num_classes=len(classes) or None, name="png-folder")
