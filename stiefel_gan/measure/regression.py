r"""Least squares of a per-run statistic on a few regressors, with intervals from a bootstrap over seeds.

A study that varies two things that move together (a spectrum's shape ``tau`` and D's slope, which falls
as ``tau`` rises at a fixed largest singular value) cannot tell them apart by comparing variants. Fitting
the headline on both at once asks how much each one explains with the other held fixed.

Note [least squares with an intercept]
    With :math:`n` runs, the outcome :math:`y \in \mathbb{R}^n` (one run's final FD, say) and the design
    :math:`A = [\mathbf{1}, x_1, \dots, x_p] \in \mathbb{R}^{n \times (p + 1)}` (a column of ones and one
    column per regressor),

    .. math:: \hat\beta = \arg\min_\beta \lVert y - A \beta \rVert^2 = (A^\top A)^{-1} A^\top y,
              \qquad R^2 = 1 - \frac{\lVert y - A \hat\beta \rVert^2}{\lVert y - \bar y \rVert^2}.

    :math:`\hat\beta_j` (:math:`j \ge 1`) is the change of :math:`y` per unit of :math:`x_j` with the other
    regressors held fixed, if :math:`y` is linear in them.

Note [bootstrap over seeds]
    Runs are not independent: every variant of a study runs with the same seeds, and a seed fixes the
    data order, the latents and the initialization of all of them, so the runs of one seed share an
    error. Resampling runs one by one would count those shared errors as independent and make the
    intervals too narrow. The seeds are resampled instead, as clusters: a bootstrap sample draws
    :math:`G` seeds with replacement out of the :math:`G` seeds and takes *all* runs of each drawn seed
    (a seed drawn twice counts twice). Its fit is the weighted normal equations

    .. math:: \hat\beta^* = \Bigl(\sum_g w_g A_g^\top A_g\Bigr)^{-1} \sum_g w_g A_g^\top y_g,

    :math:`w_g` the times seed :math:`g` was drawn, :math:`A_g, y_g` its runs' rows: the least squares
    fit of the drawn runs stacked. ``scipy.stats.bootstrap`` draws the seeds (:data:`BOOTSTRAP_RESAMPLES`
    samples from :data:`BOOTSTRAP_SEED`, so that a report is reproducible) and gives the **percentile**
    interval: the 2.5% and 97.5% quantiles of :math:`\hat\beta^*_j`. (BCa's jackknife over a handful of
    seeds is degenerate.) A sample whose design is singular (possible only where one seed's runs cannot
    separate the regressors by themselves) gets the minimum-norm fit.

    With few seeds the interval is coarse: 3 seeds give only 10 distinct samples, and the interval is
    then close to the range of their 10 fits. It does not assume the errors are Gaussian or equal across
    runs, only that seeds are exchangeable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import bootstrap

#: Seed samples drawn for each interval (scipy's default; a 2-regressor fit of 50 runs takes about 0.1 s).
BOOTSTRAP_RESAMPLES = 9999

#: Seed of those draws, so that a report is reproducible.
BOOTSTRAP_SEED = 0

#: The name of the fit's constant column.
INTERCEPT = "intercept"


@dataclass(frozen=True)
class Coefficient:
    """One fitted coefficient and its bootstrap interval over seeds (NaN with fewer than two seeds)."""

    name: str
    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """The interval lies on one side of 0 (False for a NaN interval)."""
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class ClusteredFit:
    """:func:`clustered_least_squares`: the intercept first, then one coefficient per regressor."""

    coefficients: tuple[Coefficient, ...]
    r_squared: float
    n_observations: int
    n_clusters: int
    confidence: float


def _normal_equations(gram: np.ndarray, moment: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(sum_g w_g A_g^T A_g)^+ sum_g w_g A_g^T y_g`` for each row of ``weights`` (shape ``(..., G)``)."""
    total_gram = np.einsum("...g,gij->...ij", weights, gram)
    total_moment = np.einsum("...g,gi->...i", weights, moment)
    return np.einsum("...ij,...j->...i", np.linalg.pinv(total_gram), total_moment)


def clustered_least_squares(regressors: np.ndarray, outcome: Sequence[float], clusters: Sequence[int],
                            names: Sequence[str], confidence: float = 0.95) -> ClusteredFit:
    """Least squares of ``outcome`` on ``regressors`` with an intercept (module Note [least squares with an
    intercept]), each coefficient with its percentile interval from a bootstrap over ``clusters`` (the
    runs' seeds; module Note [bootstrap over seeds]).

    Parameters
    ----------
    regressors : array of shape (n, p)
        One row per run, one finite column per regressor, named by ``names``.
    outcome : sequence of n finite floats
    clusters : sequence of n ints
        Each run's seed: the runs of one seed are resampled together.
    """
    x = np.asarray(regressors, dtype=np.float64)
    y = np.asarray(outcome, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(names) or len(clusters) != y.shape[0]:
        raise ValueError(f"regressors of shape {x.shape}, {y.shape[0]} outcomes, {len(clusters)} clusters and "
                         f"{len(names)} names are not allowed: use one row, outcome and cluster per run and one "
                         "name per column")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("non-finite regressors or outcomes are not allowed: leave those runs out")
    design = np.column_stack([np.ones(len(y)), x])
    if len(y) <= design.shape[1]:
        raise ValueError(f"{len(y)} runs are not allowed for {design.shape[1]} coefficients: a fit needs more runs "
                         "than coefficients")
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise ValueError(f"regressors {', '.join(names)} are not allowed together on these runs: one of them is "
                         "constant or a linear function of the others")
    labels, cluster_index = np.unique(np.asarray(clusters), return_inverse=True)
    gram = np.stack([design[cluster_index == g].T @ design[cluster_index == g] for g in range(len(labels))])
    moment = np.stack([design[cluster_index == g].T @ y[cluster_index == g] for g in range(len(labels))])
    estimate = _normal_equations(gram, moment, np.ones(len(labels)))
    residual = y - design @ estimate
    spread = float(np.sum((y - y.mean()) ** 2))
    r_squared = 1.0 - float(residual @ residual) / spread if spread > 0 else math.nan
    if len(labels) >= 2:
        def refit(drawn: np.ndarray, axis: int = -1) -> np.ndarray:
            # drawn: cluster indices of each sample along ``axis``; the weights count each cluster's draws
            drawn = np.moveaxis(np.asarray(drawn, dtype=np.int64), axis, -1)
            weights = (drawn[..., None] == np.arange(len(labels))).sum(axis=-2).astype(np.float64)
            return np.moveaxis(_normal_equations(gram, moment, weights), -1, 0)

        result = bootstrap((np.arange(len(labels)),), refit, vectorized=True, method="percentile",
                           n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=confidence,
                           rng=np.random.default_rng(BOOTSTRAP_SEED))
        lows, highs = result.confidence_interval.low, result.confidence_interval.high
    else:
        lows = highs = np.full(design.shape[1], math.nan)
    coefficients = tuple(Coefficient(name, float(b), float(low), float(high))
                         for name, b, low, high in zip([INTERCEPT, *names], estimate, lows, highs))
    return ClusteredFit(coefficients, r_squared, len(y), len(labels), confidence)
