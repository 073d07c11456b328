r"""Stiefel manifolds with O(n p^2) retractions, for tall ``n x p`` points (``X^T X = I_p``).

All of them use the Euclidean metric (gradient ``grad = G - X sym(X^T G)``) and transport by
projection, as geoopt's :class:`~geoopt.manifolds.EuclideanStiefel` does; they differ only in the
retraction.

Note [why not geoopt's default]
    ``geoopt.Stiefel()`` is the canonical-metric manifold, whose Cayley retraction solves a dense
    ``n x n`` system: O(n^3), 2.8 s for one 4608 x 512 kernel on 2 CPU cores (DESIGN.md §3),
    more than a whole discriminator step. Both retractions here are O(n p^2).

``"qr"``
    :math:`R_X(\xi) = \mathrm{qf}(X + \xi)`, the Q factor with a non-negative diagonal of R
    (geoopt's EuclideanStiefel retraction). One Householder QR of an ``n x p`` matrix.

``"cayley"``
    The Cayley retraction of Wen & Yin (2013), done through the Woodbury identity. With
    :math:`P = I - \tfrac12 XX^T`, the skew matrix :math:`A = P\xi X^T - X\xi^T P = UV^T` has rank
    ``2p`` (:math:`U = [P\xi,\ X]`, :math:`V = [X,\ -P\xi]`), and

    .. math::

        R_X(\xi) = (I - \tfrac12 A)^{-1}(I + \tfrac12 A)X
                 = X + U\,(I_{2p} - \tfrac12 V^T U)^{-1} V^T X,

    a ``2p x 2p`` solve instead of an ``n x n`` one. ``R_X(\xi)`` is orthonormal for any skew ``A``
    and :math:`\tfrac{d}{dt}R_X(t\xi)|_0 = AX = \xi` for tangent :math:`\xi`, so it is a retraction.

Measured (``benchmarks/retraction.py``, 2 CPU threads, float32): see the README; QR is the faster
of the two on CPU for both the 4608 x 512 and 512 x 64 kernels and is the default.
"""

from __future__ import annotations

import torch
from geoopt.manifolds import EuclideanStiefel
from torch import Tensor

RETRACTIONS = ("qr", "cayley")
DEFAULT_RETRACTION = "qr"


class QRStiefel(EuclideanStiefel):
    """Stiefel manifold (Euclidean metric) with the QR retraction ``qf(X + xi)``."""

    name = "Stiefel(euclidean, qr)"


class CayleyStiefel(EuclideanStiefel):
    """Stiefel manifold (Euclidean metric) with the Cayley retraction through Woodbury (module docstring)."""

    name = "Stiefel(euclidean, cayley-woodbury)"

    def retr(self, x: Tensor, u: Tensor) -> Tensor:
        p = x.shape[-1]
        eye = torch.eye(p, dtype=x.dtype, device=x.device)
        xtu = x.transpose(-1, -2) @ u
        half_projected = u - 0.5 * x @ xtu  # P xi
        # With X^T X = I the blocks of V^T U and V^T X reduce to p x p products:
        #   V^T U = [[X^T P xi, I], [-(P xi)^T P xi, -(P xi)^T X]],  X^T P xi = xtu / 2,
        #   V^T X = [[I], [-(P xi)^T X]],
        # so only (P xi)^T (P xi) and the final U @ (...) touch the n rows.
        top = torch.cat((eye - 0.25 * xtu, -0.5 * eye), dim=-1)
        bottom = torch.cat((0.5 * half_projected.transpose(-1, -2) @ half_projected, eye + 0.25 * xtu.transpose(-1, -2)), dim=-1)
        small = torch.cat((top, bottom), dim=-2)  # I_2p - V^T U / 2
        rhs = torch.cat((eye, -0.5 * xtu.transpose(-1, -2)), dim=-2)  # V^T X
        left = torch.cat((half_projected, x), dim=-1)  # U
        y = x + left @ torch.linalg.solve(small, rhs)
        # Note [drift correction]: the Cayley map keeps X^T X exactly only in exact arithmetic; in
        # float32 the rounding accumulates (max |X^T X - I| reached 1.7e-5 after 10k Adam steps on a
        # 48 x 16 factor). One Newton-Schulz step towards the polar factor, Y (3I - Y^T Y) / 2, maps a
        # drift d to about 3 d^2 / 4 for two more O(n p^2) products, so the drift never builds up.
        return 0.5 * y @ (3 * eye - y.transpose(-1, -2) @ y)


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
