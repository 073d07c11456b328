r"""Least squares of a per-run statistic on a few regressors, with Student t intervals over the seeds' own fits.

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

Note [a t interval over the seeds' own fits]
    Runs are not independent: every variant of a study runs with the same seeds, and a seed fixes the
    data order, the initialization stream and the evaluation latents of all of them, so the runs of one
    seed share an error. The seeds are the independent units, and each seed is a full replicate of the
    study's design (it runs every variant). So the model is fitted in each seed :math:`g = 1, \dots, S`
    on its own runs, :math:`\hat\beta_g = (A_g^\top A_g)^{-1} A_g^\top y_g`: :math:`S` independent
    estimates of the same :math:`\beta`, whatever the seed shares among its runs. The estimate and its
    interval are their mean and the Student t interval over them,

    .. math:: \bar\beta = \frac{1}{S} \sum_g \hat\beta_g, \qquad
              \bar\beta_j \pm t_{1 - \alpha/2,\, S - 1} \, \frac{s_j}{\sqrt S}, \qquad
              s_j^2 = \frac{1}{S - 1} \sum_g (\hat\beta_{g,j} - \bar\beta_j)^2,

    exact when the :math:`\hat\beta_g` are iid normal, for any :math:`S \ge 2` (Fama and MacBeth 1973;
    Ibragimov and Mueller 2010 show the 5% test stays valid, conservative, when the seeds' estimates are
    normal with unequal variances, as when a logged regressor makes the seeds' designs differ).

    The estimate is the **mean of the per-seed fits**, not the pooled fit of all runs, so that it is the
    number the interval is exact for. When every seed has the same design (every variant finished, config
    regressors) the two are equal: the pooled normal equations are :math:`S A^\top A \beta = A^\top
    \sum_g y_g`. A logged regressor (D's slope at step 0) differs a little between seeds, and then the
    two differ a little too.

    A percentile bootstrap over seeds, used before, under-covers with few seeds (3 seeds give it only 10
    distinct resamples): in 2,000 simulated shape_gain-like studies it covered 74% at 3 seeds, 86% at 6 and
    90% at 10, this interval 94.5%, 94.6% and 95.2% (docs/report.md, "Regression").

    A seed whose runs cannot be fitted on their own (fewer runs than coefficients, or a design that is
    collinear within the seed) is **left out** and counted in :attr:`ClusteredFit.n_clusters_left_out`.
    With one seed left, its fit is the estimate and there is no interval; with none (no seed is a
    replicate of the design), the estimate is the pooled fit of all runs and there is no interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

#: The name of the fit's constant column.
INTERCEPT = "intercept"


@dataclass(frozen=True)
class Coefficient:
    """One fitted coefficient: the mean of the per-seed fits, its t interval over seeds and the per-seed
    standard deviation (interval and spread NaN with fewer than two seeds fitted)."""

    name: str
    estimate: float
    low: float
    high: float
    per_seed_sd: float

    @property
    def excludes_zero(self) -> bool:
        """The interval lies on one side of 0 (False for a NaN interval)."""
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class ClusteredFit:
    """:func:`clustered_least_squares`: the intercept first, then one coefficient per regressor.
    ``n_observations`` and ``r_squared`` are over the runs of the ``n_clusters`` seeds fitted;
    ``n_clusters_left_out`` seeds could not be fitted on their own; the interval has ``n_clusters - 1``
    degrees of freedom."""

    coefficients: tuple[Coefficient, ...]
    r_squared: float
    n_observations: int
    n_clusters: int
    n_clusters_left_out: int
    confidence: float

    @property
    def degrees_of_freedom(self) -> int:
        """Of the t interval: the seeds fitted, less one (0 when there is no interval)."""
        return max(self.n_clusters - 1, 0)

    @property
    def t_quantile(self) -> float:
        """The interval's :math:`t_{1 - \\alpha/2,\\, S - 1}` (NaN when there is no interval)."""
        return _t_quantile(self.confidence, self.n_clusters)


def _t_quantile(confidence: float, n_seeds: int) -> float:
    """:math:`t_{1 - \\alpha/2,\\, S - 1}` of a ``confidence`` = :math:`1 - \\alpha` interval over ``n_seeds``
    (NaN below two seeds)."""
    return float(student_t.ppf(0.5 + confidence / 2, df=n_seeds - 1)) if n_seeds >= 2 else math.nan


def _has_full_rank(design: np.ndarray) -> bool:
    return design.shape[0] >= design.shape[1] and np.linalg.matrix_rank(design) == design.shape[1]


def _least_squares(design: np.ndarray, outcome: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(design, outcome, rcond=None)[0]


def clustered_least_squares(regressors: np.ndarray, outcome: Sequence[float], clusters: Sequence[int],
                            names: Sequence[str], confidence: float = 0.95) -> ClusteredFit:
    """Least squares of ``outcome`` on ``regressors`` with an intercept (module Note [least squares with an
    intercept]) fitted in each of ``clusters`` (the runs' seeds) on its own; each coefficient is the mean
    of the per-seed fits with its Student t interval over them (module Note [a t interval over the seeds'
    own fits]).

    Parameters
    ----------
    regressors : array of shape (n, p)
        One row per run, one finite column per regressor, named by ``names``.
    outcome : sequence of n finite floats
    clusters : sequence of n ints
        Each run's seed: each seed's runs are fitted together, apart from the other seeds'.
    """
    x = np.asarray(regressors, dtype=np.float64)
    y = np.asarray(outcome, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(names) or len(clusters) != y.shape[0]:
        raise ValueError(f"regressors of shape {x.shape}, {y.shape[0]} outcomes, {len(clusters)} clusters and "
                         f"{len(names)} names are not allowed: use one row, outcome and cluster per run and one "
                         "name per column")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("non-finite regressors or outcomes are not allowed: leave those runs out")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} is not allowed: use a level in (0, 1), e.g. 0.95")
    design = np.column_stack([np.ones(len(y)), x])
    if len(y) <= design.shape[1]:
        raise ValueError(f"{len(y)} runs are not allowed for {design.shape[1]} coefficients: a fit needs more runs "
                         "than coefficients")
    if not _has_full_rank(design):
        raise ValueError(f"regressors {', '.join(names)} are not allowed together on these runs: one of them is "
                         "constant or a linear function of the others")
    labels, cluster_index = np.unique(np.asarray(clusters), return_inverse=True)
    members = [cluster_index == g for g in range(len(labels))]
    fitted = [rows for rows in members if _has_full_rank(design[rows])]
    if fitted:
        per_seed = np.stack([_least_squares(design[rows], y[rows]) for rows in fitted])
        used = np.logical_or.reduce(fitted)
        estimate = per_seed.mean(axis=0)
    else:  # no seed replicates the design on its own: the pooled fit, without an interval
        used = np.ones(len(y), dtype=bool)
        estimate = _least_squares(design, y)
    if len(fitted) >= 2:
        per_seed_sd = per_seed.std(axis=0, ddof=1)
    else:
        per_seed_sd = np.full(design.shape[1], math.nan)
    residual = y[used] - design[used] @ estimate
    spread = float(np.sum((y[used] - y[used].mean()) ** 2))
    r_squared = 1.0 - float(residual @ residual) / spread if spread > 0 else math.nan
    half_width = _t_quantile(confidence, len(fitted)) * per_seed_sd / math.sqrt(max(len(fitted), 1))  # NaN: none
    coefficients = tuple(Coefficient(name, float(b), float(b - h), float(b + h), float(sd))
                         for name, b, h, sd in zip([INTERCEPT, *names], estimate, half_width, per_seed_sd))
    return ClusteredFit(coefficients, r_squared, int(used.sum()), len(fitted), len(labels) - len(fitted), confidence)
