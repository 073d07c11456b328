"""Tests of stiefel_gan.data.

CIFAR-10 and STL-10 are written as tiny folders in their own on-disk formats and read by the real
torchvision classes; only the md5 sums torchvision checks are replaced (by those of the files written
here), and for the download tests the URL is pointed at a port where nothing listens.
"""

from __future__ import annotations

import hashlib
import math
import pickle
from itertools import islice

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_one_line, raises_one_line
from PIL import Image
from scipy import stats
from sklearn.datasets import load_digits as sklearn_digits
from torch.utils.data import Subset, TensorDataset
from torchvision.datasets import CIFAR10, STL10

from stiefel_gan.data.batches import infinite_batches
from stiefel_gan.data.datasets import DATASET_NAMES, build_dataset, data_shape
from stiefel_gan.data.images import DatasetUnavailableError, UInt8ImageDataset, load_cifar10, load_digits, load_stl10
from stiefel_gan.data.mixtures import MIXTURES, mixture_centers, mixture_std, sample_mixture

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
UNREACHABLE = "http://127.0.0.1:9/archive.tar.gz"  # the discard port: connection refused at once


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _to_unit(value) -> float:
    return value / 127.5 - 1.0


@pytest.fixture
def offline(monkeypatch):
    """No proxy may reroute the unreachable URL."""
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)


# ----------------------------------------------------------------------------------------- digits


def _bilinear_matrix(source: int, target: int) -> np.ndarray:
    """Explicit 1-D bilinear resampling matrix, half-pixel centres, edges clamped (align_corners=False)."""
    matrix = np.zeros((target, source))
    for i in range(target):
        x = min(max((i + 0.5) * source / target - 0.5, 0.0), source - 1)
        left = int(math.floor(x))
        right = min(left + 1, source - 1)
        matrix[i, left] += 1 - (x - left)
        matrix[i, right] += x - left
    return matrix


def test_digits_native_size_is_the_rescaled_original():
    bunch = sklearn_digits()
    images, labels = load_digits(8).tensors
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    np.testing.assert_array_equal(images[:, 0].numpy(), (bunch.images / 8 - 1).astype(np.float32))
    np.testing.assert_array_equal(labels.numpy(), bunch.target)
    # gray levels 0 and 16 both occur, so the range is exactly [-1, 1]
    assert images.min() == -1 and images.max() == 1


@pytest.mark.parametrize("image_size", [12, 16, 32])
def test_digits_upscaled_mean_image_matches_explicit_bilinear_operator(image_size):
    images, labels = load_digits(image_size).tensors
    assert images.shape == (1797, 1, image_size, image_size) and labels.shape == (1797,)
    assert images.min() >= -1 and images.max() <= 1
    # resampling is linear, so the mean of the upscaled images is the upscaled mean image
    original_mean = (sklearn_digits().images / 8 - 1).mean(axis=0)
    matrix = _bilinear_matrix(8, image_size)
    expected = matrix @ original_mean @ matrix.T
    np.testing.assert_allclose(images.mean(dim=0)[0].double().numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("image_size", [16, 32])
def test_digits_mean_image_pooled_back_resembles_the_original(image_size):
    mean_upscaled = load_digits(image_size).tensors[0].mean(dim=0, keepdim=True)
    pooled = F.avg_pool2d(mean_upscaled, image_size // 8)[0, 0]
    original_mean = torch.from_numpy(sklearn_digits().images / 8 - 1).float().mean(dim=0)
    # upscaling then pooling back only smooths (by 2x: the 3-tap kernel [1/8, 3/4, 1/8] per axis), so
    # the result stays within a small fraction of the image's own contrast (measured: 0.14)
    contrast = (original_mean - original_mean.mean()).norm()
    assert (pooled - original_mean).norm() < 0.2 * contrast
    correlation = np.corrcoef(pooled.flatten().numpy(), original_mean.flatten().numpy())[0, 1]
    assert correlation > 0.99


@pytest.mark.parametrize("image_size", [7, 0, -16, 16.0, True, "16", None])
def test_digits_bad_image_size(image_size):
    raises_one_line(lambda: load_digits(image_size), "image_size")


# --------------------------------------------------------------------------------------- mixtures


def test_mixture_centers_and_stds_are_the_literature_ones():
    ring = mixture_centers("ring8").double()
    assert ring.shape == (8, 2)
    torch.testing.assert_close(ring.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64))
    angles = torch.atan2(ring[:, 1], ring[:, 0]).remainder(2 * math.pi)
    torch.testing.assert_close(angles.sort().values, torch.arange(8, dtype=torch.float64) * math.pi / 4)
    grid = mixture_centers("grid25")
    assert grid.shape == (25, 2)
    expected_grid = {(float(x), float(y)) for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4)}
    assert {tuple(point) for point in grid.tolist()} == expected_grid
    assert mixture_std("ring8") == 0.02 and mixture_std("grid25") == 0.05
    assert set(MIXTURES) == {"ring8", "grid25"}


@pytest.mark.parametrize("name", ["ring8", "grid25"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixture_samples(name, seed):
    n = 20_000
    points, modes = sample_mixture(name, n, seed).tensors
    centers, std = mixture_centers(name), mixture_std(name)
    assert points.shape == (n, 2) and points.dtype == torch.float32 and modes.shape == (n,)
    # modes uniform: chi-square goodness of fit against equal counts
    counts = torch.bincount(modes, minlength=len(centers)).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    # each point is a sample of N(centre, std^2 I) around its own centre
    offsets = points - centers[modes]
    radii = offsets.norm(dim=1) / std  # Rayleigh: P(r > 4) = exp(-8) = 3.4e-4
    assert (radii < 4).float().mean() > 0.998 and radii.max() < 6
    assert abs(offsets.std().item() / std - 1) < 0.03
    assert offsets.mean(dim=0).abs().max() < 4 * std / math.sqrt(n)
    assert torch.equal(torch.cdist(points, centers).argmin(dim=1), modes)


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_mixture_seeding(name):
    first, again, other = (sample_mixture(name, 500, seed).tensors for seed in (3, 3, 4))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize(
    "name, n, seed, word",
    [("ring9", 10, 0, "mixture name"), ("ring8", 0, 0, "n="), ("grid25", 2.5, 0, "n="), ("ring8", 10, 0.5, "seed")],
)
def test_mixture_bad_arguments(name, n, seed, word):
    raises_one_line(lambda: sample_mixture(name, n, seed), word)


# --------------------------------------------------------------------------------------- CIFAR-10

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _write_cifar(root, images_per_file: int = 2) -> dict[str, str]:
    """Write cifar-10-batches-py/ in the Python pickle format; return md5 per file.

    Image ``j`` of file ``f``: red = 8 * row, green = 8 * column, blue = 10 * f + j (an identity).
    Each row of ``data`` is 1024 red values (row-major 32 x 32), then 1024 green, then 1024 blue.
    The original files are Python 2 pickles of ``str`` keys, which torchvision reads back (latin1)
    as ``str``: ``"data"``, ``"labels"``; they are written with ``str`` keys here for that reason.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows = np.arange(32).reshape(32, 1).repeat(32, axis=1)
    for file_index, file_name in enumerate(CIFAR_FILES):
        images = np.empty((images_per_file, 3, 32, 32), dtype=np.uint8)
        images[:, 0] = 8 * rows
        images[:, 1] = 8 * rows.T
        images[:, 2] = (10 * file_index + np.arange(images_per_file)).reshape(-1, 1, 1)
        entry = {
            "batch_label": file_name,
            "data": images.reshape(images_per_file, 3 * 32 * 32),
            "labels": [(file_index + j) % 10 for j in range(images_per_file)],
        }
        (folder / file_name).write_bytes(pickle.dumps(entry, protocol=2))
    label_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": label_names}, protocol=2))
    return {path.name: _md5(path) for path in folder.iterdir()}


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    md5 = _write_cifar(tmp_path)
    monkeypatch.setattr(CIFAR10, "train_list", [[name, md5[name]] for name in CIFAR_FILES[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    return tmp_path


@pytest.mark.parametrize("train", [True, False])
def test_cifar10_loads_with_known_pixels(cifar_root, train):
    dataset = load_cifar10(cifar_root, train=train)
    files = range(5) if train else [5]
    assert len(dataset) == 2 * len(files)
    expected_order = [(f, j) for f in files for j in range(2)]
    for index, (file_index, j) in enumerate(expected_order):
        image, label = dataset[index]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert image.min() >= -1 and image.max() <= 1
        assert int(label) == (file_index + j) % 10
        # orientation: red grows down the rows (H), green along the columns (W)
        assert image[0, 5, 17].item() == pytest.approx(_to_unit(40))
        assert image[1, 5, 17].item() == pytest.approx(_to_unit(136))
        assert image[0, 31, 0].item() == pytest.approx(_to_unit(248))
        assert image[2, 0, 0].item() == pytest.approx(_to_unit(10 * file_index + j))
    # 0 maps to exactly -1
    assert dataset[0][0][0, 0, 0].item() == -1.0


def test_cifar10_through_build_dataset(cifar_root):
    dataset = build_dataset("cifar10", root=cifar_root)
    assert len(dataset) == 10 and dataset[0][0].shape == data_shape("cifar10")
    first = build_dataset("cifar10", root=str(cifar_root), n_samples=3)
    assert len(first) == 3 and torch.equal(first[2][0], dataset[2][0])
    raises_one_line(lambda: build_dataset("cifar10", root=cifar_root, n_samples=11), "n_samples=11")


def test_cifar10_corrupted_folder_says_so(tmp_path):
    _write_cifar(tmp_path)  # the real md5 sums do not match these files
    raises_one_line(lambda: load_cifar10(tmp_path), "corrupted", str(tmp_path / "cifar-10-batches-py"),
                    error=DatasetUnavailableError)


# ----------------------------------------------------------------------------------------- STL-10

STL_COUNTS = {"train": 3, "test": 2, "unlabeled": 4}


def _stl_images(split: str) -> np.ndarray:
    """(N, 3, 96, 96) uint8: red = 2 * row, green = 2 * column, blue = noise seeded per split and image.

    The ramps fix the orientation; the noise tells the images apart and tests the resampling filter
    (a ramp is resampled alike by every symmetric filter).
    """
    n = STL_COUNTS[split]
    rows = np.arange(96).reshape(96, 1).repeat(96, axis=1)
    images = np.empty((n, 3, 96, 96), dtype=np.uint8)
    images[:, 0] = 2 * rows
    images[:, 1] = 2 * rows.T
    for j in range(n):
        generator = np.random.default_rng(100 * list(STL_COUNTS).index(split) + j)
        images[j, 2] = generator.integers(0, 256, size=(96, 96))
    return images


def _stl_labels(split: str) -> np.ndarray:
    return np.arange(STL_COUNTS[split], dtype=np.uint8) % 10  # 0-based; the file stores 1-based


def _write_stl(root) -> dict[str, str]:
    """Write stl10_binary/ in the STL-10 binary format; return md5 per file.

    Each image is 3 * 96 * 96 uint8, one channel after the other, each channel in column-major
    order; labels are uint8 in 1..10. torchvision checks all five files whatever the split.
    """
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split in STL_COUNTS:
        images = _stl_images(split)
        raw = np.concatenate([channel.flatten(order="F") for image in images for channel in image])
        (folder / f"{split}_X.bin").write_bytes(raw.tobytes())
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes((_stl_labels(split) + 1).tobytes())
    return {path.name: _md5(path) for path in folder.iterdir()}


@pytest.fixture
def stl_root(tmp_path, monkeypatch):
    md5 = _write_stl(tmp_path)
    train_files, test_files = ("train_X.bin", "train_y.bin", "unlabeled_X.bin"), ("test_X.bin", "test_y.bin")
    monkeypatch.setattr(STL10, "train_list", [[name, md5[name]] for name in train_files])
    monkeypatch.setattr(STL10, "test_list", [[name, md5[name]] for name in test_files])
    return tmp_path


@pytest.mark.parametrize("split", ["unlabeled", "train", "test"])
def test_stl10_native_size_pixels_and_labels(stl_root, split):
    dataset = load_stl10(stl_root, split=split, image_size=96)
    n = STL_COUNTS[split]
    assert len(dataset) == n
    images, labels = dataset[torch.arange(n)]
    assert images.shape == (n, 3, 96, 96) and images.dtype == torch.float32
    expected = torch.from_numpy(_stl_images(split)).float() / 127.5 - 1
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)
    # orientation, spelled out: red grows with the row index, green with the column index
    assert images[0, 0, 70, 5].item() == pytest.approx(_to_unit(140))
    assert images[0, 1, 70, 5].item() == pytest.approx(_to_unit(10))
    expected_labels = np.full(n, -1) if split == "unlabeled" else _stl_labels(split)
    np.testing.assert_array_equal(labels.numpy(), expected_labels)
    assert labels.dtype == torch.int64


@pytest.mark.parametrize("image_size", [48, 32])
def test_stl10_resized_matches_pil_bilinear(stl_root, image_size):
    dataset = load_stl10(stl_root, image_size=image_size)
    assert dataset.images.shape == (4, 3, image_size, image_size)
    for index, image in enumerate(_stl_images("unlabeled")):
        reference = Image.fromarray(image.transpose(1, 2, 0)).resize((image_size, image_size), Image.BILINEAR)
        reference = torch.from_numpy(np.asarray(reference).transpose(2, 0, 1).copy()).int()
        # PIL rounds in fixed point: allow one gray level
        assert (dataset.images[index].int() - reference).abs().max() <= 1
    if image_size == 48:
        # a linear ramp survives a symmetric filter: output row i is centred on input row 2 i + 0.5,
        # where red = 2 (2 i + 0.5) = 4 i + 1 (interior rows, away from the clamped borders)
        image = dataset[0][0]
        interior = torch.arange(2, 46)
        torch.testing.assert_close(image[0, interior, 20], _to_unit(4.0 * interior + 1), rtol=0, atol=1.01 / 127.5)
        torch.testing.assert_close(image[1, 20, interior], _to_unit(4.0 * interior + 1), rtol=0, atol=1.01 / 127.5)


def test_stl10_through_build_dataset_defaults_to_unlabeled_48(stl_root):
    dataset = build_dataset("stl10", root=stl_root)
    assert len(dataset) == STL_COUNTS["unlabeled"]
    assert dataset[0][0].shape == data_shape("stl10") == (3, 48, 48)


@pytest.mark.parametrize("split", ["validation", "Train", None])
def test_stl10_bad_split(tmp_path, split):
    raises_one_line(lambda: load_stl10(tmp_path, split=split), "split")


# --------------------------------------------------------------------------- unavailable datasets


@pytest.mark.parametrize("loader, folder", [(load_cifar10, "cifar-10-batches-py"), (load_stl10, "stl10_binary")])
def test_missing_dataset_without_download(tmp_path, loader, folder):
    raises_one_line(lambda: loader(tmp_path / "empty", download=False), str(tmp_path / "empty" / folder), "not found",
                    "data.download=true", error=DatasetUnavailableError)


@pytest.mark.parametrize(
    "loader, dataset_class", [(load_cifar10, CIFAR10), (load_stl10, STL10)], ids=["cifar10", "stl10"]
)
def test_failed_download(tmp_path, monkeypatch, offline, loader, dataset_class):
    monkeypatch.setattr(dataset_class, "url", UNREACHABLE)
    root = tmp_path / "downloads"
    raises_one_line(lambda: loader(root, download=True), "download", "failed", "127.0.0.1", str(root), UNREACHABLE,
                    error=DatasetUnavailableError)
    # nothing half-written: the connection was refused before any file was opened
    assert not any(path.is_file() for path in tmp_path.rglob("*"))


def test_unavailable_is_a_value_error(tmp_path):
    with pytest.raises(ValueError):
        build_dataset("cifar10", root=tmp_path)


# ------------------------------------------------------------------------- dispatcher and shapes


def test_build_dataset_unknown_name_lists_the_allowed_ones():
    raises_one_line(lambda: build_dataset("mnist"), "mnist", *DATASET_NAMES)


@pytest.mark.parametrize(
    "name, image_size",
    [("cifar10", 64), ("cifar10", 16), ("stl10", 97), ("stl10", 0), ("digits", 4), ("ring8", 32), ("grid25", 8)],
)
def test_bad_image_size_is_refused_before_touching_disk(tmp_path, name, image_size):
    root = tmp_path / "never_created"
    with pytest.raises(ValueError) as build_error:
        build_dataset(name, root=root, image_size=image_size, download=True)
    with pytest.raises(ValueError) as shape_error:
        data_shape(name, image_size)
    for error in (build_error, shape_error):
        assert type(error.value) is ValueError  # not DatasetUnavailableError: no file was looked at
        assert_one_line(str(error.value), f"image_size={image_size}")
    assert not root.exists()


@pytest.mark.parametrize("n_samples, seed", [(0, 0), (-3, 0), (2.5, 0), (10, "zero")])
def test_build_dataset_bad_counts_and_seeds(n_samples, seed):
    raises_one_line(lambda: build_dataset("ring8", n_samples=n_samples, seed=seed))


@pytest.mark.parametrize(
    "name, image_size, shape",
    [("digits", None, (1, 16, 16)), ("digits", 32, (1, 32, 32)), ("ring8", None, (2,)), ("grid25", None, (2,))],
)
def test_data_shape_matches_built_samples(name, image_size, shape):
    assert data_shape(name, image_size) == shape
    dataset = build_dataset(name, image_size=image_size, n_samples=64)
    assert len(dataset) == 64 and dataset[0][0].shape == shape


def test_data_shape_of_file_datasets_without_files():
    assert data_shape("cifar10") == (3, 32, 32)
    assert data_shape("stl10") == (3, 48, 48) and data_shape("stl10", 96) == (3, 96, 96)


def test_build_dataset_mixture_is_sample_mixture():
    built = build_dataset("grid25", seed=5, n_samples=300)
    direct = sample_mixture("grid25", 300, 5)
    assert all(torch.equal(a, b) for a, b in zip(built.tensors, direct.tensors))
    assert len(build_dataset("ring8")) == 100_000


# -------------------------------------------------------------------------------- infinite_batches


def _tensor_dataset(n):
    return TensorDataset(torch.arange(n, dtype=torch.float32).reshape(n, 1).repeat(1, 3), torch.zeros(n))


def _uint8_dataset(n):
    # identity i is stored as gray level 5 i (n <= 51)
    images = (5 * torch.arange(n, dtype=torch.uint8)).reshape(n, 1, 1, 1).repeat(1, 1, 2, 2)
    return UInt8ImageDataset(images, torch.arange(n))


def _generic_dataset(n):
    # a Subset is not a TensorDataset: it takes the DataLoader path
    return Subset(_tensor_dataset(n + 5), list(range(n)))


DATASET_KINDS = {"tensor": _tensor_dataset, "uint8": _uint8_dataset, "generic": _generic_dataset}


def _identities(batch: torch.Tensor, kind: str) -> list[int]:
    if kind == "uint8":
        assert batch.shape[1:] == (1, 2, 2)
        return torch.round((batch[:, 0, 0, 0] + 1) * 127.5 / 5).long().tolist()
    assert batch.shape[1:] == (3,)
    return batch[:, 0].long().tolist()


@pytest.mark.parametrize("kind", DATASET_KINDS)
@pytest.mark.parametrize("device", DEVICES)
def test_infinite_batches_covers_each_epoch_once_and_reshuffles(kind, device):
    n, batch_size = 24, 6
    stream = infinite_batches(DATASET_KINDS[kind](n), batch_size, seed=0, device=device)
    batches = list(islice(stream, 3 * n // batch_size))
    assert all(b.shape[0] == batch_size and b.device.type == device and b.dtype == torch.float32 for b in batches)
    epochs = [sum((_identities(b, kind) for b in batches[e * 4 : (e + 1) * 4]), []) for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(n))
    assert epochs[0] != epochs[1] != epochs[2]


@pytest.mark.parametrize("kind", DATASET_KINDS)
def test_infinite_batches_drop_last(kind):
    n, batch_size = 26, 6  # 4 full batches per epoch, 2 samples dropped
    stream = infinite_batches(DATASET_KINDS[kind](n), batch_size, seed=1)
    epoch = sum((_identities(b, kind) for b in islice(stream, 4)), [])
    assert len(set(epoch)) == 24 and set(epoch) <= set(range(n))


@pytest.mark.parametrize("kind", DATASET_KINDS)
@pytest.mark.parametrize("seed", [0, 7])
def test_infinite_batches_seeded(kind, seed):
    dataset = DATASET_KINDS[kind](20)
    first, again, other = (list(islice(infinite_batches(dataset, 5, s), 9)) for s in (seed, seed, seed + 1))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("kind", DATASET_KINDS)
@pytest.mark.parametrize("start", [0, 3, 4, 9])
def test_infinite_batches_start_continues_the_same_stream(kind, start):
    dataset = DATASET_KINDS[kind](26)  # 4 batches of 6 an epoch: start=9 skips two whole epochs
    whole = list(islice(infinite_batches(dataset, 6, seed=3), start + 6))
    resumed = list(islice(infinite_batches(dataset, 6, seed=3, start=start), 6))
    assert all(torch.equal(a, b) for a, b in zip(whole[start:], resumed))


def test_infinite_batches_uint8_values_are_the_dataset_items():
    dataset = _uint8_dataset(10)
    batch = next(infinite_batches(dataset, 4, seed=2))
    identities = _identities(batch, "uint8")
    expected = torch.stack([dataset[i][0] for i in identities])
    assert torch.equal(batch, expected) and batch.min() >= -1 and batch.max() <= 1


@pytest.mark.parametrize(
    "batch_size, seed, word",
    [(11, 0, "batch_size=11"), (0, 0, "batch_size=0"), (2.0, 0, "batch_size"), (4, None, "seed")],
)
def test_infinite_batches_bad_arguments_raise_before_iterating(batch_size, seed, word):
    # no next(): the check is eager
    raises_one_line(lambda: infinite_batches(_tensor_dataset(10), batch_size, seed), word)
