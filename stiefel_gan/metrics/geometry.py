"""Geometry Score: compare the topology of two point clouds (Khrulkov & Oseledets 2018).

Khrulkov & Oseledets, "Geometry Score: A Method For Comparing Generative Adversarial
Networks", ICML 2018 (arXiv 1802.02664), Algorithms 1 and 2.

For a point cloud ``X`` (real samples, generated samples, or their features) one draws
``L_0`` landmarks ``L`` from ``X`` and builds the witness-complex filtration
``W(L, X, alpha)``, ``alpha in [0, alpha_max]``, with every point of ``X`` a witness.
The persistence barcode of its 1-dimensional homology gives, for every
``alpha``, the number ``beta_1(alpha)`` of one-dimensional holes alive.  The *relative
living time* of ``i`` holes is the fraction of the filtration range during which exactly
``i`` holes are alive (paper, Eqs. 2-3)::

    RLT(i) = |{alpha in [0, alpha_max] : beta_1(alpha) = i}| / alpha_max,
    alpha_max = gamma * max_{l in L, x in X} ||l - x||,

averaged over ``n`` independent landmark draws (the *mean* RLT).  The Geometry Score of
two clouds is the squared Euclidean distance of their mean RLTs (Algorithm 2)::

    GS(X_1, X_2) = sum_i (mRLT_1(i) - mRLT_2(i))^2.

The complex (stated because the choice changes the numbers): gudhi's ``WitnessComplex``,
the *weak relaxed* witness complex, as in the authors' implementation.  A simplex ``sigma subset L`` is
``alpha``-witnessed by ``w in X`` when ``d(w, l) <= d(w, l') + alpha`` for every
``l in sigma`` and every ``l' in L \\ sigma``; gudhi adds a simplex at the smallest
``alpha`` at which it and all its faces are witnessed.  gudhi's nearest-landmark table
takes "distances" and relaxes them additively; the table here holds Euclidean distances
(not squares, which the ``Euclidean*`` classes would use), so that ``alpha`` lives in the
same units as the ``alpha_max`` above, as in the authors' implementation, and their
default ``gamma`` keeps its meaning.
Simplices up to dimension 2 are built: triangles are what fill 1-cycles.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import gudhi
import numpy as np
from scipy.spatial.distance import cdist

from .frechet import _as_float64_array

#: ``gamma = GAMMA_PER_5000_POINTS * N / 5000``: the default of the authors' implementation
#: (github.com/KhrulkovV/geometry-score), which stops the filtration earlier for smaller clouds.
GAMMA_PER_5000_POINTS = 1.0 / 128


def relative_living_times(
    X,
    L_0: int = 64,
    gamma: float | None = None,
    i_max: int = 100,
    n: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Mean relative living times of 1-dimensional holes (Algorithm 1 of the paper).

    Parameters
    ----------
    X : array_like, shape (N, D)
        The point cloud; every point is a witness.
    L_0 : int
        Number of landmarks per draw, drawn uniformly without replacement
        (``2 <= L_0 <= N``; the authors' code draws with replacement, which only wastes
        landmarks on duplicates).
    gamma : float, optional
        ``alpha_max = gamma * max_{l, x} ||l - x||``.  Default ``(1/128) * N / 5000``.
        With few witnesses per landmark (``N`` of a few hundred) that ``alpha_max`` is too
        small for the complex to close the gaps between landmarks, and even a filled disc
        shows many short-lived holes; a larger ``gamma`` (about 1/8 for ``N = 400``,
        ``L_0 = 32``) recovers the shape's own homology.
    i_max : int
        Length of the returned curve.  Time spent with ``i_max`` holes or more is not
        counted, so the curve sums to less than 1 only if that happened.
    n : int
        Number of independent landmark draws averaged.
    seed : int
        Seed of the landmark draws (``numpy.random.default_rng``).

    Returns
    -------
    np.ndarray, shape (i_max,)
        ``mRLT(i)``, ``i = 0 .. i_max - 1``.
    """
    points = _as_float64_array(X)
    if points.ndim != 2 or points.shape[0] < 2:
        raise ValueError(f"X has shape {points.shape}: expected (N, D) with N >= 2")
    if not np.isfinite(points).all():
        raise ValueError("X contains NaN or inf: only finite values are allowed")
    num_points = points.shape[0]
    if not (isinstance(L_0, (int, np.integer)) and 2 <= L_0 <= num_points):
        raise ValueError(f"L_0={L_0!r}: expected an integer in [2, N={num_points}]")
    if gamma is None:
        gamma = GAMMA_PER_5000_POINTS * num_points / 5000
    if not (np.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma={gamma!r}: expected a positive finite float")
    for name, value in (("i_max", i_max), ("n", n)):
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise ValueError(f"{name}={value!r}: expected a positive integer")

    rng = np.random.default_rng(seed)
    total = np.zeros(i_max)
    for _ in range(n):
        landmarks = points[rng.choice(num_points, size=L_0, replace=False)]
        intervals, alpha_max = _witness_persistence_dim1(points, landmarks, gamma)
        total += _relative_living_times_of_barcode(intervals, alpha_max, i_max)
    return total / n


def geometry_score(rlt_a, rlt_b) -> float:
    """Geometry Score ``sum_i (rlt_a[i] - rlt_b[i])^2`` of two mean RLT curves (Algorithm 2).

    Parameters
    ----------
    rlt_a, rlt_b : array_like, shape (i_max,)
        Curves from :func:`relative_living_times` with the same ``i_max``.

    Returns
    -------
    float
        ``0`` for identical curves; at most ``2`` (two curves with disjoint unit mass).
    """
    a, b = np.asarray(rlt_a, dtype=np.float64), np.asarray(rlt_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"RLT curves have shapes {a.shape} and {b.shape}: expected two equal (i_max,) vectors")
    return float(np.sum((a - b) ** 2))


def plot_rlt(curves: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Save mean RLT curves as a step plot (PNG) at ``path``.

    The x axis stops one past the last ``i`` where any curve exceeds 0.1% of the
    filtration (at ``i_max - 1`` at the latest), so that curves with a handful of holes stay
    readable at ``i_max = 100``.

    Parameters
    ----------
    curves : mapping of str to array_like, shape (i_max,)
        Label -> mean RLT; all curves must have the same length.
    path : str or os.PathLike
        Output file; its folder must exist.
    """
    if not curves:
        raise ValueError("curves is empty: pass at least one {label: rlt} entry")
    arrays = {label: np.asarray(rlt, dtype=np.float64) for label, rlt in curves.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or next(iter(shapes)) == () or len(next(iter(shapes))) != 1:
        raise ValueError(f"curves have shapes {sorted(map(str, shapes))}: expected one common (i_max,) shape")

    # Figure + Agg canvas directly: no pyplot, so the process-wide backend is left alone
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stacked = np.stack(list(arrays.values()))
    visible = np.flatnonzero((stacked > 1e-3).any(axis=0))
    # one hole count past the last visible one, so that each curve's last step is seen falling to 0,
    # except when the last visible count is the curve's last entry (i_max - 1): there is none past it
    shown = min(int(visible[-1]) + 2 if visible.size else 2, stacked.shape[1])
    holes = np.arange(shown)

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, rlt in arrays.items():
        axes.step(holes, rlt[:shown], where="mid", linewidth=2, label=label)
    axes.set_xlabel("number of 1-dimensional holes i")
    axes.set_ylabel("mean relative living time")
    axes.set_ylim(0, 1)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")


def _witness_persistence_dim1(
    points: np.ndarray, landmarks: np.ndarray, gamma: float
) -> tuple[np.ndarray, float]:
    """H1 persistence intervals of ``W(landmarks, points, alpha)``, ``alpha <= alpha_max``."""
    distances = cdist(points, landmarks)
    alpha_max = gamma * float(distances.max())
    order = np.argsort(distances, axis=1)
    sorted_distances = np.take_along_axis(distances, order, axis=1)
    # gudhi's table: for each witness, its landmarks from nearest to farthest as (index, distance)
    table = [list(zip(indices.tolist(), row.tolist())) for indices, row in zip(order, sorted_distances)]
    simplex_tree = gudhi.WitnessComplex(nearest_landmark_table=table).create_simplex_tree(
        max_alpha_square=alpha_max, limit_dimension=2
    )
    simplex_tree.compute_persistence(homology_coeff_field=2)
    intervals = np.asarray(simplex_tree.persistence_intervals_in_dimension(1), dtype=np.float64).reshape(-1, 2)
    return intervals, alpha_max


def _relative_living_times_of_barcode(intervals: np.ndarray, alpha_max: float, i_max: int) -> np.ndarray:
    """``RLT(i)`` of one barcode: length of ``{alpha : #{[b, d) containing alpha} = i}`` / ``alpha_max``.

    Holes still alive at the end of the filtration (``d = inf``) are alive up to ``alpha_max``.
    """
    rlt = np.zeros(i_max)
    if alpha_max <= 0:
        # all points coincide: the filtration is a single instant with no hole
        rlt[0] = 1.0
        return rlt
    clipped = np.clip(intervals, 0.0, alpha_max)
    # beta_1 is constant between consecutive interval endpoints
    breakpoints = np.unique(np.concatenate([[0.0, alpha_max], clipped.ravel()]))
    midpoints = 0.5 * (breakpoints[:-1] + breakpoints[1:])
    alive = ((clipped[:, :1] <= midpoints) & (midpoints < clipped[:, 1:])).sum(axis=0)
    lengths = np.diff(breakpoints)
    counted = alive < i_max
    np.add.at(rlt, alive[counted], lengths[counted])
    return rlt / alpha_max
