r"""What the Stiefel layers cost: each layer's factor shapes and ``k``, and the leading-order FLOPs of one
Riemannian Adam step on its factors (the extra work the manifold adds to a step), per layer and as a table.

Kept apart from the layers: it reads them, and nothing a layer or an optimizer does needs it
(``stiefelize(summary=True)`` prints :func:`stiefel_summary`; the benchmarks read :func:`factor_costs`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .layers import STIEFEL_TWINS, stiefel_layers
from .retractions import DEFAULT_RETRACTION


@dataclass(frozen=True)
class FactorCost:
    """One Stiefel layer's factors and the cost of one Riemannian Adam step on them (:func:`optimizer_step_flops`)."""

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    groups: int
    factor_shapes: tuple[tuple[int, ...], ...]
    k: int
    retraction: str
    step_flops: int


def optimizer_step_flops(n: int, p: int, retraction: str = DEFAULT_RETRACTION, second_moment: str = "matrix") -> int:
    r"""Leading-order FLOPs of one step of :func:`~stiefel_gan.manifold.make_optimizer`'s ``"radam"``
    (the fused :class:`~stiefel_gan.manifold.StiefelAdam`) on one ``n x p`` Stiefel factor.

    With a GEMM of ``a x b`` by ``b x c`` counted as ``2abc``:

    - tangent direction: ``second_moment="matrix"`` projects the gradient and the (untransported)
      momentum with :math:`X^T G`, :math:`X^T m` and one :math:`X\,\mathrm{sym}(\cdot)`, :math:`6np^2`
      (Note [deferred transport] of :mod:`~stiefel_gan.manifold.fused`); ``"entry"`` projects Adam's
      direction only, :math:`4np^2`;
    - QR retraction (Cholesky QR): Gram :math:`2np^2`, triangular solve :math:`np^2`, Cholesky
      :math:`p^3/3`;
    - Cayley retraction (Woodbury form, Newton-Schulz correction): six ``n x p`` by ``p x p`` products
      :math:`12np^2` plus about :math:`7p^3` of ``p x p`` work.

    So ``matrix`` with QR is :math:`9np^2 + p^3/3` (geoopt's own RiemannianAdam, which projects twice
    and transports separately: :math:`11np^2 + p^3/3`). The ``O(np)`` elementwise work (moments,
    scaling by ``lambda``) is left out; a plain Adam step on the dense weight is of that order, so this
    is the extra cost of the manifold per step.
    """
    direction = 6 * n * p * p if second_moment == "matrix" else 4 * n * p * p
    if retraction == "qr":
        return direction + 3 * n * p * p + p ** 3 // 3
    return direction + 12 * n * p * p + 7 * p ** 3


def factor_costs(model: nn.Module) -> list[FactorCost]:
    """Every Stiefel layer of ``model`` with its factor shapes, ``k`` and optimizer FLOPs per step."""
    costs = []
    for name, layer in stiefel_layers(model):
        matrix = layer.parametrization
        shapes = tuple(tuple(f.shape) for f in matrix.stiefel_factors())
        flops = sum(matrix.groups * optimizer_step_flops(s[-2], s[-1], matrix.retraction) for s in shapes)
        torch_type = next(c for c in type(layer).__mro__ if c in STIEFEL_TWINS)
        costs.append(FactorCost(name, torch_type.__name__, layer.weight_shape, matrix.groups, shapes, matrix.k,
                                matrix.retraction, flops))
    return costs


def _mflop(flops: int) -> str:
    return f"{flops / 1e6:,.0f}" if flops >= 1e8 else f"{flops / 1e6:.3g}"


def stiefel_summary(model: nn.Module) -> str:
    """A table of every Stiefel layer: kind, weight shape, groups, factor shape(s), ``k`` and the
    extra optimizer cost per step (:func:`optimizer_step_flops`) with its share of the model's total."""
    costs = factor_costs(model)
    total = sum(c.step_flops for c in costs) or 1
    header = ("layer", "kind", "weight", "groups", "factor(s)", "k", "MFLOP/step", "share")
    rows = [header]
    for c in costs:
        rows.append((c.name or "(model)", c.kind, "x".join(map(str, c.weight_shape)), str(c.groups),
                     ", ".join("x".join(map(str, s)) for s in c.factor_shapes), str(c.k),
                     _mflop(c.step_flops), f"{100 * c.step_flops / total:.1f}%"))
    rows.append(("total", "", "", "", "", "", _mflop(sum(c.step_flops for c in costs)), "100%"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)
