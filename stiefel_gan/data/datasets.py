"""Datasets for the GAN runner: digits and stacked digits (embedded), 2-D Gaussian mixtures, CIFAR-10, STL-10.

Every image dataset yields ``(image, label)`` with ``image`` a float32 tensor ``(C, H, W)`` in
``[-1, 1]`` (the range of a ``tanh`` generator); the 2-D mixtures yield ``(point, mode)`` with
``point`` a float32 tensor ``(2,)``. All datasets are map-style and held in memory:

- the digits, the stacked digits and the mixtures are small :class:`~torch.utils.data.TensorDataset` s of floats;
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

from torch.utils.data import Dataset, TensorDataset

from .images import (
    DATA_SPLITS,
    UInt8ImageDataset,
    check_image_size,
    check_positive_int,
    check_seed,
    load_cifar10,
    load_digits,
    load_stacked_digits,
    load_stl10,
)
from .mixtures import DEFAULT_MIXTURE_SAMPLES, MIXTURES, sample_mixture

DATASET_NAMES = ("digits", "stacked_digits", "ring8", "grid25", "cifar10", "stl10")

#: Default image side per image dataset (STL-10 at 48 is the SN-GAN protocol, Miyato et al. 2018).
DEFAULT_IMAGE_SIZE = {"digits": 16, "stacked_digits": 16, "cifar10": 32, "stl10": 48}


def _check_name(name: str) -> None:
    if not isinstance(name, str) or name not in DATASET_NAMES:
        raise ValueError(f"dataset name={name!r} is not allowed: use one of {', '.join(DATASET_NAMES)}")


def _resolve_image_size(name: str, image_size: int | None) -> int | None:
    """Validate ``name``/``image_size`` and return the side to use (``None`` for a 2-D mixture)."""
    _check_name(name)
    if name in MIXTURES:
        if image_size is not None:
            raise ValueError(f"image_size={image_size!r} is not allowed for {name}: 2-D points take image_size=None")
        return None
    side = DEFAULT_IMAGE_SIZE[name] if image_size is None else image_size
    check_image_size(name, side)
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
    split: str = "all",
) -> Dataset:
    """Build dataset ``name`` (one of ``digits``, ``stacked_digits``, ``ring8``, ``grid25``, ``cifar10``, ``stl10``).

    Parameters
    ----------
    name : str
        The dataset.
    root : str or path
        Where CIFAR-10 / STL-10 live (or are downloaded to); unused by the others.
    image_size : int or None
        Image side; ``None`` takes :data:`DEFAULT_IMAGE_SIZE` (digits and stacked digits 16, cifar10 32,
        stl10 48).
        Must be ``None`` for a mixture.
    download : bool
        Allow torchvision to download CIFAR-10 / STL-10.
    seed : int
        Seed of the mixture sample; unused by the image datasets (they are files, and the stacked digits one
        fixed draw: :func:`~stiefel_gan.data.images.load_stacked_digits`).
    n_samples : int or None
        Mixtures: number of points drawn (``None``: :data:`DEFAULT_MIXTURE_SAMPLES`). Images: keep the
        first ``n_samples`` images (``None``: all of them).
    split : {"all", "train"}
        The digits: every image, or the training part of :func:`~stiefel_gan.data.images.digits_split`
        (the held-out part is the metric's reference); the stacked digits stack digits of that part. The other datasets train on their training data
        either way (CIFAR-10's training batches, STL-10's unlabeled images, a mixture's sample), so a
        digits study moved to them keeps its ``data.split=train``.

    Returns
    -------
    Dataset
        A :class:`TensorDataset` (digits, stacked digits, mixtures) or :class:`UInt8ImageDataset` (cifar10, stl10).

    Raises
    ------
    ValueError
        Unknown name, an image size the dataset cannot take, a bad ``seed``/``n_samples``, or
        ``n_samples`` larger than the dataset.
    DatasetUnavailableError
        CIFAR-10 / STL-10 not on disk and not downloadable.
    """
    side = _resolve_image_size(name, image_size)
    check_seed(seed)
    if split not in DATA_SPLITS:
        raise ValueError(f"split={split!r} is not allowed: use {' or '.join(DATA_SPLITS)}")
    if n_samples is not None:
        check_positive_int("n_samples", n_samples)
    if name in MIXTURES:
        return sample_mixture(name, DEFAULT_MIXTURE_SAMPLES if n_samples is None else n_samples, seed)
    if name == "digits":
        dataset = load_digits(side, split=split)
    elif name == "stacked_digits":
        dataset = load_stacked_digits(side, split=split)
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
