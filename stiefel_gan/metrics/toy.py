"""Mode coverage and sample quality on mixtures of isotropic Gaussians (2-D rings and grids).

Definitions follow Srivastava et al. 2017 (VEEGAN, arXiv 1705.07761, Sec. 5.1), who follow
Metz et al. 2017 (Unrolled GAN, arXiv 1611.02163) on the same 2-D mixtures:

* a sample is *high quality* when it lies within ``3 std`` of its nearest mode centre;
* a mode is *covered* when it is the nearest mode of at least ``min_samples_per_mode``
  high-quality samples.  VEEGAN uses 1 (the default here); PacGAN (Lin et al. 2018,
  arXiv 1712.04086) calls a mode lost below a fifth of its expected share, i.e.
  ``min_samples_per_mode = N / (5 M)``, which does not grow more lenient with ``N``.

The cost is one ``N x M`` distance table, whatever the samples are.  A collapsed generator
(every sample the same point) gets defined numbers: one mode covered, all samples high quality
and ``mode_kl = log M`` when the point lies within ``3 std`` of a centre; no mode, no
high-quality sample and ``mode_kl = NaN`` otherwise.  NaN or infinite samples raise
:class:`~stiefel_gan.metrics.status.MetricUnavailable` (``reason = "nonfinite"``).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from .features import as_float64_array
from .status import NONFINITE, MetricUnavailable

#: Radius of the high-quality ball, in standard deviations (VEEGAN: "three standard deviations").
HIGH_QUALITY_STDS = 3.0


def mode_metrics(samples, centers, std: float, min_samples_per_mode: int = 1) -> dict:
    r"""Mode coverage, sample quality and mode balance of generated samples.

    Parameters
    ----------
    samples : array_like or torch.Tensor, shape (N, D)
        Generated points (``D = 2`` for the usual rings and grids; any ``D`` works).
    centers : array_like, shape (M, D)
        Mode centres of the target mixture.
    std : float
        Standard deviation of every (isotropic) mixture component.
    min_samples_per_mode : int
        High-quality samples a mode needs to count as covered (VEEGAN: 1).

    Returns
    -------
    dict
        ``modes_covered`` (int)
            Number of modes that are the nearest mode of at least ``min_samples_per_mode``
            high-quality samples.
        ``n_modes`` (int)
            ``M``, so that coverage can be read as a fraction.
        ``high_quality_fraction`` (float)
            ``#{n : min_m ||x_n - c_m|| <= 3 std} / N``.  Samples drawn from the target
            itself reach ``1 - exp(-9/2) = 0.989`` in 2-D (the radius of a 2-D standard
            Gaussian is Rayleigh distributed) when the modes are far apart.
        ``mode_kl`` (float)
            :math:`\mathrm{KL}(\hat p \,\|\, U) = \sum_m \hat p_m \log(M \hat p_m)`, where
            :math:`\hat p_m` is the share of high-quality samples nearest to mode ``m`` and
            ``U`` the uniform distribution over the ``M`` modes (the direction used for mode
            histograms since PacGAN, the one where an empty mode costs nothing by itself
            and a single mode gives the maximum ``log M``).  Empty modes contribute
            ``0 log 0 = 0`` exactly, so no smoothing is needed or applied; with no
            high-quality sample at all the histogram is undefined and ``mode_kl`` is NaN.

    Raises
    ------
    MetricUnavailable
        ``reason = "nonfinite"`` when a sample is NaN or infinite.
    """
    points = _as_float64_matrix(samples, "samples")
    if not np.isfinite(points).all():
        raise MetricUnavailable(NONFINITE, "samples contain NaN or inf")
    modes = _as_float64_matrix(centers, "centers")
    if not np.isfinite(modes).all():
        raise ValueError("centers contain NaN or inf: only finite values are allowed")
    if points.shape[1] != modes.shape[1]:
        raise ValueError(
            f"samples have dimension {points.shape[1]} and centers {modes.shape[1]}: they must match"
        )
    if not (np.isfinite(std) and std > 0):
        raise ValueError(f"std={std!r}: expected a positive finite float")
    if not (isinstance(min_samples_per_mode, (int, np.integer)) and min_samples_per_mode >= 1):
        raise ValueError(f"min_samples_per_mode={min_samples_per_mode!r}: expected a positive integer")

    num_modes = modes.shape[0]
    distances = cdist(points, modes)
    nearest_mode = distances.argmin(axis=1)
    high_quality = distances[np.arange(points.shape[0]), nearest_mode] <= HIGH_QUALITY_STDS * std
    counts = np.bincount(nearest_mode[high_quality], minlength=num_modes)
    num_high_quality = int(counts.sum())

    return {
        "modes_covered": int(np.count_nonzero(counts >= min_samples_per_mode)),
        "n_modes": num_modes,
        "high_quality_fraction": num_high_quality / points.shape[0],
        "mode_kl": kl_from_uniform(counts),
    }


def kl_from_uniform(counts) -> float:
    r"""KL of a mode histogram from uniform: :math:`\sum_m \hat p_m \log(M \hat p_m)`, :math:`\hat p = c / \sum c`.

    ``counts`` are the ``M`` modes' sample counts (empty modes included: ``M`` is ``len(counts)``). Empty
    modes contribute ``0 log 0 = 0`` exactly, so no smoothing is applied; 0 for a balanced histogram,
    ``log M`` for one mode; NaN when no sample counted at all (the histogram is undefined).
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return float("nan")
    shares = counts[counts > 0] / total
    return float(np.sum(shares * np.log(len(counts) * shares)))


def _as_float64_matrix(values, name: str) -> np.ndarray:
    array = as_float64_array(values)
    if array.ndim != 2 or array.shape[0] < 1:
        raise ValueError(f"{name} has shape {array.shape}: expected (count, D) with count >= 1")
    return array
