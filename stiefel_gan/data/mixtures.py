"""2-D Gaussian mixtures: ``ring8`` (8 modes on a circle) and ``grid25`` (a 5 x 5 grid), the standard
mode-collapse benchmarks; samples are drawn from a seed, nothing is stored.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from .images import check_positive_int, check_seed

#: Points drawn for a 2-D mixture when ``build_dataset`` is given no ``n_samples``.
DEFAULT_MIXTURE_SAMPLES = 100_000


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
    check_positive_int("n", n)
    check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    centers = mixture_centers(name)
    modes = torch.randint(len(centers), (n,), generator=generator)
    points = centers[modes] + mixture.std * torch.randn(n, 2, generator=generator)
    return TensorDataset(points, modes)
