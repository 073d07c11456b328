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

Collapsed clouds and the cost bound.  Coincident points add no witness and no landmark that
their first copy does not already give (a duplicate witness witnesses the same simplices at
the same ``alpha``), so every point is kept once, and landmarks are drawn among the *distinct*
points; on a cloud of distinct points this changes nothing, draw for draw.  A cloud with
fewer distinct points than ``L_0`` has all of them as landmarks (see
:func:`relative_living_times`).  What is left to bound is gudhi's work, and a *nearly*
collapsed cloud is where it grows: a witness ``w`` examines the ``(k+1)``-subsets of its
landmarks within ``alpha_max`` of its ``(k+1)``-th nearest, so a cloud whose witnesses see many
landmarks at almost the same distance (a few tight clusters, whose spread is below
``alpha_max``; most samples in one tight cluster and a few far away) makes each witness try
every landmark triple of its cluster.  Five digits repeated to 1,000 points with noise 1e-3
examine 4.3e5 candidates per draw (13 landmarks a cluster, ``1000 * C(13, 3)``): 0.1 s of gudhi
per draw, 114 CPU s for the 1,000 draws.  Before gudhi runs, the cost of all draws is
estimated in seconds from the candidate count and the size of the nearest-landmark tables
(:func:`_estimated_seconds`), and a cloud whose estimate exceeds :data:`MAX_SECONDS` raises
:class:`~stiefel_gan.metrics.status.MetricUnavailable` with ``reason = "complex_too_large"``;
NaN or infinite points raise it with ``reason = "nonfinite"``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import gudhi
import numpy as np
from scipy.spatial.distance import cdist

from .features import as_float64_array
from .status import COMPLEX_TOO_LARGE, NONFINITE, MetricUnavailable

#: ``gamma = GAMMA_PER_5000_POINTS * N / 5000``: the default of the authors' implementation
#: (github.com/KhrulkovV/geometry-score), which stops the filtration earlier for smaller clouds.
GAMMA_PER_5000_POINTS = 1.0 / 128
#: Seconds gudhi spends per candidate simplex (:func:`_candidate_simplices`), an upper end: measured
#: 5e-8 - 2.7e-7 s on the 2-core development machine, over digits, Gaussians in 256 dimensions, the
#: 2-D mixtures, clusters of near-duplicate digits and a tight cluster with outliers (20 draws each).
SECONDS_PER_CANDIDATE = 3e-7
#: Seconds per entry of a draw's nearest-landmark table (``N`` witnesses times ``L_0`` landmarks):
#: sorting it, building it as Python lists and gudhi's copy of it, the cost of a draw whatever the
#: complex (measured 0.010 s per draw at ``N = 1000``, ``L_0 = 64`` on the same machine).
SECONDS_PER_TABLE_ENTRY = 1.6e-7
#: Default bound of :func:`relative_living_times` on the estimated seconds of all its draws together
#: (``metrics.gs_max_seconds`` of a run).  Estimates at N = 1000, L_0 = 64, n = 1000: clouds of distinct
#: samples at the default gamma 11 - 12 s (digits, measured 15 s; Gaussians in 256 dimensions); the 2-D
#: mixtures at the suite's gamma = 1/8 50 s (ring8) and 146 s (grid25: over the bound; at the mixtures
#: budget's N = 2000, n = 100 it estimates 30 s).  Nearly collapsed digits (k digits, each repeated to
#: 1,000 points, plus noise of std 1e-3) estimate 17 s for k = 20, 46 s for k = 8, and 87 s, 137 s, 543 s,
#: 1727 s for k = 6, 5, 3, 2: over the bound from 6 clusters down.
MAX_SECONDS = 60.0

def relative_living_times(
    X,
    L_0: int = 64,
    gamma: float | None = None,
    i_max: int = 100,
    n: int = 1000,
    seed: int = 0,
    max_seconds: float = MAX_SECONDS,
) -> np.ndarray:
    r"""Mean relative living times of 1-dimensional holes (Algorithm 1 of the paper).

    Parameters
    ----------
    X : array_like, shape (N, D)
        The point cloud; every distinct point is a witness.
    L_0 : int
        Number of landmarks per draw, drawn uniformly without replacement among the distinct
        points (``2 <= L_0 <= N``; the authors' code draws with replacement, which only wastes
        landmarks on duplicates).  With fewer than ``L_0`` distinct points, all of them are the
        landmarks of every draw, and the mean over these identical draws is computed once.
    gamma : float, optional
        ``alpha_max = gamma * max_{l, x} ||l - x||``.  Default ``(1/128) * N / 5000`` (``N``
        counts every row of ``X``, duplicates included).
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
    max_seconds : float
        Bound on the estimated seconds of all draws' witness complexes together, on the 2-core
        development machine (Notes).  Default :data:`MAX_SECONDS`.

    Returns
    -------
    np.ndarray, shape (i_max,)
        ``mRLT(i)``, ``i = 0 .. i_max - 1``.  ``(1, 0, 0, ...)`` exactly for a cloud of at most
        two distinct points: a complex on ``V <= 2`` vertices has ``E <= V - 1`` edges, so its
        graph is a forest with cycle rank ``E - V + c = 0`` (``c`` components), and
        ``beta_1(alpha) = 0`` for every ``alpha``.

    Raises
    ------
    MetricUnavailable
        ``reason = "nonfinite"`` when ``X`` has a NaN or infinite entry (or distances that
        overflow float64); ``reason = "complex_too_large"`` when the estimated seconds of the
        draws exceed ``max_seconds``.  Both are raised before gudhi runs.

    Notes
    -----
    The cost.  For ``k = 0, 1, 2``, gudhi lets witness ``w`` examine a ``(k+1)``-subset
    ``sigma`` of landmarks only if every ``l in sigma`` has ``d(w, l) <= d(w, l') + alpha_max``,
    ``l'`` the nearest landmark not in ``sigma``, which is at most the ``(k+1)``-th nearest
    ``l_(k)(w)`` (0-based).  So a draw examines at most

    .. math:: \sum_{w} \sum_{k=0}^{2} \binom{n_k(w)}{k + 1}, \qquad
              n_k(w) = \#\{l : d(w, l) \le d(w, l_{(k)}(w)) + \alpha_{max}\}

    candidate simplices, and its enumeration takes time proportional to that count (the
    recursion revisits a simplex's faces, a constant factor, and prunes more on spread-out
    clouds than on clustered ones: measured 5e-8 - 2.7e-7 s per candidate).  Each draw also
    costs its nearest-landmark table, ``N L_0`` entries sorted, built and copied into gudhi,
    whatever the values of ``X``; the persistence of the complex (at most the full 2-skeleton on
    ``L_0`` vertices, 43744 simplices for ``L_0 = 64``) takes under 0.02 s.  Summed over the
    draws before the first gudhi call::

        seconds = SECONDS_PER_CANDIDATE * candidates + SECONDS_PER_TABLE_ENTRY * draws * N * L_0

    with the per-unit costs the largest measured on the 2-core development machine, so the draws
    take at most about ``max_seconds`` there (a loaded machine takes longer in wall time).
    Counting costs ``O(n N L_0 log L_0)`` (1 s for ``n = 1000``, ``N = 1000``, ``L_0 = 64``), the
    distances between distinct points ``O(N^2 D)`` once (``8 N^2`` bytes): neither depends on the
    values of ``X``.
    """
    points = as_float64_array(X)
    if points.ndim != 2 or points.shape[0] < 2:
        raise ValueError(f"X has shape {points.shape}: expected (N, D) with N >= 2")
    if not np.isfinite(points).all():
        raise MetricUnavailable(NONFINITE, "X contains NaN or inf")
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
    if not (isinstance(max_seconds, (int, float, np.integer, np.floating)) and max_seconds > 0):
        raise ValueError(f"max_seconds={max_seconds!r}: expected a positive number of seconds")

    # each point once, where its first copy was: a cloud of distinct points keeps its order, hence its draws
    _, first_copies = np.unique(points, axis=0, return_index=True)
    distinct = points[np.sort(first_copies)]
    distances = cdist(distinct, distinct)
    if not np.isfinite(distances).all():
        raise MetricUnavailable(NONFINITE, "distances between points of X overflow float64")
    num_distinct = distinct.shape[0]
    if num_distinct < L_0:
        # every draw would be all the distinct points: one of them is the mean
        landmark_draws = [np.arange(num_distinct)]
    else:
        rng = np.random.default_rng(seed)
        landmark_draws = [rng.choice(num_distinct, size=L_0, replace=False) for _ in range(n)]

    candidates = sum(_candidate_simplices(distances[:, landmarks], gamma) for landmarks in landmark_draws)
    table_entries = len(landmark_draws) * num_distinct * len(landmark_draws[0])
    seconds = _estimated_seconds(candidates, table_entries)
    if seconds > max_seconds:
        raise MetricUnavailable(
            COMPLEX_TOO_LARGE,
            f"the witness complexes of {len(landmark_draws)} landmark draws would take about {seconds:.3g} s "
            f"({candidates:.3g} candidate simplices), over max_seconds={max_seconds:g}; {num_distinct} distinct "
            f"points of {num_points}",
        )
    total = np.zeros(i_max)
    for landmarks in landmark_draws:
        intervals, alpha_max = _witness_persistence_dim1(distances[:, landmarks], gamma)
        total += _relative_living_times_of_barcode(intervals, alpha_max, i_max)
    return total / len(landmark_draws)


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

    Raises
    ------
    MetricUnavailable
        ``reason = "nonfinite"`` when a curve has a NaN or infinite entry.
    """
    a, b = np.asarray(rlt_a, dtype=np.float64), np.asarray(rlt_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"RLT curves have shapes {a.shape} and {b.shape}: expected two equal (i_max,) vectors")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise MetricUnavailable(NONFINITE, "an RLT curve contains NaN or inf")
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


def _witness_persistence_dim1(distances: np.ndarray, gamma: float) -> tuple[np.ndarray, float]:
    """H1 persistence intervals of ``W(landmarks, witnesses, alpha)``, ``alpha <= alpha_max``.

    ``distances[w, l]`` is the Euclidean distance from witness ``w`` to landmark ``l``.
    """
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


def _candidate_simplices(distances: np.ndarray, gamma: float) -> int:
    """Upper bound on the simplices of dimension <= 2 gudhi examines for ``W(landmarks, witnesses, alpha_max)``.

    ``sum_w sum_{k=0}^{2} C(n_k(w), k + 1)`` with ``n_k(w)`` the landmarks within ``alpha_max`` of
    ``w``'s ``(k+1)``-th nearest (:func:`relative_living_times`, Notes); ``distances`` as in
    :func:`_witness_persistence_dim1`.
    """
    alpha_max = gamma * float(distances.max())
    sorted_distances = np.sort(distances, axis=1)
    count = 0
    for k in range(min(3, distances.shape[1])):
        within = np.count_nonzero(sorted_distances <= sorted_distances[:, k : k + 1] + alpha_max, axis=1)
        # C(m, k + 1) for m = within, exactly: each partial product C(m, j + 1) is an integer, and C(L_0, 3) fits int64
        subsets = np.ones_like(within)
        for j in range(k + 1):
            subsets = subsets * (within - j) // (j + 1)
        count += int(subsets.sum())
    return count


def _estimated_seconds(candidates: int, table_entries: int) -> float:
    """Upper estimate of gudhi's seconds for draws with ``candidates`` candidate simplices in all and
    ``table_entries`` entries in all their nearest-landmark tables (``draws * N * L_0``)::

        seconds = SECONDS_PER_CANDIDATE * candidates + SECONDS_PER_TABLE_ENTRY * table_entries
    """
    return SECONDS_PER_CANDIDATE * candidates + SECONDS_PER_TABLE_ENTRY * table_entries


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
