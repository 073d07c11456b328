r"""Datasets for the GAN runner: digits (embedded), 2-D Gaussian mixtures, CIFAR-10, STL-10.

Every image dataset yields ``(image, label)`` with ``image`` a float32 tensor ``(C, H, W)`` in
``[-1, 1]`` (the range of a ``tanh`` generator); the 2-D mixtures yield ``(point, mode)`` with
``point`` a float32 tensor ``(2,)``. All datasets are map-style and held in memory:

- the digits and the mixtures are small :class:`~torch.utils.data.TensorDataset` s of floats;
- CIFAR-10 and STL-10 are read by the real ``torchvision.datasets`` code and kept as
  :class:`UInt8ImageDataset`: ``uint8`` storage, converted to floats per item or per batch, because
  float32 would be four times larger (CIFAR-10: 0.6 GB instead of 0.15 GB; STL-10 unlabeled at 48x48:
  2.8 GB instead of 0.7 GB).

Pixel values ``v in {0, ..., 255}`` map to ``v / 127.5 - 1``, the same as torchvision's
``ToTensor()`` followed by ``Normalize(0.5, 0.5)``.

:func:`build_dataset` dispatches on a name, :func:`data_shape` gives the sample shape without loading
anything, and :func:`infinite_batches` turns any of them into the endless seeded batch stream that the
training loop consumes.
"""

from __future__ import annotations

import http.client
import itertools
import math
import numbers
import os
import tarfile
import types
from dataclasses import dataclass
from typing import Iterator, Mapping
from urllib.parse import urlsplit

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

DATASET_NAMES = ("digits", "ring8", "grid25", "cifar10", "stl10")

#: Default image side per image dataset (STL-10 at 48 is the SN-GAN protocol, Miyato et al. 2018).
DEFAULT_IMAGE_SIZE = {"digits": 16, "cifar10": 32, "stl10": 48}

#: Points drawn for a 2-D mixture when ``build_dataset`` is given no ``n_samples``.
DEFAULT_MIXTURE_SAMPLES = 100_000

STL10_SPLITS = ("unlabeled", "train", "test", "train+unlabeled")
_STL10_SIDE = 96
_DIGITS_SIDE = 8
_DIGITS_MAX_VALUE = 16.0
# CIFAR-10/STL-10 folders are read fully into memory (STL-10 unlabeled is 2.8 GB of uint8); resizing
# runs in chunks of this many images so the float32 copy stays near 100 MB.
_RESIZE_CHUNK = 1024


class DatasetUnavailableError(ValueError):
    """A torchvision dataset is not on disk and cannot be downloaded; the message is one line."""


# ----------------------------------------------------------------------------------------- checks


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or name not in DATASET_NAMES:
        raise ValueError(f"dataset name={name!r} is not allowed: use one of {', '.join(DATASET_NAMES)}")


def _check_image_size(name: str, image_size: int) -> None:
    """Raise a one-line ValueError unless ``image_size`` is a side the image dataset ``name`` can take."""
    if name == "digits":
        ok = _is_int(image_size) and image_size >= _DIGITS_SIDE
        allowed = f"an integer >= {_DIGITS_SIDE} (the 8x8 digits are upscaled, never shrunk)"
    elif name == "cifar10":
        ok = _is_int(image_size) and image_size == 32
        allowed = "32 (CIFAR-10 is used at its native size)"
    else:  # stl10
        ok = _is_int(image_size) and 1 <= image_size <= _STL10_SIDE
        allowed = f"an integer in 1..{_STL10_SIDE} (the 96x96 images are resized down, e.g. to 48 or 64)"
    if not ok:
        raise ValueError(f"image_size={image_size!r} is not allowed for {name}: use {allowed}")


def _check_positive_int(argument: str, value) -> None:
    if not (_is_int(value) and value > 0):
        raise ValueError(f"{argument}={value!r} is not allowed: use an integer > 0")


def _check_seed(seed) -> None:
    if not _is_int(seed):
        raise ValueError(f"seed={seed!r} is not allowed: use an integer")


# ------------------------------------------------------------------------------------------ images


def uint8_to_unit_range(pixels: Tensor) -> Tensor:
    r"""Map ``uint8`` pixels to float32 in ``[-1, 1]``: :math:`x = v / 127.5 - 1`."""
    return pixels.to(torch.float32) / 127.5 - 1.0


class UInt8ImageDataset(Dataset):
    """Images stored as ``uint8`` ``(N, C, H, W)``, served as float32 in ``[-1, 1]``.

    ``dataset[i]`` returns ``(image (C, H, W), label)``; ``dataset[index_tensor]`` returns the batch
    ``(images (B, C, H, W), labels (B,))``, which is how :func:`infinite_batches` reads it.

    Parameters
    ----------
    images : Tensor
        ``uint8`` tensor ``(N, C, H, W)``.
    labels : Tensor
        int64 tensor ``(N,)``; ``-1`` where the images carry no label (STL-10 unlabeled).
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images of dtype {images.dtype} and shape {tuple(images.shape)} are not allowed: "
                "use a uint8 tensor (N, C, H, W)"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels of shape {tuple(labels.shape)} are not allowed: use one label per image, "
                f"shape ({images.shape[0]},)"
            )
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index) -> tuple[Tensor, Tensor]:
        return uint8_to_unit_range(self.images[index]), self.labels[index]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, image_shape={tuple(self.images.shape[1:])})"


def _resize_uint8(images: Tensor, side: int) -> Tensor:
    """Resize ``uint8`` images ``(N, C, H, W)`` to ``side x side``, back to ``uint8``.

    Bilinear with ``antialias=True`` and ``align_corners=False``: torch's antialiased kernel is
    built to match PIL's bilinear resize, which is what ``transforms.Resize`` does to a PIL image;
    rounding back to ``uint8`` is also what that PIL pipeline does before ``ToTensor``.
    """
    if images.shape[-1] == side and images.shape[-2] == side:
        return images
    chunks = [
        F.interpolate(chunk.float(), size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for chunk in images.split(_RESIZE_CHUNK)
    ]
    return torch.cat(chunks)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# What a failed download or a missing/corrupt folder raises inside torchvision: no network is a
# URLError (an OSError), a refused or dropped connection an OSError or an HTTPException, a bad md5 a
# RuntimeError ("Dataset not found or corrupted", "File not found or corrupted."), a truncated archive
# a tarfile error.
_UNAVAILABLE_ERRORS = (OSError, RuntimeError, http.client.HTTPException, tarfile.TarError)


def _open_torchvision(dataset_class, title: str, root, download: bool, **kwargs):
    """Construct ``dataset_class(root, download=download, **kwargs)``; failures become one line.

    Nothing is written by this function; on a failed download torchvision may leave a partial
    archive under ``root``, which its next download attempt re-checks by md5 and replaces.
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    folder = os.path.join(root, dataset_class.base_folder)
    url = dataset_class.url
    host = urlsplit(url).hostname or url
    by_hand = f"download {url} by hand and extract it under {root} (it must create {folder})"
    try:
        return dataset_class(root, download=download, **kwargs)
    except _UNAVAILABLE_ERRORS as error:
        if download:
            message = f"{title}: downloading from {host} failed ({_one_line(error)}); {by_hand}"
        else:
            state = "is incomplete or corrupted (md5 mismatch)" if os.path.isdir(folder) else "was not found"
            # torchvision's RuntimeError says only "not found or corrupted"; anything else (a
            # permission error, ...) is worth quoting
            detail = "" if isinstance(error, RuntimeError) else f" ({_one_line(error)})"
            message = (
                f"{title} {state} at {folder}{detail}: set data.download=true "
                f"(download=True) to fetch it from {host}, or {by_hand}"
            )
        raise DatasetUnavailableError(message) from error


def missing_dataset(name: str, root="data", download: bool = False) -> str | None:
    """A one-line reason why dataset ``name`` cannot be loaded from ``root``, or ``None``; reads no file.

    Only the folder is looked for (torchvision's md5 check runs at load time): a study that names a
    dataset nobody put on disk fails before its first run, not in the middle of it. Embedded data
    (digits, mixtures) and ``download=True`` need nothing on disk.
    """
    from torchvision.datasets import CIFAR10, STL10

    dataset_class, title = {"cifar10": (CIFAR10, "CIFAR-10"), "stl10": (STL10, "STL-10")}.get(name, (None, None))
    if dataset_class is None or download:
        return None
    folder = os.path.join(os.path.abspath(os.path.expanduser(os.fspath(root))), dataset_class.base_folder)
    if os.path.isdir(folder):
        return None
    return (f"{title} (data={name}) is not on disk: {folder} does not exist; put the dataset there, set "
            "data.root to where it is, or data.download=true to fetch it")


def load_digits(image_size: int = 16) -> TensorDataset:
    r"""scikit-learn's bundled 8x8 handwritten digits (1797 images, no download), upscaled.

    The 4-bit gray levels :math:`v \in \{0, \dots, 16\}` map to :math:`x = v / 8 - 1 \in [-1, 1]`;
    the ``8 x 8`` images are then upscaled to ``image_size x image_size`` by bilinear interpolation
    with ``align_corners=False`` (half-pixel centres, edge pixels clamped). Each output pixel is a
    convex combination of input pixels, so the range stays ``[-1, 1]``.

    Parameters
    ----------
    image_size : int
        Output side, an integer ``>= 8`` (e.g. 16 or 32); 8 keeps the originals.

    Returns
    -------
    TensorDataset
        ``(images (1797, 1, image_size, image_size) float32, labels (1797,) int64)``.
    """
    _check_image_size("digits", image_size)
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images).to(torch.float32).unsqueeze(1)
    images = images / (_DIGITS_MAX_VALUE / 2) - 1.0
    if image_size != _DIGITS_SIDE:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(bunch.target).to(torch.int64)
    return TensorDataset(images, labels)


def load_cifar10(root="data", download: bool = False, train: bool = True) -> UInt8ImageDataset:
    """CIFAR-10 (3 x 32 x 32) through ``torchvision.datasets.CIFAR10``, served in ``[-1, 1]``.

    Parameters
    ----------
    root : str or path
        Folder that holds (or will hold) ``cifar-10-batches-py/``.
    download : bool
        Fetch the archive from www.cs.toronto.edu if the folder is missing or fails its md5 check.
    train : bool
        The 50000 training images, else the 10000 test images.

    Raises
    ------
    DatasetUnavailableError
        The data is not under ``root`` and was not (or could not be) downloaded.
    """
    from torchvision.datasets import CIFAR10

    for argument, value in (("download", download), ("train", train)):
        if not isinstance(value, bool):
            raise ValueError(f"{argument}={value!r} is not allowed: use True or False")
    dataset = _open_torchvision(CIFAR10, "CIFAR-10", root, download, train=train)
    # torchvision holds the images as uint8 (N, H, W, C)
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    return UInt8ImageDataset(images, labels)


def load_stl10(
    root="data", download: bool = False, split: str = "unlabeled", image_size: int = 48
) -> UInt8ImageDataset:
    """STL-10 (3 x 96 x 96) through ``torchvision.datasets.STL10``, resized, served in ``[-1, 1]``.

    The SN-GAN protocol (Miyato et al. 2018) trains on the 100000 unlabeled images at 48 x 48.
    Resizing is done once at load time (see :func:`_resize_uint8`: antialiased bilinear, PIL-like).
    torchvision checks the md5 of all five binary files whatever the split, so the whole
    ``stl10_binary/`` folder must be present.

    Parameters
    ----------
    root : str or path
        Folder that holds (or will hold) ``stl10_binary/``.
    download : bool
        Fetch the archive (2.6 GB) from ai.stanford.edu if the folder is missing or incomplete.
    split : str
        One of ``"unlabeled"``, ``"train"``, ``"test"``, ``"train+unlabeled"``; unlabeled images get
        label ``-1``.
    image_size : int
        Output side, ``1 <= image_size <= 96``; 96 keeps the originals.

    Raises
    ------
    DatasetUnavailableError
        The data is not under ``root`` and was not (or could not be) downloaded.
    """
    from torchvision.datasets import STL10

    _check_image_size("stl10", image_size)
    if split not in STL10_SPLITS:
        raise ValueError(f"split={split!r} is not allowed for stl10: use one of {', '.join(STL10_SPLITS)}")
    if not isinstance(download, bool):
        raise ValueError(f"download={download!r} is not allowed: use True or False")
    dataset = _open_torchvision(STL10, "STL-10", root, download, split=split)
    # torchvision has already undone the file's column-major order: data is uint8 (N, C, H, W)
    images = _resize_uint8(torch.from_numpy(dataset.data), image_size)
    labels = torch.from_numpy(dataset.labels.astype("int64"))
    return UInt8ImageDataset(images, labels)


# ---------------------------------------------------------------------------------------- mixtures


@dataclass(frozen=True)
class GaussianMixture2D:
    """Equal-weight isotropic Gaussian mixture in the plane: ``x = centers[m] + std * z``, ``m`` uniform."""

    centers: tuple[tuple[float, float], ...]
    std: float


def _ring(modes: int, radius: float) -> tuple[tuple[float, float], ...]:
    angles = (2 * math.pi * k / modes for k in range(modes))
    return tuple((radius * math.cos(a), radius * math.sin(a)) for a in angles)


def _grid(coordinates: tuple[float, ...]) -> tuple[tuple[float, float], ...]:
    return tuple((x, y) for x in coordinates for y in coordinates)


#: The 2-D mixtures of the mode-collapse literature (unrolled GAN, VEEGAN, PacGAN):
#: ``ring8``, 8 modes on the circle of radius 2, std 0.02; ``grid25``, the 5 x 5 grid
#: ``{-4, -2, 0, 2, 4}^2``, std 0.05.
MIXTURES: Mapping[str, GaussianMixture2D] = types.MappingProxyType(
    {
        "ring8": GaussianMixture2D(centers=_ring(8, 2.0), std=0.02),
        "grid25": GaussianMixture2D(centers=_grid((-4.0, -2.0, 0.0, 2.0, 4.0)), std=0.05),
    }
)


def _mixture(name: str) -> GaussianMixture2D:
    if not isinstance(name, str) or name not in MIXTURES:
        raise ValueError(f"mixture name={name!r} is not allowed: use one of {', '.join(MIXTURES)}")
    return MIXTURES[name]


def mixture_centers(name: str) -> Tensor:
    """The mode centres of mixture ``name`` as a float32 tensor ``(M, 2)`` (a fresh copy)."""
    return torch.tensor(_mixture(name).centers, dtype=torch.float32)


def mixture_std(name: str) -> float:
    """The per-coordinate standard deviation of every mode of mixture ``name``."""
    return _mixture(name).std


def sample_mixture(name: str, n: int, seed: int) -> TensorDataset:
    r"""Draw ``n`` points of mixture ``name``: :math:`m \sim \mathcal U\{0..M-1\}`,
    :math:`x = c_m + s\,z`, :math:`z \sim \mathcal N(0, I_2)`.

    Returns
    -------
    TensorDataset
        ``(points (n, 2) float32, mode_labels (n,) int64)``; the same ``seed`` gives the same points.
    """
    mixture = _mixture(name)
    _check_positive_int("n", n)
    _check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    centers = mixture_centers(name)
    modes = torch.randint(len(centers), (n,), generator=generator)
    points = centers[modes] + mixture.std * torch.randn(n, 2, generator=generator)
    return TensorDataset(points, modes)


# -------------------------------------------------------------------------------------- dispatcher


def _resolve_image_size(name: str, image_size: int | None) -> int | None:
    """Validate ``name``/``image_size`` and return the side to use (``None`` for a 2-D mixture)."""
    _check_name(name)
    if name in MIXTURES:
        if image_size is not None:
            raise ValueError(f"image_size={image_size!r} is not allowed for {name}: 2-D points take image_size=None")
        return None
    side = DEFAULT_IMAGE_SIZE[name] if image_size is None else image_size
    _check_image_size(name, side)
    return side


def data_shape(name: str, image_size: int | None = None) -> tuple[int, ...]:
    """The shape of one sample of dataset ``name``: ``(C, H, W)`` or ``(2,)``; loads nothing."""
    side = _resolve_image_size(name, image_size)
    if side is None:
        return (2,)
    channels = 1 if name == "digits" else 3
    return (channels, side, side)


def build_dataset(
    name: str,
    root="data",
    image_size: int | None = None,
    download: bool = False,
    seed: int = 0,
    n_samples: int | None = None,
) -> Dataset:
    """Build dataset ``name`` (one of ``digits``, ``ring8``, ``grid25``, ``cifar10``, ``stl10``).

    Parameters
    ----------
    name : str
        The dataset.
    root : str or path
        Where CIFAR-10 / STL-10 live (or are downloaded to); unused by the others.
    image_size : int or None
        Image side; ``None`` takes :data:`DEFAULT_IMAGE_SIZE` (digits 16, cifar10 32, stl10 48).
        Must be ``None`` for a mixture.
    download : bool
        Allow torchvision to download CIFAR-10 / STL-10.
    seed : int
        Seed of the mixture sample; unused by the image datasets (they are files).
    n_samples : int or None
        Mixtures: number of points drawn (``None``: :data:`DEFAULT_MIXTURE_SAMPLES`). Images: keep the
        first ``n_samples`` images (``None``: all of them).

    Returns
    -------
    Dataset
        A :class:`TensorDataset` (digits, mixtures) or :class:`UInt8ImageDataset` (cifar10, stl10).

    Raises
    ------
    ValueError
        Unknown name, an image size the dataset cannot take, a bad ``seed``/``n_samples``, or
        ``n_samples`` larger than the dataset.
    DatasetUnavailableError
        CIFAR-10 / STL-10 not on disk and not downloadable.
    """
    side = _resolve_image_size(name, image_size)
    _check_seed(seed)
    if n_samples is not None:
        _check_positive_int("n_samples", n_samples)
    if name in MIXTURES:
        return sample_mixture(name, DEFAULT_MIXTURE_SAMPLES if n_samples is None else n_samples, seed)
    if name == "digits":
        dataset = load_digits(side)
    elif name == "cifar10":
        dataset = load_cifar10(root, download=download, train=True)
    else:
        dataset = load_stl10(root, download=download, split="unlabeled", image_size=side)
    if n_samples is None:
        return dataset
    if n_samples > len(dataset):
        raise ValueError(f"n_samples={n_samples} is not allowed for {name}: it holds only {len(dataset)} images")
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(tensor[:n_samples] for tensor in dataset.tensors))
    return UInt8ImageDataset(dataset.images[:n_samples], dataset.labels[:n_samples])


# ----------------------------------------------------------------------------------------- batches


def infinite_batches(dataset: Dataset, batch_size: int, seed: int, device="cpu", start: int = 0) -> Iterator[Tensor]:
    """An endless stream of data batches ``(batch_size, *sample_shape)`` on ``device``, labels dropped.

    ``start`` skips the first ``start`` batches of the stream (a resumed run continues the stream of the
    interrupted one); in-memory datasets skip without materialising them.

    Each epoch visits the samples in a fresh random order drawn from one ``torch.Generator`` seeded
    with ``seed``, and drops the last incomplete batch: within an epoch every sample appears at most
    once (exactly once when ``batch_size`` divides ``len(dataset)``), and the same seed gives the
    same stream.

    In-memory datasets (:class:`TensorDataset`, :class:`UInt8ImageDataset`) are moved to ``device``
    once and indexed there a batch at a time; any other map-style dataset goes through a
    :class:`DataLoader` (single process) that shuffles with the same generator.

    Raises
    ------
    ValueError
        ``batch_size`` not a positive integer or larger than the dataset, or a non-integer seed.
    """
    _check_positive_int("batch_size", batch_size)
    _check_seed(seed)
    if not _is_int(start) or start < 0:
        raise ValueError(f"start={start!r} is not allowed: use a number of batches >= 0")
    if batch_size > len(dataset):
        raise ValueError(
            f"batch_size={batch_size} is not allowed: the dataset holds only {len(dataset)} samples "
            "(use batch_size <= len(dataset))"
        )
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    if isinstance(dataset, TensorDataset):
        return _indexed_batches(dataset.tensors[0].to(device), None, batch_size, generator, start)
    if isinstance(dataset, UInt8ImageDataset):
        return _indexed_batches(dataset.images.to(device), uint8_to_unit_range, batch_size, generator, start)
    return itertools.islice(_loader_batches(dataset, batch_size, generator, device), start, None)


def _indexed_batches(stored: Tensor, decode, batch_size: int, generator: torch.Generator,
                     start: int) -> Iterator[Tensor]:
    n = stored.shape[0]
    per_epoch = n // batch_size
    skipped_epochs, first = divmod(start, per_epoch)
    for _ in range(skipped_epochs):
        torch.randperm(n, generator=generator)  # advance the generator exactly as those epochs did
    while True:
        # the permutation is drawn on the CPU generator, so the stream is the same on every device
        order = torch.randperm(n, generator=generator).to(stored.device)
        for index in range(first, per_epoch):
            batch = stored[order[index * batch_size : (index + 1) * batch_size]]
            yield batch if decode is None else decode(batch)
        first = 0


def _loader_batches(dataset: Dataset, batch_size: int, generator: torch.Generator, device) -> Iterator[Tensor]:
    # each iter() over the loader draws a new permutation from `generator`: one reshuffle per epoch
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator)
    while True:
        for batch in loader:
            data = batch[0] if isinstance(batch, (tuple, list)) else batch
            yield data.to(device)
