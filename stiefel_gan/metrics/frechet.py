"""Fréchet distance between Gaussians fitted to feature sets (the formula behind FID).

Heusel et al. 2017 (arXiv 1706.08500) compare two sets of features through the Gaussians
with their means and covariances; this module holds that formula once, for every
feature extractor of the project (the digits classifier here; torch-fidelity has its own
copy for Inception features).

Its cost is three symmetric eigendecompositions of ``D x D`` matrices, whatever the features:
features of identical samples (``cov = 0``) give the exact distance of a point mass, and NaN
or infinite features raise :class:`~stiefel_gan.metrics.status.MetricUnavailable`
(``reason = "nonfinite"``).
"""

from __future__ import annotations

import numpy as np

from .status import NONFINITE, MetricUnavailable

#: Relative round-off tolerated in a covariance: asymmetry ``|C - C^T|`` up to this times
#: ``max |C|``, and eigenvalues down to minus this times the largest ``|eigenvalue|``, which are
#: taken as 0.  A float64 ``np.cov`` is PSD to about ``1e-14`` relative, a float32 one to
#: about ``1e-7``; a matrix beyond ``1e-6`` is not a covariance.
PSD_TOLERANCE = 1e-6


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of a feature set, in float64.

    Parameters
    ----------
    features : array_like or torch.Tensor, shape (N, D)
        One feature vector per row, ``N >= 2``.  Identical rows are allowed (``cov = 0``).

    Returns
    -------
    mu : np.ndarray, shape (D,)
        ``mu = (1/N) sum_n f_n``.
    cov : np.ndarray, shape (D, D)
        ``cov = 1/(N-1) sum_n (f_n - mu)(f_n - mu)^T`` (the estimator of Heusel et al.).

    Raises
    ------
    MetricUnavailable
        ``reason = "nonfinite"`` when a feature is NaN or infinite.
    """
    array = _as_float64_array(features)
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(f"features has shape {array.shape}: expected (N, D) with N >= 2 and D >= 1")
    if not np.isfinite(array).all():
        raise MetricUnavailable(NONFINITE, "features contain NaN or inf")
    mu = array.mean(axis=0)
    # np.cov returns a 0-d array for D = 1; keep the (D, D) shape the callers rely on
    cov = np.atleast_2d(np.cov(array, rowvar=False))
    return mu, cov


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    r"""Fréchet (2-Wasserstein) distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``.

    .. math::

        d^2 = \lVert \mu_1 - \mu_2 \rVert^2
              + \operatorname{Tr}\left(C_1 + C_2 - 2 (C_1 C_2)^{1/2}\right),
        \qquad
        \operatorname{Tr} (C_1 C_2)^{1/2}
            = \sum_i \sqrt{\lambda_i\left(C_1^{1/2} C_2 C_1^{1/2}\right)}

    The trace of the root is taken in the symmetric form on the right (Olkin & Pukelsheim
    1982): ``C_1 C_2 = A B`` and ``C_1^{1/2} C_2 C_1^{1/2} = B A`` with ``A = C_1^{1/2}``,
    ``B = C_1^{1/2} C_2``, and ``AB``, ``BA`` have the same eigenvalues.  Two symmetric
    eigendecompositions give it, in ``O(D^3)`` time (LAPACK's symmetric solver, which always
    converges), exactly for covariances of any rank.  So features that never vary (dead ReLU
    units), fewer samples than dimensions, or identical samples need no regularisation; the
    last (``C_1 = 0``, a point mass) give exactly ``||mu1 - mu2||^2 + Tr C_2``.  The former
    ``scipy.linalg.sqrtm(C1 C2)``, with ``eps * I`` added to both covariances when the product
    is singular (Heusel et al.'s reference code), is off by
    ``2 sum_i sqrt(eps (lambda_i(C_2) + eps))`` for a point mass, about ``2e-3 sum_i sqrt(lambda_i)``.

    Parameters
    ----------
    mu1, mu2 : array_like, shape (D,)
        Means.
    cov1, cov2 : array_like, shape (D, D)
        Symmetric positive semi-definite covariances, up to :data:`PSD_TOLERANCE`.

    Returns
    -------
    float
        ``d^2`` (the squared distance, which is what "FID" reports).

    Raises
    ------
    MetricUnavailable
        ``reason = "nonfinite"`` when a mean or covariance entry is NaN or infinite.
    """
    mu1, mu2 = np.atleast_1d(_as_float64_array(mu1)), np.atleast_1d(_as_float64_array(mu2))
    cov1, cov2 = np.atleast_2d(_as_float64_array(cov1)), np.atleast_2d(_as_float64_array(cov2))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means have shapes {mu1.shape} and {mu2.shape}: expected two equal (D,) vectors")
    dim = mu1.shape[0]
    if cov1.shape != (dim, dim) or cov2.shape != (dim, dim):
        raise ValueError(f"covariances have shapes {cov1.shape} and {cov2.shape}: expected ({dim}, {dim}) each")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, cov1, cov2)):
        raise MetricUnavailable(NONFINITE, "means or covariances contain NaN or inf")

    values1, vectors1 = _covariance_eigh(cov1)
    _covariance_eigh(cov2)  # only checks cov2: it enters the root through the product below
    root1 = (vectors1 * np.sqrt(values1)) @ vectors1.T
    inner = root1 @ cov2 @ root1  # PSD, up to round-off
    trace_root = float(np.sum(np.sqrt(_without_round_off(np.linalg.eigvalsh(inner)))))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_root)


def _covariance_eigh(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending, :func:`_without_round_off`) and eigenvectors of a covariance.

    Raises ``ValueError`` for a matrix that is not symmetric positive semi-definite up to
    :data:`PSD_TOLERANCE`.
    """
    if np.max(np.abs(cov - cov.T)) > PSD_TOLERANCE * np.max(np.abs(cov)):
        raise ValueError("a covariance is not symmetric: the covariances must be symmetric positive semi-definite")
    values, vectors = np.linalg.eigh(cov)
    if values[0] < -PSD_TOLERANCE * max(abs(values[0]), abs(values[-1])):
        raise ValueError(
            f"a covariance has the eigenvalue {values[0]:.3g}: the covariances must be symmetric positive semi-definite"
        )
    return _without_round_off(values), vectors


def _without_round_off(values: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with those below ``D * machine eps * max |lambda|`` set to 0.

    That is the backward error of a symmetric eigensolver, so a zero eigenvalue comes out as anything
    up to it, of either sign; its square root (``1e-8`` relative) would otherwise add to the trace.
    """
    threshold = values.size * np.finfo(np.float64).eps * np.max(np.abs(values))
    return np.where(values > threshold, values, 0.0)


def _as_float64_array(values) -> np.ndarray:
    # torch tensors (possibly on an accelerator or requiring grad) and array-likes alike
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)
