"""Inception Score, FID and KID through torch-fidelity, with the sampling protocol recorded.

The numbers are computed by ``torch_fidelity.calculate_metrics`` itself (its feature
extractors, its FID/KID/IS code); this module only fixes the *protocol* (how many fake and
real images, how many IS splits and KID subsets), converts tensors to the uint8 images
torch-fidelity expects, and returns the protocol next to the numbers, because published
FIDs differ by protocol (Miyato et al. 2018 use 5k fake vs 10k real; others 50k vs 50k).

Inception weights: torch-fidelity downloads them to ``torch.hub.get_dir()/checkpoints``
on first use.  Without network and without ``weights_path``,
:func:`compute_fidelity` logs one warning and returns ``{}``: a training run never fails
(or hangs on a firewalled network) for want of an evaluation network.

Float images with a NaN or infinite pixel raise
:class:`~stiefel_gan.metrics.status.MetricUnavailable` (``reason = "nonfinite"``) before any
network is loaded: converted to uint8 they would silently become arbitrary pixels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlparse

import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from .status import NONFINITE, MetricUnavailable

logger = logging.getLogger(__name__)

INCEPTION = "inception-v3-compat"
#: Seconds allowed to open a connection to the weights' host before declaring it offline
#: (a firewall that drops packets would otherwise block for the OS's ~2 min TCP timeout).
CONNECT_TIMEOUT_S = 5.0
#: Tolerance on the ``[-1, 1]`` range of float images.
_RANGE_TOLERANCE = 1e-3
#: Seed of the random subsets taken when more images are passed than a protocol uses.
_SUBSET_SEED = 0
_TORCH_FIDELITY_KEYS = {
    "isc_mean": torch_fidelity.KEY_METRIC_ISC_MEAN,
    "isc_std": torch_fidelity.KEY_METRIC_ISC_STD,
    "fid": torch_fidelity.KEY_METRIC_FID,
    "kid_mean": torch_fidelity.KEY_METRIC_KID_MEAN,
    "kid_std": torch_fidelity.KEY_METRIC_KID_STD,
}


@dataclass(frozen=True)
class FidelityProtocol:
    """How many samples IS, FID and KID are computed from.

    Attributes
    ----------
    name : str
        Logged next to the numbers.
    n_fake : int
        Generated images used by FID and KID (and by IS when ``n_is`` is None).
    n_real : int
        Real images used (FID and KID).
    is_splits : int
        IS is the mean (and std) over this many disjoint splits of the ``n_is`` IS images, each
        of ``n_is / is_splits`` images. The split size matters: the IS of a split is
        ``exp(E KL(p(y|x) || p(y)))`` with ``p(y)`` estimated on the split, and a smaller split
        underestimates it (about 3% lower for splits of 500 than of 5,000 on CIFAR-10).
    kid_subsets, kid_subset_size : int
        KID is the mean (and std) of the unbiased MMD^2 over this many random subsets of
        this size, drawn from each set (Binkowski et al. 2018).
    real_split : str
        Which split of the real dataset the reference images come from ("train", "test",
        "unlabeled"); the caller picks the images, this records which.
    n_is : int, optional
        Generated images the IS is computed on, when it differs from ``n_fake`` (Miyato et al.:
        IS on 50,000, FID on 5,000 of them). None: ``n_fake``.
    """

    name: str
    n_fake: int
    n_real: int
    is_splits: int
    kid_subsets: int
    kid_subset_size: int
    real_split: str
    n_is: Optional[int] = None

    def __post_init__(self) -> None:
        if self.n_is is None:
            object.__setattr__(self, "n_is", self.n_fake)
        for field in ("n_fake", "n_real", "is_splits", "kid_subsets", "kid_subset_size", "n_is"):
            value = getattr(self, field)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"FidelityProtocol.{field}={value!r}: expected a positive integer")
        if self.is_splits > self.n_is:
            raise ValueError(f"is_splits={self.is_splits} exceeds n_is={self.n_is}: each split needs an image")
        if self.kid_subset_size > min(self.n_fake, self.n_real):
            raise ValueError(
                f"kid_subset_size={self.kid_subset_size} exceeds min(n_fake, n_real)="
                f"{min(self.n_fake, self.n_real)}: subsets are drawn without replacement"
            )
        if not (isinstance(self.name, str) and self.name and isinstance(self.real_split, str) and self.real_split):
            raise ValueError(f"name={self.name!r}, real_split={self.real_split!r}: expected non-empty strings")

    @property
    def n_generated(self) -> int:
        """Generated images the protocol needs: the IS set, of which the FID / KID set is a subset."""
        return max(self.n_fake, self.n_is)

    def as_record(self) -> dict:
        """The protocol's fields as a flat dict, ``name`` logged as ``protocol``."""
        record = dataclasses.asdict(self)
        record["protocol"] = record.pop("name")
        return record


PROTOCOLS = {
    # Miyato et al. 2018 (arXiv 1802.05957), Sec. 4 and Table 2, and their evaluation code: IS
    # over 50000 samples in 10 splits of 5000, FID of 5000 generated vs 10000 real training
    # images.  They report no KID; 100 subsets of 1000 are torch-fidelity's (and Binkowski
    # et al.'s) defaults.
    "miyato": FidelityProtocol("miyato", n_fake=5000, n_real=10000, is_splits=10,
                               kid_subsets=100, kid_subset_size=1000, real_split="train", n_is=50000),
    # The 50k-vs-50k protocol of most later work (e.g. StyleGAN, BigGAN's CIFAR numbers).
    "full50k": FidelityProtocol("full50k", n_fake=50000, n_real=50000, is_splits=10,
                                kid_subsets=100, kid_subset_size=1000, real_split="train"),
    # Monitoring during training: a few minutes of Inception on CPU; not comparable to papers.
    "quick": FidelityProtocol("quick", n_fake=2000, n_real=2000, is_splits=5,
                              kid_subsets=20, kid_subset_size=1000, real_split="train"),
}


def compute_fidelity(
    fake_images: torch.Tensor,
    real_images: torch.Tensor,
    protocol: str | FidelityProtocol = "miyato",
    feature_extractor: str = INCEPTION,
    weights_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> dict:
    """IS of ``fake_images`` and FID / KID between ``fake_images`` and ``real_images``.

    Parameters
    ----------
    fake_images, real_images : torch.Tensor, shape (N, C, H, W)
        ``uint8`` in ``[0, 255]`` or float in ``[-1, 1]`` (mapped to
        ``round((x + 1) * 127.5)``); ``C`` is 1 (repeated to RGB) or 3.  At least
        ``protocol.n_generated`` / ``protocol.n_real`` images; when more are given, a
        fixed-seed random subset of that size is used.  FID and KID use ``n_fake`` of the
        ``n_is`` images the IS uses (a fixed-seed subset when fewer).
    protocol : str or FidelityProtocol
        A key of :data:`PROTOCOLS` or a protocol.
    feature_extractor : str
        A name registered in torch-fidelity (``torch_fidelity.register_feature_extractor``).
    weights_path : path, optional
        Feature extractor weights (torch-fidelity's ``feature_extractor_weights_path``;
        for Inception, the file torch-fidelity would download).  Must exist if given.
    device : str or torch.device
        ``"cpu"`` or ``"cuda[:index]"``.
    batch_size : int
        Images per forward pass of the feature extractor.

    Returns
    -------
    dict
        ``isc_mean``, ``isc_std``, ``fid``, ``kid_mean``, ``kid_std`` and the protocol
        (``protocol``, ``n_fake``, ``n_real``, ``is_splits``, ``kid_subsets``,
        ``kid_subset_size``, ``real_split``, ``n_is``, ``feature_extractor``); ``{}`` when the
        Inception weights are neither given nor downloadable (one warning is logged).

    Raises
    ------
    MetricUnavailable
        ``reason = "nonfinite"`` when a float image has a NaN or infinite pixel.
    """
    if isinstance(protocol, str) and protocol in PROTOCOLS:
        protocol = PROTOCOLS[protocol]
    if not isinstance(protocol, FidelityProtocol):
        raise ValueError(f"protocol={protocol!r}: expected one of {sorted(PROTOCOLS)} or a FidelityProtocol")
    if feature_extractor not in FEATURE_EXTRACTORS_REGISTRY:
        raise ValueError(
            f"feature_extractor={feature_extractor!r} is not registered in torch-fidelity: "
            f"expected one of {sorted(FEATURE_EXTRACTORS_REGISTRY)}"
        )
    if weights_path is not None and not os.path.isfile(weights_path):
        raise ValueError(
            f"weights_path={os.fspath(weights_path)!r} is not a file: pass an existing weights file or None"
        )
    device = torch.device(device)
    if device.type not in ("cpu", "cuda") or (device.type == "cuda" and not torch.cuda.is_available()):
        raise ValueError(f"device={str(device)!r}: expected 'cpu' or, with CUDA available, 'cuda[:index]'")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size={batch_size!r}: expected a positive integer")
    fake = _validated_images(fake_images, "fake_images", protocol.n_generated)
    real = _validated_images(real_images, "real_images", protocol.n_real)

    if feature_extractor == INCEPTION and weights_path is None:
        unavailable_because = _why_inception_weights_unavailable()
        if unavailable_because is not None:
            _warn_no_weights(feature_extractor, unavailable_because)
            return {}

    fake = _random_subset(fake, protocol.n_generated)
    options = {
        "feature_extractor": feature_extractor,
        "feature_extractor_weights_path": None if weights_path is None else os.fspath(weights_path),
        "isc_splits": protocol.is_splits,
        "kid_subsets": protocol.kid_subsets,
        "kid_subset_size": protocol.kid_subset_size,
        "batch_size": batch_size,
        "cuda": device.type == "cuda",
        # features of in-memory tensors: no on-disk cache keyed by dataset name, and no
        # DataLoader worker processes (save_cpu_ram sets num_workers=0)
        "cache": False, "save_cpu_ram": True, "verbose": False,
    }
    fid_inputs = {"input1": _UInt8Images(_random_subset(fake, protocol.n_fake)),
                  "input2": _UInt8Images(_random_subset(real, protocol.n_real))}
    if protocol.n_is == protocol.n_fake:  # one pass of the extractor serves all three metrics
        calls = [{**fid_inputs, "isc": True, "fid": True, "kid": True}]
    else:
        calls = [{"input1": _UInt8Images(_random_subset(fake, protocol.n_is)), "isc": True},
                 {**fid_inputs, "fid": True, "kid": True}]
    raw = {}
    try:
        # torch-fidelity moves the extractor with .cuda(), i.e. to the current device
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            for call in calls:
                raw.update(torch_fidelity.calculate_metrics(**options, **call))
    except urllib.error.URLError as error:
        # reachable host, failed download (redirect target blocked, HTTP error, ...)
        _warn_no_weights(feature_extractor, f"download failed: {error}")
        return {}
    record = {key: float(raw[raw_key]) for key, raw_key in _TORCH_FIDELITY_KEYS.items()}
    record.update(protocol.as_record())
    record["feature_extractor"] = feature_extractor
    return record


def inception_weights_cache_path() -> str:
    """Where torch-fidelity's download of the Inception weights lands (and is looked up)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(URL_INCEPTION_V3).path))


class _UInt8Images(Dataset):
    """Images served as uint8 RGB ``(3, H, W)`` tensors, the input of torch-fidelity's extractors."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.images[index]
        if image.dtype != torch.uint8:
            image = ((image.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        return image.repeat(3, 1, 1) if image.shape[0] == 1 else image


def _validated_images(images, name: str, needed: int) -> torch.Tensor:
    if not torch.is_tensor(images) or not (images.dtype == torch.uint8 or images.is_floating_point()):
        raise ValueError(
            f"{name} must be a uint8 or float tensor, got {type(images).__name__} {getattr(images, 'dtype', '')}"
        )
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{name} has shape {tuple(images.shape)}: expected (N, C, H, W) with C in {{1, 3}}")
    if len(images) < needed:
        raise ValueError(f"{name} has {len(images)} images: the protocol needs at least {needed}")
    images = images.detach().cpu()
    if images.is_floating_point():
        if not torch.isfinite(images).all():
            raise MetricUnavailable(NONFINITE, f"{name} contain NaN or inf")
        low, high = float(images.min()), float(images.max())
        if low < -1 - _RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise ValueError(f"{name} spans [{low:.4g}, {high:.4g}]: float images must lie in [-1, 1]")
    return images


def _random_subset(images: torch.Tensor, size: int) -> torch.Tensor:
    if len(images) == size:
        return images
    generator = torch.Generator().manual_seed(_SUBSET_SEED)
    return images[torch.randperm(len(images), generator=generator)[:size]]


def _why_inception_weights_unavailable() -> str | None:
    """None if the weights are cached or their host answers within the timeout, else why not."""
    if os.path.isfile(inception_weights_cache_path()):
        return None
    url = urlparse(URL_INCEPTION_V3)
    # through a configured HTTPS proxy, only the proxy has to be reachable
    proxy = urllib.request.getproxies().get("https")
    host, port = (urlparse(proxy).hostname, urlparse(proxy).port or 443) if proxy else (url.hostname, 443)
    if _can_connect(host, port, CONNECT_TIMEOUT_S):
        return None
    return f"{host}:{port} unreachable within {CONNECT_TIMEOUT_S:g} s"


def _can_connect(host: str, port: int, timeout_s: float) -> bool:
    outcome = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(True)
        except OSError:
            pass

    # a thread bounds the DNS lookup too, which the socket timeout does not cover
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(outcome)


def _warn_no_weights(feature_extractor: str, reason: str) -> None:
    if feature_extractor == INCEPTION:
        remedy = (f"download {URL_INCEPTION_V3} once and pass metrics.inception_weights=<path> "
                  f"(or place the file at {inception_weights_cache_path()})")
    else:
        remedy = "pass its weights file as weights_path"
    logger.warning(
        "IS/FID/KID skipped: no weights for feature extractor %r (%s); %s", feature_extractor, reason, remedy
    )
