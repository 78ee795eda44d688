"""The data package: toys and exact densities against independent references, loaders on files made here."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from genbits.data import GaussianMixture, build_dataset, read_idx
from genbits.data.images import FASHION_MNIST, digits, fashion_mnist, idx_dataset, png_folder
from genbits.errors import ConfigError, DatasetNotFound
from genbits.registry import DATASETS

TOYS = ["ring", "grid", "mog16", "bimodal", "moons", "spirals", "checkerboard"]
MIXTURES = ["ring", "grid", "mog16", "bimodal"]


def draw(dataset, n: int, seed: int = 0):
    return dataset.sample(n, torch.Generator().manual_seed(seed))


def test_every_dataset_is_registered():
    assert set(TOYS + ["digits", "idx", "fashion-mnist", "png-folder"]) <= set(DATASETS.names())


# ---- 2-D toys ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_modes, radius", [(8, 2.0), (5, 1.0)])
def test_ring_modes_sit_at_angles_2pi_k_over_n(n_modes, radius):
    centres = DATASETS["ring"](n_modes=n_modes, radius=radius).centres.double()
    angles = torch.atan2(centres[:, 1], centres[:, 0]).remainder(2 * math.pi).sort().values
    expected = 2 * math.pi * torch.arange(n_modes, dtype=torch.float64) / n_modes
    assert torch.allclose(angles, expected, atol=1e-6)
    assert torch.allclose(centres.norm(dim=1), torch.full((n_modes,), radius, dtype=torch.float64), atol=1e-6)


def test_grid_and_mog16_centres():
    def centre_set(name):
        return {tuple(c) for c in DATASETS[name]().centres.tolist()}

    assert centre_set("grid") == {(a, b) for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)}
    assert centre_set("mog16") == {(a, b) for a in (-1.5, -0.5, 0.5, 1.5) for b in (-1.5, -0.5, 0.5, 1.5)}


@pytest.mark.parametrize("name", MIXTURES)
def test_mixture_samples_match_components(name):
    dataset = DATASETS[name]()
    batch = draw(dataset, 40_000)
    for k in range(dataset.num_classes):
        points = batch.x[batch.y == k].double()
        share = len(points) / len(batch)
        assert share == pytest.approx(dataset.weights[k].item(), abs=5 * math.sqrt(share / len(batch)))
        assert torch.allclose(points.mean(0), dataset.centres[k].double(), atol=5 * dataset.std / len(points) ** 0.5)
        assert torch.allclose(points.std(0), torch.full((2,), dataset.std).double(), rtol=0.05)


def test_bimodal_weights_are_unequal():
    dataset = DATASETS["bimodal"](separation=6.0, weight=0.8)
    assert dataset.centres.tolist() == [[-3.0, 0.0], [3.0, 0.0]]
    assert dataset.weights.tolist() == pytest.approx([0.8, 0.2])


def scipy_mixture_log_prob(dataset, x: np.ndarray) -> np.ndarray:
    cov = dataset.std**2 * np.eye(2)
    parts = [
        math.log(w) + multivariate_normal(c, cov).logpdf(x)
        for c, w in zip(dataset.centres.double().numpy(), dataset.weights.double().tolist(), strict=True)
    ]
    return logsumexp(np.stack(parts), axis=0)


@pytest.mark.parametrize("name", MIXTURES)
def test_mixture_log_prob_matches_scipy(name):
    dataset = DATASETS[name]()
    near = draw(dataset, 200).x.double()
    far = 3 * torch.randn(200, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = torch.cat([near, far])
    assert np.allclose(dataset.log_prob(x).numpy(), scipy_mixture_log_prob(dataset, x.numpy()), rtol=1e-9)


def test_gaussian_mixture_with_custom_weights_matches_scipy():
    dataset = GaussianMixture(torch.tensor([[0.0, 1.0], [2.0, -1.0], [-3.0, 0.5]]), 0.7, torch.tensor([1.0, 2.0, 5.0]))
    x = draw(dataset, 300).x.double()
    assert np.allclose(dataset.log_prob(x).numpy(), scipy_mixture_log_prob(dataset, x.numpy()), rtol=1e-9)
    assert dataset.log_prob(x.float()).dtype == torch.float32


@pytest.mark.parametrize(
    "name, low, high, step",
    [
        ("ring", (-2.5, -2.5), (2.5, 2.5), 0.01),
        ("bimodal", (-7, -4), (7, 4), 0.05),
        ("checkerboard", (-5, -5), (5, 5), 0.01),
    ],
)
def test_density_integrates_to_one(name, low, high, step):
    dataset = DATASETS[name]()
    xs = torch.arange(low[0] + step / 2, high[0], step, dtype=torch.float64)
    ys = torch.arange(low[1] + step / 2, high[1], step, dtype=torch.float64)
    points = torch.stack(torch.meshgrid(xs, ys, indexing="ij"), dim=-1).reshape(-1, 2)
    mass = dataset.log_prob(points).exp().sum().item() * step**2  # midpoint rule
    assert mass == pytest.approx(1.0, abs=1e-4)


def test_checkerboard_cells_labels_and_density():
    for size in (3, 4):
        dataset = DATASETS["checkerboard"](size=size)
        assert dataset.num_classes == math.ceil(size * size / 2)
        batch = draw(dataset, 5000)
        assert bool(((batch.x >= -size) & (batch.x < size)).all())
        cell = torch.floor((batch.x + size) / 2).long()  # (column i, row j) from the lower-left corner
        i, j = cell[:, 0], cell[:, 1]
        assert bool(((i + j) % 2 == 0).all())  # black squares only, the corner cell included
        assert torch.equal(batch.y, (j * size + i) // 2)  # rank of the cell among black cells, row by row
        assert torch.allclose(dataset.log_prob(batch.x), torch.tensor(-math.log(dataset.num_classes * 4.0)))
    board = DATASETS["checkerboard"]()
    outside = torch.tensor([[-3.0, -1.0], [-1.0, -3.0], [4.5, 0.0], [0.0, -4.0001]])  # two white cells, two off-board
    assert torch.equal(board.log_prob(outside), torch.full((4,), -math.inf))


def test_moons_lie_on_their_half_circles():
    batch = draw(DATASETS["moons"](noise=0.0), 2000)
    outer, inner = batch.x[batch.y == 0], batch.x[batch.y == 1]
    assert torch.allclose(outer.norm(dim=1), torch.ones(len(outer)), atol=1e-5) and bool((outer[:, 1] >= 0).all())
    assert torch.allclose((inner - torch.tensor([1.0, 0.5])).norm(dim=1), torch.ones(len(inner)), atol=1e-5)
    assert bool((inner[:, 1] <= 0.5).all())


def test_spiral_points_lie_on_their_arm():
    batch = draw(DATASETS["spirals"](n_arms=3, noise=0.0), 3000)
    r = batch.x.norm(dim=1)
    angle = 2 * math.pi * (1.5 * r / 3 + batch.y / 3)
    assert float(r.max()) <= 3.0
    assert torch.allclose(batch.x, r[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1), atol=1e-4)


@pytest.mark.parametrize("name", ["moons", "spirals"])
def test_toys_without_density_say_so(name):
    dataset = DATASETS[name]()
    assert not dataset.has_log_prob and dataset.centres is None
    with pytest.raises(NotImplementedError):
        dataset.log_prob(torch.zeros(1, 2))


@pytest.mark.parametrize("name", TOYS)
def test_toys_use_only_their_generator(name):
    dataset = DATASETS[name]()
    torch.manual_seed(0)
    global_state = torch.get_rng_state()
    first, again, other = draw(dataset, 256, seed=1), draw(dataset, 256, seed=1), draw(dataset, 256, seed=2)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    assert not torch.equal(first.x, other.x)


@pytest.mark.parametrize("name", TOYS)
def test_toy_batches_carry_every_label(name):
    dataset = DATASETS[name]()
    batch = draw(dataset, 4000)
    assert batch.x.shape == (4000, 2) and batch.x.dtype == torch.float32
    assert batch.y.shape == (4000,) and batch.y.dtype == torch.int64
    assert set(batch.y.tolist()) == set(range(dataset.num_classes))
    assert len(draw(dataset, 0)) == 0


@pytest.mark.parametrize(
    "name, options, option",
    [
        ("ring", {"std": 0.0}, "std"),
        ("ring", {"std": -0.1}, "std"),
        ("ring", {"std": math.nan}, "std"),
        ("ring", {"n_modes": 0}, "n_modes"),
        ("ring", {"radius": 0.0}, "radius"),
        ("grid", {"size": 0}, "size"),
        ("grid", {"spacing": -2.0}, "spacing"),
        ("grid", {"std": 0.0}, "std"),
        ("mog16", {"std": -1.0}, "std"),
        ("bimodal", {"weight": 0.0}, "weight"),
        ("bimodal", {"weight": 1.0}, "weight"),
        ("bimodal", {"separation": 0.0}, "separation"),
        ("bimodal", {"std": 0.0}, "std"),
        ("moons", {"noise": -0.1}, "noise"),
        ("spirals", {"n_arms": 0}, "n_arms"),
        ("spirals", {"noise": math.inf}, "noise"),
        ("checkerboard", {"size": 0}, "size"),
    ],
)
def test_bad_toy_parameters_name_the_option(name, options, option):
    with pytest.raises(ValueError, match=f"^{option} must be"):
        DATASETS[name](**options)
    with pytest.raises(ConfigError, match=f"data \\({name}\\): {option} must be"):
        build_dataset(name, options)


@pytest.mark.parametrize(
    "centres, weights, word",
    [
        (torch.zeros(3), None, "centres"),
        (torch.zeros(0, 2), None, "centres"),
        (torch.zeros(2, 2), torch.ones(3), "weights"),
        (torch.zeros(2, 2), torch.tensor([1.0, -1.0]), "weights"),
        (torch.zeros(2, 2), torch.zeros(2), "weights"),
    ],
)
def test_gaussian_mixture_rejects_bad_shapes(centres, weights, word):
    with pytest.raises(ValueError, match=word):
        GaussianMixture(centres, 1.0, weights)


def test_build_dataset_coerces_options():
    dataset = build_dataset("ring", {"n_modes": "4", "std": "0.1"}, split="test", seed=3)
    assert dataset.num_classes == 4 and dataset.std == 0.1


# ---- IDX files ---------------------------------------------------------------------------------------------

IDX_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, IDX_CODES[array.dtype.type], array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-5, 0, 7], dtype=np.int8),
        np.array([[-300, 2], [3, 30000]], dtype=np.int16),
        np.array([-70000, 1, 2**30], dtype=np.int32),
        np.array([[0.5, -1.25e-3]], dtype=np.float32),
        np.array([math.pi, -1e300], dtype=np.float64),
    ],
    ids=lambda a: str(a.dtype),
)
def test_idx_round_trip(tmp_path, array, suffix):
    read = read_idx(write_idx(tmp_path / f"data{suffix}", array))
    assert read.dtype == array.dtype and read.shape == array.shape
    assert np.array_equal(read, array)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda data: b"\x01" + data[1:], "not an IDX file"),
        (lambda data: data[:2] + b"\x07" + data[3:], "not an IDX file"),
        (lambda data: data[:-1], "bytes"),
        (lambda data: data + b"\0", "bytes"),
        (lambda data: data[:6], "header"),
        (lambda data: gzip.compress(data)[:-8], "gzip"),
    ],
)
def test_malformed_idx_raises_value_error_naming_the_file(tmp_path, corrupt, message):
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(corrupt(idx_bytes(np.zeros((2, 3, 3), dtype=np.uint8))))
    with pytest.raises(ValueError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value)


def write_mnist_split(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, suffix: str) -> None:
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)


@pytest.fixture
def mnist_folder(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), np.array([0, 1, 2, 2, 1, 0], dtype=np.uint8)
    test = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), np.array([3, 1, 0, 2], dtype=np.uint8)
    write_mnist_split(tmp_path, "train", *train, suffix=".gz")
    write_mnist_split(tmp_path, "t10k", *test, suffix="")
    return tmp_path, {"train": train, "test": test}


@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_dataset_loads_each_split(mnist_folder, split):
    folder, arrays = mnist_folder
    images, labels = arrays[split]
    dataset = idx_dataset(path=str(folder), split=split)
    assert dataset.x.shape == (len(images), 1, 28, 28) and dataset.x.dtype == torch.float32
    assert torch.equal(dataset.x, torch.from_numpy(images).unsqueeze(1).float() / 255)
    assert dataset.y.tolist() == labels.tolist() and dataset.y.dtype == torch.int64
    assert dataset.levels == 256 and dataset.num_classes == int(labels.max()) + 1


def test_idx_size_averages_areas_onto_256_levels(mnist_folder):
    folder, arrays = mnist_folder
    images = arrays["train"][0].astype(np.float64)
    dataset = idx_dataset(path=str(folder), size=14)
    blocks = images.reshape(6, 14, 2, 14, 2).mean(axis=(2, 4))
    assert dataset.x.shape == (6, 1, 14, 14)
    assert np.allclose(dataset.x.squeeze(1).numpy(), np.round(blocks) / 255, atol=1e-6)
    with pytest.raises(ValueError, match="size must be"):
        idx_dataset(path=str(folder), size=29)
    with pytest.raises(ValueError, match="size must be"):
        idx_dataset(path=str(folder), size=-1)


def test_idx_dataset_errors(mnist_folder, tmp_path):
    folder, _ = mnist_folder
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFound, match="t10k-labels-idx1-ubyte.*data.path=DIR"):
        idx_dataset(path=str(folder), split="test")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        idx_dataset(path=str(folder), split="valid")
    with pytest.raises(ConfigError, match="path is required"):
        build_dataset("idx", {})
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))  # the raw file wins over .gz
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        idx_dataset(path=str(folder))


def test_missing_fashion_mnist_says_how_to_install_it(tmp_path):
    with pytest.raises(DatasetNotFound, match="apt-get install dataset-fashion-mnist") as error:
        fashion_mnist(path=str(tmp_path / "absent"))
    assert "data.path=DIR" in str(error.value)
    with pytest.raises(DatasetNotFound, match="apt-get install dataset-fashion-mnist"):
        build_dataset("fashion-mnist", {"path": str(tmp_path)}, split="test")


@pytest.mark.skipif(not Path(FASHION_MNIST).is_dir(), reason=f"Fashion-MNIST is not installed in {FASHION_MNIST}")
def test_real_fashion_mnist_test_split():
    dataset = build_dataset("fashion-mnist", {}, split="test")
    assert dataset.x.shape == (10_000, 1, 28, 28) and dataset.levels == 256 and dataset.num_classes == 10
    assert float(dataset.x.min()) == 0.0 and float(dataset.x.max()) == 1.0
    assert torch.equal(dataset.x * 255, torch.round(dataset.x * 255))
    assert torch.bincount(dataset.y).tolist() == [1000] * 10


# ---- digits ------------------------------------------------------------------------------------------------


def test_digits_splits_cover_sklearns_digits_once():
    from sklearn.datasets import load_digits

    train, test = digits(split="train"), digits(split="test")
    assert (len(train), len(test)) == (1500, 297) and train.x.shape[1:] == (1, 8, 8)
    assert train.levels == 17 and train.num_classes == 10
    x = torch.cat([train.x, test.x]).squeeze(1).double()
    assert torch.allclose(x, torch.from_numpy(load_digits().images / 16))
    assert torch.equal(torch.cat([train.y, test.y]), torch.from_numpy(load_digits().target).long())
    assert set(test.y.tolist()) == set(range(10))
    with pytest.raises(ConfigError, match="split must be"):
        build_dataset("digits", {}, split="valid")


# ---- PNG folders -------------------------------------------------------------------------------------------


def write_png(path: Path, pixels: np.ndarray, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path)


def grey(value: int, shape=(5, 4)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


def test_png_folder_labels_come_from_sorted_subfolders(tmp_path):
    write_png(tmp_path / "train" / "cat" / "a.png", grey(200))
    write_png(tmp_path / "train" / "ant" / "b.png", grey(10))
    write_png(tmp_path / "train" / "ant" / "a.png", grey(30))
    write_png(tmp_path / "train" / "ant" / "rgb.png", np.stack([grey(77)] * 3, axis=-1), mode="RGB")
    write_png(tmp_path / "train" / "dog" / "c.png", grey(90))
    write_png(tmp_path / "test" / "cat" / "z.png", grey(255))
    train = png_folder(path=str(tmp_path))
    assert train.x.shape == (5, 1, 5, 4) and train.levels == 256 and train.num_classes == 3
    assert train.y.tolist() == [0, 0, 0, 1, 2]  # ant: a, b, rgb; then cat, then dog
    assert torch.allclose(train.x[:, 0, 0, 0], torch.tensor([30, 10, 77, 200, 90]) / 255)
    test = build_dataset("png-folder", {"path": str(tmp_path)}, split="test")
    assert test.y.tolist() == [1] and test.num_classes == 3 and float(test.x.max()) == 1.0  # labels as in train


def test_png_folder_without_subfolders_has_no_labels_and_no_test_split(tmp_path):
    write_png(tmp_path / "one.png", grey(1))
    write_png(tmp_path / "two.png", grey(2))
    dataset = png_folder(path=str(tmp_path))
    assert dataset.y is None and dataset.num_classes is None and len(dataset) == 2
    assert dataset.get(torch.tensor([1])).y is None
    with pytest.raises(ValueError, match="no train/ or test/ subfolder"):
        png_folder(path=str(tmp_path), split="test")


def test_png_folder_errors(tmp_path):
    with pytest.raises(DatasetNotFound, match="data.path=DIR"):
        png_folder(path=str(tmp_path / "absent"))
    with pytest.raises(DatasetNotFound, match="no PNG file"):
        png_folder(path=str(tmp_path))
    write_png(tmp_path / "a.png", grey(1))
    write_png(tmp_path / "b.png", grey(1, shape=(4, 5)))
    with pytest.raises(ValueError, match="b.png: 5×4 pixels, but .*a.png is 4×5"):
        png_folder(path=str(tmp_path))
    (tmp_path / "b.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="b.png: not a readable image"):
        png_folder(path=str(tmp_path))
    write_png(tmp_path / "class" / "c.png", grey(1))
    with pytest.raises(ValueError, match="beside the class subfolders"):
        png_folder(path=str(tmp_path))
