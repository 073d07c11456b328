"""Comparisons of a generated and a real feature set: FD, KID, precision / recall, density / coverage.

The first three are torch-fidelity's own mathematics, called on the features directly (its
``*_features_to_*`` functions), so that every feature extractor of the project (the digits
classifier here, Inception for CIFAR / STL through :mod:`.fidelity`) is measured by the same code:

- Fréchet distance (Heusel et al. 2017): ``||mu_1 - mu_2||^2 + Tr(C_1 + C_2 - 2 (C_1 C_2)^{1/2})``,
  the trace of the root from the eigenvalues of ``C_1 C_2``;
- KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic kernel ``k(x, y) = (gamma x.y + 1)^3``,
  averaged over random subsets;
- precision / recall (Kynkäänniemi et al. 2019): the share of generated samples inside the real
  k-NN manifold, and of real samples inside the generated one (``k = 3``).

torch-fidelity has no density / coverage (Naeem et al. 2020): :func:`density_coverage` writes them.

Features are used in float64: torch-fidelity keeps the dtype it gets, and a float32 mean alone moves
a Fréchet distance by ~3e-6 relative. NaN or infinite features raise
:class:`~stiefel_gan.metrics.status.MetricUnavailable` (``reason = "nonfinite"``); identical features
(a collapsed generator) are well defined for all of them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from .status import NONFINITE, MetricUnavailable

#: Neighbourhood of precision / recall, Kynkäänniemi et al.'s (and torch-fidelity's) default.
PRC_NEIGHBOURS = 3
#: Neighbourhood of density / coverage, Naeem et al.'s choice.
DC_NEIGHBOURS = 5
#: KID: subsets (torch-fidelity's default) and the seed of their draws (fixed: every evaluation of
#: every run draws the same subsets).
KID_SUBSETS = 100
KID_SEED = 0


def as_float64_array(values) -> np.ndarray:
    """``values`` (a torch tensor, possibly on an accelerator or requiring grad, or any array-like) as a
    float64 numpy array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def feature_set(features, name: str = "features", at_least: int = 2) -> torch.Tensor:
    """Validate ``(N, D)`` features and return them as a float64 CPU tensor.

    Raises ``ValueError`` for another shape or fewer than ``at_least`` rows, and
    :class:`~stiefel_gan.metrics.status.MetricUnavailable` (``"nonfinite"``) for a NaN or infinite entry.
    """
    array = torch.from_numpy(as_float64_array(features))
    if array.dim() != 2 or array.shape[0] < at_least or array.shape[1] < 1:
        raise ValueError(f"{name} has shape {tuple(array.shape)}: expected (N, D) with N >= {at_least} and D >= 1")
    if not torch.isfinite(array).all():
        raise MetricUnavailable(NONFINITE, f"{name} contain NaN or inf")
    return array


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (``1/(N-1)``) of ``(N, D)`` features, ``N >= 2``,
    in float64, by torch-fidelity's ``fid_features_to_statistics``."""
    array = feature_set(features)
    statistics = fid_features_to_statistics(array)
    # np.cov gives a 0-d array for D = 1; keep the (D, D) shape
    return statistics["mu"], np.atleast_2d(statistics["sigma"])


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    r"""Squared Fréchet distance of ``N(mu1, cov1)`` and ``N(mu2, cov2)`` by torch-fidelity's
    ``fid_statistics_to_metric``:

    .. math::

        d^2 = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{Tr}(C_1 + C_2) - 2 \sum_i \operatorname{Re}
              \sqrt{\lambda_i(C_1 C_2)}

    (``C_1 C_2`` is similar to the PSD ``C_1^{1/2} C_2 C_1^{1/2}``, so its eigenvalues are its roots'
    squares; round-off makes the zero ones tiny complex numbers, whose roots' real parts are ~1e-8 of
    the scale). A point mass (``C_1 = 0``) gives ``||mu1 - mu2||^2 + Tr C_2``.

    Raises ``ValueError`` for shapes that do not match and MetricUnavailable (``"nonfinite"``) for a
    NaN or infinite entry.
    """
    mu1, mu2 = np.atleast_1d(as_float64_array(mu1)), np.atleast_1d(as_float64_array(mu2))
    cov1, cov2 = np.atleast_2d(as_float64_array(cov1)), np.atleast_2d(as_float64_array(cov2))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means have shapes {mu1.shape} and {mu2.shape}: expected two equal (D,) vectors")
    dim = mu1.shape[0]
    if cov1.shape != (dim, dim) or cov2.shape != (dim, dim):
        raise ValueError(f"covariances have shapes {cov1.shape} and {cov2.shape}: expected ({dim}, {dim}) each")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, cov1, cov2)):
        raise MetricUnavailable(NONFINITE, "means or covariances contain NaN or inf")
    distance = fid_statistics_to_metric({"mu": mu1, "sigma": cov1}, {"mu": mu2, "sigma": cov2}, verbose=False)
    return float(distance[KEY_METRIC_FID])


def kernel_distance(fake, real, subset_size: int, subsets: int = KID_SUBSETS, seed: int = KID_SEED,
                    gamma: float | None = None) -> float:
    r"""KID: the mean over ``subsets`` random draws (without replacement) of ``subset_size`` rows of each
    set of the unbiased

    .. math::

        \widehat{\mathrm{MMD}}^2 = \frac{1}{m(m-1)} \sum_{i \ne j} \left(k(x_i, x_j) + k(y_i, y_j)\right)
                                 - \frac{2}{m^2} \sum_{i, j} k(x_i, y_j),
        \qquad k(x, y) = \left(\gamma\, x \cdot y + 1\right)^3,

    by torch-fidelity's ``kid_features_to_metric``, with ``gamma = 1 / D`` (``D`` features: Binkowski et
    al.'s kernel, torch-fidelity's default) unless given. Unbiased: its expectation does not depend on
    ``subset_size``, only its spread does; it can be slightly negative for close sets.
    """
    fake, real = feature_set(fake, "fake features"), feature_set(real, "real features")
    if gamma is not None and not (np.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma={gamma!r}: expected a positive finite kernel scale, or None for 1 / D")
    if not (isinstance(subset_size, int) and 2 <= subset_size <= min(len(fake), len(real))):
        raise ValueError(f"subset_size={subset_size!r}: expected an integer in 2..{min(len(fake), len(real))} "
                         f"(the smaller set's size)")
    measured = kid_features_to_metric(fake, real, kid_subsets=subsets, kid_subset_size=subset_size,
                                      kid_kernel_poly_gamma=gamma, rng_seed=seed, verbose=False)
    return float(measured[KEY_METRIC_KID_MEAN])


def precision_recall(fake, real, k: int = PRC_NEIGHBOURS) -> dict[str, float]:
    r"""Improved precision and recall (Kynkäänniemi et al. 2019) by torch-fidelity's ``prc_features_to_metric``.

    With :math:`B(x, r)` the closed ball and :math:`\mathrm{NND}_k(x)` the distance from ``x`` to its
    ``k``-th nearest other point of its own set,

    .. math::

        \mathrm{precision} = \frac{1}{M} \sum_j 1\left[\exists i: Y_j \in B(X_i, \mathrm{NND}_k(X_i))\right],
        \qquad
        \mathrm{recall} = \frac{1}{N} \sum_i 1\left[\exists j: X_i \in B(Y_j, \mathrm{NND}_k(Y_j))\right]

    for real ``X`` (N rows) and generated ``Y`` (M rows). A collapsed generator has ``NND_k = 0``: its
    recall counts only real points it hits exactly.
    """
    fake = feature_set(fake, "fake features", at_least=k + 1)
    real = feature_set(real, "real features", at_least=k + 1)
    measured = prc_features_to_metric(fake, real, prc_neighborhood=k, save_cpu_ram=False, verbose=False)
    return {"precision": float(measured[KEY_METRIC_PRECISION]), "recall": float(measured[KEY_METRIC_RECALL])}


def density_coverage(fake, real, k: int = DC_NEIGHBOURS) -> dict[str, float]:
    r"""Density and coverage (Naeem et al. 2020): how the generated ``Y`` (M rows) fall in the real
    ``X``'s (N rows) k-NN balls.

    .. math::

        \mathrm{density} = \frac{1}{kM} \sum_{j=1}^{M} \sum_{i=1}^{N} 1\left[Y_j \in B(X_i, \mathrm{NND}_k(X_i))\right],
        \qquad
        \mathrm{coverage} = \frac{1}{N} \sum_{i=1}^{N} 1\left[\exists j: Y_j \in B(X_i, \mathrm{NND}_k(X_i))\right]

    with :math:`\mathrm{NND}_k(X_i)` the distance from :math:`X_i` to its ``k``-th nearest other real
    point and closed balls (as torch-fidelity's precision). Unlike precision, density counts how many
    real balls hold a sample, so a few real outliers with large balls do not make bad samples look
    good; it is about 1 for samples from the real distribution and can exceed 1. Coverage is the share
    of real points whose ball a sample hits: 1 for a generator that misses no real neighbourhood, about
    ``1/N`` for a collapsed one. Distances are the direct differences in float64
    (``torch.cdist``, no ``|a|^2 + |b|^2 - 2 a.b`` round-off), so a copy of a real point lies in its ball.
    """
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"k={k!r}: expected a positive integer")
    fake = feature_set(fake, "fake features", at_least=1)
    real = feature_set(real, "real features", at_least=k + 1)
    exact = "donot_use_mm_for_euclid_dist"
    # the k-th nearest other real point: the (k + 1)-th smallest distance, the first being the point itself
    radii = torch.cdist(real, real, compute_mode=exact).kthvalue(k + 1, dim=1).values
    inside = torch.cdist(fake, real, compute_mode=exact) <= radii  # (M, N): Y_j in B(X_i, NND_k(X_i))
    return {"density": float(inside.sum(dtype=torch.float64) / (k * len(fake))),
            "coverage": float(inside.any(dim=0).double().mean())}
