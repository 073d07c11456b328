r"""Stiefel manifolds with O(n p^2) retractions, for tall ``n x p`` points (``X^T X = I_p``).

All of them use the Euclidean metric (gradient ``grad = G - X sym(X^T G)``) and transport by
projection, as geoopt's :class:`~geoopt.manifolds.EuclideanStiefel` does; they differ only in the
retraction.

Note [why not geoopt's default]
    ``geoopt.Stiefel()`` is the canonical-metric manifold, whose Cayley retraction solves a dense
    ``n x n`` system: O(n^3), 2.8 s for one 4608 x 512 kernel on 2 CPU cores,
    more than a whole discriminator step. Both retractions here are O(n p^2).

``"qr"``
    :math:`R_X(\xi) = \mathrm{qf}(X + \xi)`, the Q factor with a non-negative diagonal of R
    (geoopt's EuclideanStiefel retraction), computed by Cholesky QR (Note [Cholesky QR] in
    :func:`q_factor`): one ``p x p`` Gram matrix, its Cholesky factor and a triangular solve.

``"cayley"``
    The Cayley retraction of Wen & Yin (2013), done through the Woodbury identity. With
    :math:`P = I - \tfrac12 XX^T`, the skew matrix :math:`A = P\xi X^T - X\xi^T P = UV^T` has rank
    ``2p`` (:math:`U = [P\xi,\ X]`, :math:`V = [X,\ -P\xi]`), and

    .. math::

        R_X(\xi) = (I - \tfrac12 A)^{-1}(I + \tfrac12 A)X
                 = X + U\,(I_{2p} - \tfrac12 V^T U)^{-1} V^T X,

    a ``2p x 2p`` solve instead of an ``n x n`` one. ``R_X(\xi)`` is orthonormal for any skew ``A``
    and :math:`\tfrac{d}{dt}R_X(t\xi)|_0 = AX = \xi` for tangent :math:`\xi`, so it is a retraction.

    With :math:`X^T X = I` every block of :math:`V^T U` and :math:`V^T X` is a ``p x p`` product of
    :math:`K = X^T\xi` and :math:`\xi^T\xi` (:math:`(P\xi)^T P\xi = \xi^T\xi - \tfrac34 K^T K`), and
    eliminating the second block row of the ``2p x 2p`` system (its Schur complement) leaves one
    ``p x p`` solve:

    .. math::

        R_X(\xi) = X\,\big((2I - K)M - I\big) + \xi M,\qquad
        M = 4N^{-1},\quad N = 4I + K^T - K + \xi^T\xi - K^T K.

    So only :math:`X^T\xi`, :math:`\xi^T\xi` and the two final products touch the ``n`` rows.

Both share a tangent projection :math:`\xi - X\,\mathrm{sym}(X^T \xi)` whose product and
subtraction are one BLAS call (``addmm``), used for the Riemannian gradient and for the transport.

Measured (``benchmarks/retraction.py``, 2 CPU threads, float32): see ``benchmarks/README.md``; QR is
the faster of the two on CPU for both the 4608 x 512 and 512 x 64 kernels and is the default.
"""

from __future__ import annotations

import torch
from geoopt.manifolds import EuclideanStiefel
from torch import Tensor

RETRACTIONS = ("qr", "cayley")
DEFAULT_RETRACTION = "qr"

#: Largest :math:`\lVert Z^T Z - I\rVert_F` for which :func:`q_factor` uses Cholesky QR (Note [Cholesky QR]).
CHOLESKY_QR_MAX_GRAM_DISTANCE = 0.5


def _sym(a: Tensor) -> Tensor:
    return 0.5 * (a + a.transpose(-1, -2))


def _plus_product(c: Tensor, a: Tensor, b: Tensor, beta: float = 1.0, alpha: float = 1.0) -> Tensor:
    """``beta c + alpha (a @ b)`` in one BLAS call where the shapes allow (``addmm`` / ``baddbmm``)."""
    if c.dim() == a.dim() == b.dim() == 2:
        return torch.addmm(c, a, b, beta=beta, alpha=alpha)
    if c.dim() == a.dim() == b.dim() == 3:
        return torch.baddbmm(c, a, b, beta=beta, alpha=alpha)
    return beta * c + alpha * (a @ b)


def _householder_q_factor(z: Tensor) -> Tensor:
    q, r = torch.linalg.qr(z)
    # flip columns so that diag(R) >= 0 (a zero diagonal entry keeps its column), as geoopt does
    negative = (torch.diagonal(r, dim1=-2, dim2=-1) < 0).to(q.dtype)
    return q * (1 - 2 * negative).unsqueeze(-2)


def q_factor(z: Tensor) -> Tensor:
    r""":math:`\mathrm{qf}(Z)`: the ``Q`` of the thin QR factorization :math:`Z = QR` with :math:`\mathrm{diag}(R) > 0`.

    Note [Cholesky QR]
        With :math:`Z = QR` and a positive diagonal of ``R``, :math:`Z^T Z = R^T R` is the (unique)
        Cholesky factorization of the Gram matrix, so :math:`Q = Z R^{-1}`: the same map as a
        Householder QR, computed by one ``p x p`` Cholesky between a GEMM (:math:`Z^T Z`) and a
        triangular solve. That is about half the time of LAPACK's ``geqrf`` + ``orgqr`` on 2 CPU
        threads (``benchmarks/README.md``). Its loss of orthogonality is :math:`O(\epsilon\,\kappa(Z)^2)`
        instead of :math:`O(\epsilon)` (:math:`\epsilon` the unit roundoff), so it is used only when
        :math:`\delta = \lVert Z^T Z - I\rVert_F \le 1/2`: the eigenvalues of :math:`Z^T Z` then lie in
        :math:`[1 - \delta, 1 + \delta]`, :math:`\kappa(Z)^2 \le 3`, and the result is as orthonormal as
        Householder's up to a small constant. In training :math:`Z = X + \xi` with :math:`X` on the
        manifold and :math:`\xi` tangent, so :math:`Z^T Z = I + \xi^T \xi` and
        :math:`\delta \le \lVert \xi \rVert_F^2` (about 1e-6 for an Adam step at lr 1e-3). Larger
        steps and points far off the manifold fall back to Householder. The Gram
        matrix is computed from ``Z`` itself, not assumed to be :math:`I + \xi^T \xi`, so a drifted
        ``X`` is pulled back onto the manifold and drift does not accumulate. The test reads one
        boolean from the device: a host synchronization per call on CUDA (the fused optimizers of
        :mod:`stiefel_gan.manifold.fused` read it once per step for all factors).

    Parameters
    ----------
    z : Tensor
        ``... x n x p`` with ``n >= p``, of full column rank.
    """
    gram = z.transpose(-1, -2) @ z
    if not bool(torch.all(gram_distance(gram) <= CHOLESKY_QR_MAX_GRAM_DISTANCE)):  # NaN fails too
        return _householder_q_factor(z)
    return cholesky_q_factor(z, gram)


def gram_distance(gram: Tensor) -> Tensor:
    r""":math:`\lVert Z^T Z - I\rVert_F` per matrix, from the Gram matrix (the test of Note [Cholesky QR])."""
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    return torch.linalg.matrix_norm(gram - eye)


def cholesky_q_factor(z: Tensor, gram: Tensor) -> Tensor:
    r""":math:`\mathrm{qf}(Z) = Z R^{-1}` with :math:`R^T R = Z^T Z` (Note [Cholesky QR] in :func:`q_factor`).

    Valid only where :func:`gram_distance` is at most ``CHOLESKY_QR_MAX_GRAM_DISTANCE``; the caller tests
    it (:func:`q_factor` per call, the fused optimizers once per step for all factors).
    """
    # every eigenvalue of the Gram matrix is >= 1/2 here, so its Cholesky factor exists: no error check
    # (which would also synchronize a CUDA device once more)
    upper = torch.linalg.cholesky_ex(gram, upper=True).L
    # Q = Z R^{-1} solved as R^T Q^T = Z^T: LAPACK reads a row-major Z as the column-major Z^T it wants
    # and writes a row-major Q; the right-sided solve would copy Z to column-major and return a
    # column-major Q, which the optimizer then copies back (measured 12-21% slower)
    return torch.linalg.solve_triangular(upper.transpose(-1, -2), z.transpose(-1, -2),
                                         upper=False).transpose(-1, -2)


class _ProjectionStiefel(EuclideanStiefel):
    """Euclidean-metric Stiefel manifold whose tangent projection is one fused BLAS call."""

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return _plus_product(u, x, _sym(x.transpose(-1, -2) @ u), alpha=-1)

    egrad2rgrad = proju  # geoopt binds its own proju here: rebind to the fused one

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return self.proju(y, v)


class QRStiefel(_ProjectionStiefel):
    """Stiefel manifold (Euclidean metric) with the QR retraction ``qf(X + xi)`` (see :func:`q_factor`)."""

    name = "Stiefel(euclidean, qr)"

    def retr(self, x: Tensor, u: Tensor) -> Tensor:
        return q_factor(x + u)


class CayleyStiefel(_ProjectionStiefel):
    """Stiefel manifold (Euclidean metric) with the Cayley retraction through Woodbury (module docstring)."""

    name = "Stiefel(euclidean, cayley-woodbury)"

    def retr(self, x: Tensor, u: Tensor) -> Tensor:
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        k = x.transpose(-1, -2) @ u  # K = X^T xi
        k_t = k.transpose(-1, -2)
        # M = 4 N^{-1} with N = 4I + K^T - K + xi^T xi - K^T K (module docstring, "cayley")
        n_matrix = 4 * eye + k_t - k + u.transpose(-1, -2) @ u - k_t @ k
        # the right-hand side has the batch shape of N: a bare p x p one would be read as a batch of
        # vectors whenever the batch size equals p (linalg.solve's broadcasting rule)
        m = torch.linalg.solve(n_matrix, (4 * eye).expand_as(n_matrix))
        y = _plus_product(u @ m, x, (2 * eye - k) @ m - eye)  # X ((2I - K) M - I) + xi M
        # Note [drift correction]: the Cayley map keeps X^T X exactly only in exact arithmetic; in
        # float32 the rounding accumulates (max |X^T X - I| reached 1.7e-5 after 10k Adam steps on a
        # 48 x 16 factor). One Newton-Schulz step towards the polar factor, Y (3I - Y^T Y) / 2, maps a
        # drift d to about 3 d^2 / 4 for two more O(n p^2) products, so the drift never builds up.
        return _plus_product(y, y, y.transpose(-1, -2) @ y, beta=1.5, alpha=-0.5)


def stiefel_manifold(retraction: str = DEFAULT_RETRACTION) -> EuclideanStiefel:
    """The Stiefel manifold object for a retraction name (``"qr"`` or ``"cayley"``)."""
    if retraction == "qr":
        return QRStiefel()
    if retraction == "cayley":
        return CayleyStiefel()
    raise ValueError(f"retraction={retraction!r} is not allowed: use one of {RETRACTIONS}")


def manifold_drift(x: Tensor) -> Tensor:
    r"""Distance of a tall ``x`` from the manifold: :math:`\max_{ij} |(X^T X - I)_{ij}|`."""
    gram = x.transpose(-1, -2) @ x
    return (gram - torch.eye(gram.shape[-1], dtype=x.dtype, device=x.device)).abs().amax()
