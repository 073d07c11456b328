"""Fréchet distance between Gaussians fitted to feature sets (the formula behind FID).

Heusel et al. 2017 (arXiv 1706.08500) compare two sets of features through the Gaussians
with their means and covariances; this module holds that formula once, for every
feature extractor of the project (the digits classifier here; torch-fidelity has its own
copy for Inception features).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

#: Largest imaginary part tolerated on the diagonal of ``(C1 C2)^{1/2}``.  For PSD ``C1``,
#: ``C2`` the product is similar to the PSD ``C1^{1/2} C2 C1^{1/2}``, so its square root has
#: a real spectrum; an imaginary part beyond round-off means the inputs are not covariances.
IMAGINARY_TOLERANCE = 1e-3


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of a feature set, in float64.

    Parameters
    ----------
    features : array_like or torch.Tensor, shape (N, D)
        One feature vector per row, ``N >= 2``.

    Returns
    -------
    mu : np.ndarray, shape (D,)
        ``mu = (1/N) sum_n f_n``.
    cov : np.ndarray, shape (D, D)
        ``cov = 1/(N-1) sum_n (f_n - mu)(f_n - mu)^T`` (the estimator of Heusel et al.).
    """
    array = _as_float64_array(features)
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(f"features has shape {array.shape}: expected (N, D) with N >= 2 and D >= 1")
    if not np.isfinite(array).all():
        raise ValueError("features contain NaN or inf: only finite values are allowed")
    mu = array.mean(axis=0)
    # np.cov returns a 0-d array for D = 1; keep the (D, D) shape the callers rely on
    cov = np.atleast_2d(np.cov(array, rowvar=False))
    return mu, cov


def frechet_distance(mu1, cov1, mu2, cov2, eps: float = 1e-6) -> float:
    r"""Fréchet (2-Wasserstein) distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``.

    .. math::

        d^2 = \lVert \mu_1 - \mu_2 \rVert^2
              + \operatorname{Tr}\left(C_1 + C_2 - 2 (C_1 C_2)^{1/2}\right)

    The square root is ``scipy.linalg.sqrtm``.  When ``C1 C2`` is singular (fewer samples
    than feature dimensions, or features that never vary, such as dead ReLU units), which
    scipy reports with a ``LinAlgWarning`` or a non-finite root, both covariances are
    shifted by ``eps * I`` and the root recomputed, as in Heusel et al.'s reference code.
    Round-off leaves a tiny imaginary part on the root, which is dropped; one larger than
    :data:`IMAGINARY_TOLERANCE` on the diagonal raises, since it means the inputs are not
    covariance matrices.

    Parameters
    ----------
    mu1, mu2 : array_like, shape (D,)
        Means.
    cov1, cov2 : array_like, shape (D, D)
        Symmetric positive semi-definite covariances.
    eps : float
        Diagonal shift, used only when ``C1 C2`` is singular.

    Returns
    -------
    float
        ``d^2`` (the squared distance, which is what "FID" reports).
    """
    mu1, mu2 = np.atleast_1d(_as_float64_array(mu1)), np.atleast_1d(_as_float64_array(mu2))
    cov1, cov2 = np.atleast_2d(_as_float64_array(cov1)), np.atleast_2d(_as_float64_array(cov2))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means have shapes {mu1.shape} and {mu2.shape}: expected two equal (D,) vectors")
    dim = mu1.shape[0]
    if cov1.shape != (dim, dim) or cov2.shape != (dim, dim):
        raise ValueError(f"covariances have shapes {cov1.shape} and {cov2.shape}: expected ({dim}, {dim}) each")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, cov1, cov2)):
        raise ValueError("means or covariances contain NaN or inf: only finite values are allowed")
    if not eps > 0:
        raise ValueError(f"eps={eps!r}: expected a positive float")

    covmean = _sqrtm_of_nonsingular(cov1 @ cov2)
    if covmean is None:
        shift = eps * np.eye(dim)
        with warnings.catch_warnings():
            # the shifted product has eigenvalues >= eps^2 > 0; a residual warning would only repeat the first
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            covmean = scipy.linalg.sqrtm((cov1 + shift) @ (cov2 + shift))
    if np.iscomplexobj(covmean):
        largest_imaginary = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if largest_imaginary > IMAGINARY_TOLERANCE:
            raise ValueError(
                f"(cov1 cov2)^(1/2) has an imaginary diagonal part {largest_imaginary:.3g}: "
                "the covariances must be symmetric positive semi-definite"
            )
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))


def _sqrtm_of_nonsingular(matrix: np.ndarray) -> np.ndarray | None:
    """``scipy.linalg.sqrtm(matrix)``, or None when scipy finds it singular or returns non-finite values."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
        try:
            root = scipy.linalg.sqrtm(matrix)
        except scipy.linalg.LinAlgWarning:
            return None
    return root if np.isfinite(root).all() else None


def _as_float64_array(values) -> np.ndarray:
    # torch tensors (possibly on an accelerator or requiring grad) and array-likes alike
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)
