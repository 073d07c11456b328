"""Image datasets: the embedded digits (scikit-learn's 8x8 images, upscaled), stacked digits (three of them
as the channels of one image: 1,000 modes), CIFAR-10 and STL-10 through torchvision, all held as ``uint8`` and served in ``[-1, 1]``; the checks of their arguments.

Nothing is downloaded unless ``download=True``; a dataset that is not on disk is named, with where to
put it, by :func:`missing_dataset` (which reads no file) before anything is built.
"""

from __future__ import annotations

import http.client
import numbers
import os
import tarfile
from urllib.parse import urlsplit

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

STL10_SPLITS = ("unlabeled", "train", "test", "train+unlabeled")

_STL10_SIDE = 96

_DIGITS_SIDE = 8

_DIGITS_MAX_VALUE = 16.0

# CIFAR-10/STL-10 folders are read fully into memory (STL-10 unlabeled is 2.8 GB of uint8); resizing
# runs in chunks of this many images so the float32 copy stays near 100 MB.
_RESIZE_CHUNK = 1024


class DatasetUnavailableError(ValueError):
    """A torchvision dataset is not on disk and cannot be downloaded; the message is one line."""


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_image_size(name: str, image_size: int) -> None:
    """Raise a one-line ValueError unless ``image_size`` is a side the image dataset ``name`` can take."""
    if name in ("digits", "stacked_digits"):
        ok = is_int(image_size) and image_size >= _DIGITS_SIDE
        allowed = f"an integer >= {_DIGITS_SIDE} (the 8x8 digits are upscaled, never shrunk)"
    elif name == "cifar10":
        ok = is_int(image_size) and image_size == 32
        allowed = "32 (CIFAR-10 is used at its native size)"
    else:  # stl10
        ok = is_int(image_size) and 1 <= image_size <= _STL10_SIDE
        allowed = f"an integer in 1..{_STL10_SIDE} (the 96x96 images are resized down, e.g. to 48 or 64)"
    if not ok:
        raise ValueError(f"image_size={image_size!r} is not allowed for {name}: use {allowed}")


def check_positive_int(argument: str, value) -> None:
    if not (is_int(value) and value > 0):
        raise ValueError(f"{argument}={value!r} is not allowed: use an integer > 0")


def check_seed(seed) -> None:
    if not is_int(seed):
        raise ValueError(f"seed={seed!r} is not allowed: use an integer")


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


#: Seed and held-out share of the digits' one fixed split (:func:`digits_split`).
DIGITS_SPLIT_SEED = 0
DIGITS_HELD_OUT_SHARE = 0.25
#: ``data.split``: on the digits ``train`` (the 1,347 training images; the 450 held out are the metric's
#: reference, never seen by G, D or the metric's classifier) or ``all`` (the 1,797); the other datasets
#: have no held-out part the suite uses and train on the same data either way.
DATA_SPLITS = ("train", "all")


def digits_split(seed: int = DIGITS_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The digits' fixed stratified split: ``(train_index, held_out_index)``, 1,347 and 450 indices.

    ``sklearn.model_selection.train_test_split`` with ``test_size=0.25``, stratified by label,
    ``random_state=seed``, in the order it returns them; each class keeps its share in both parts. The
    suite's digits classifier trains on the first part, and ``data.split=train`` gives the GAN the same
    part, so the held-out part is a reference no network of a run has seen.
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    labels = sklearn_digits().target
    return tuple(train_test_split(np.arange(len(labels)), test_size=DIGITS_HELD_OUT_SHARE, stratify=labels,
                                  random_state=seed))


def load_digits(image_size: int = 16, split: str = "all") -> TensorDataset:
    r"""scikit-learn's bundled 8x8 handwritten digits (1797 images, no download), upscaled.

    The 4-bit gray levels :math:`v \in \{0, \dots, 16\}` map to :math:`x = v / 8 - 1 \in [-1, 1]`;
    the ``8 x 8`` images are then upscaled to ``image_size x image_size`` by bilinear interpolation
    with ``align_corners=False`` (half-pixel centres, edge pixels clamped). Each output pixel is a
    convex combination of input pixels, so the range stays ``[-1, 1]``.

    Parameters
    ----------
    image_size : int
        Output side, an integer ``>= 8`` (e.g. 16 or 32); 8 keeps the originals.
    split : {"all", "train", "held_out"}
        Every image, or one part of :func:`digits_split` (in the split's order).

    Returns
    -------
    TensorDataset
        ``(images (n, 1, image_size, image_size) float32, labels (n,) int64)``, ``n`` 1797, 1347 or 450.
    """
    check_image_size("digits", image_size)
    if split not in ("all", "train", "held_out"):
        raise ValueError(f"split={split!r} is not allowed: use all, train or held_out")
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images).to(torch.float32).unsqueeze(1)
    images = images / (_DIGITS_MAX_VALUE / 2) - 1.0
    if image_size != _DIGITS_SIDE:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(bunch.target).to(torch.int64)
    if split != "all":
        chosen = torch.from_numpy(digits_split()[0 if split == "train" else 1])
        images, labels = images[chosen], labels[chosen]
    return TensorDataset(images, labels)


#: Stacked images per digit of the split: 13,470 from the 1,347 training digits (17,970 from all 1,797).
#: At 10 per digit every digit lies in each channel of about 10 images (it is missing from a channel with
#: probability ``(1 - 1/n)^(10 n) ~ e^-10``) and each of the 1,000 modes holds about 13.5 images (one is
#: empty with probability ~ ``e^-13.5``); the float32 set is 41 MB at 16 px.
STACKED_DIGITS_PER_DIGIT = 10
#: Seed of the draw of :func:`load_stacked_digits`: one fixed set for every run, as a file would be.
STACKED_DIGITS_SEED = 0
#: Modes of the stacked digits: ``10^3`` (one digit per channel).
STACKED_DIGITS_MODES = 1000


def stacked_digit_modes(digits: Tensor) -> Tensor:
    """The mode of digit triples ``(N, 3)`` (channel 0, 1, 2): ``100 d_0 + 10 d_1 + d_2`` in ``0..999``."""
    return digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]


def load_stacked_digits(image_size: int = 16, split: str = "all",
                        seed: int = STACKED_DIGITS_SEED) -> TensorDataset:
    """Stacked digits: three digits of :func:`load_digits` as the three channels of one image (1,000 modes).

    The stacked-MNIST benchmark of mode collapse (Metz et al. 2017; Srivastava et al. 2017; Lin et al. 2018)
    on the embedded digits: each channel ``c`` of image ``i`` is the digit ``index[i, c]``, drawn uniformly
    with replacement and independently per channel from the ``split`` (``train``: the 1,347 digits of
    :func:`digits_split`'s training part, never one of the 450 held out). The draw uses its own
    ``torch.Generator`` seeded with ``seed``, so the set is the same for every run and does not move the
    global RNG; its size is :data:`STACKED_DIGITS_PER_DIGIT` times the split's.

    Returns
    -------
    TensorDataset
        ``(images (n, 3, image_size, image_size) float32 in [-1, 1], modes (n,) int64)`` with ``mode =
        100 d_0 + 10 d_1 + d_2`` (:func:`stacked_digit_modes`) and ``n = 10 x`` the split's size.
    """
    check_image_size("stacked_digits", image_size)
    check_seed(seed)
    if split not in DATA_SPLITS:
        raise ValueError(f"split={split!r} is not allowed for stacked_digits: use {' or '.join(DATA_SPLITS)}")
    digits, labels = load_digits(image_size, split=split).tensors
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(len(digits), (STACKED_DIGITS_PER_DIGIT * len(digits), 3), generator=generator)
    images = digits[index].squeeze(2)  # (n, 3, 1, s, s) -> (n, 3, s, s)
    return TensorDataset(images, stacked_digit_modes(labels[index]))


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

    check_image_size("stl10", image_size)
    if split not in STL10_SPLITS:
        raise ValueError(f"split={split!r} is not allowed for stl10: use one of {', '.join(STL10_SPLITS)}")
    if not isinstance(download, bool):
        raise ValueError(f"download={download!r} is not allowed: use True or False")
    dataset = _open_torchvision(STL10, "STL-10", root, download, split=split)
    # torchvision has already undone the file's column-major order: data is uint8 (N, C, H, W)
    images = _resize_uint8(torch.from_numpy(dataset.data), image_size)
    labels = torch.from_numpy(dataset.labels.astype("int64"))
    return UInt8ImageDataset(images, labels)
