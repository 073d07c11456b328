"""Statistics over seeds for the reports: summaries, curve statistics and paired bootstrap differences.

A study trains every variant with the same seeds (``train.seed: 0, 1, 2``), and a seed fixes the data
order, the latents and, through ``torch.manual_seed``, the initialization. Two variants run with the same
seed share that much of their randomness, so a variant is compared with the baseline *paired by seed*:
the per-seed differences :math:`d_s = x_{variant, s} - x_{baseline, s}` remove what the seed does to
both, which an unpaired comparison of two means would count as noise.

Note [bootstrap of a handful of seeds]
    The interval of the mean difference is the percentile bootstrap: resample the ``n`` differences with
    replacement :data:`BOOTSTRAP_RESAMPLES` times, take each resample's mean, and report the 2.5% and
    97.5% quantiles of those means (a 95% interval). With ``n = 3`` a resample repeats one difference
    three times with probability 1/27 each, more than 2.5%, so the interval is ``[min d_s, max d_s]``:
    a difference is called only when every seed agrees on its sign. That is honest for three seeds and
    tightens as seeds are added. Fewer than two pairs give no interval (a single difference says nothing
    about the spread) and are never called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Bootstrap resamples of the paired differences.
BOOTSTRAP_RESAMPLES = 10_000

#: Seed of the bootstrap's resampling, so that a report is reproducible.
BOOTSTRAP_SEED = 0

#: Coverage of the bootstrap interval.
CONFIDENCE = 0.95

#: The "late" statistic averages the last this many evaluations of a run.
LAST_EVALUATIONS = 3


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (``ddof = 1``; NaN for one value) and count of finite values."""

    mean: float
    std: float
    n: int


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return array[np.isfinite(array)]


def summarize(values: Sequence[float]) -> Summary:
    """:class:`Summary` of the finite values (None, NaN and infinities are left out and not counted)."""
    array = _finite(values)
    if array.size == 0:
        return Summary(math.nan, math.nan, 0)
    std = float(np.std(array, ddof=1)) if array.size > 1 else math.nan
    return Summary(float(np.mean(array)), std, int(array.size))


def last_mean(values: Sequence[float], count: int = LAST_EVALUATIONS) -> float:
    """Mean of the last ``count`` values of a run's curve (all of them when it has fewer).

    One evaluation of a GAN can swing widely late in training; the mean of the last few is the
    steadier "where did it end up".
    """
    if count < 1:
        raise ValueError(f"count={count!r} is not allowed: use an int >= 1")
    if len(values) == 0:
        return math.nan
    return float(np.mean(np.asarray(values[-count:], dtype=np.float64)))


def curve_area(steps: Sequence[float], values: Sequence[float]) -> float:
    r"""The area under a run's curve divided by its step range: the curve's time average.

    .. math:: \mathrm{AUC} = \frac{1}{s_{last} - s_{first}} \int_{s_{first}}^{s_{last}} x(s)\, ds

    by the trapezoid rule over the evaluated steps, in the metric's own unit, so that runs evaluated at
    different steps or for different lengths compare. It rewards a variant that gets good early and
    stays good. One evaluation: its value.
    """
    steps_array, values_array = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if steps_array.shape != values_array.shape or steps_array.ndim != 1 or steps_array.size == 0:
        raise ValueError(f"steps of shape {steps_array.shape} and values of shape {values_array.shape} are not "
                         "allowed: use two equal, non-empty 1-D sequences")
    if np.any(np.diff(steps_array) <= 0):
        raise ValueError(f"steps={steps_array.tolist()} are not allowed: use strictly increasing steps")
    if steps_array.size == 1:
        return float(values_array[0])
    area = np.sum(np.diff(steps_array) * (values_array[1:] + values_array[:-1]) / 2)
    return float(area / (steps_array[-1] - steps_array[0]))


@dataclass(frozen=True)
class PairedDifference:
    """``variant - baseline`` paired by seed: the mean difference and its bootstrap interval.

    Attributes
    ----------
    mean : float
        Mean of the per-seed differences.
    low, high : float
        Bootstrap interval (:data:`CONFIDENCE`) of the mean; NaN with fewer than two pairs.
    n : int
        Seeds present (with a finite value) in both.
    """

    mean: float
    low: float
    high: float
    n: int

    @property
    def inconclusive(self) -> bool:
        """True when the interval contains 0, or there is no interval (fewer than two pairs)."""
        return not (self.low > 0 or self.high < 0)


def paired_bootstrap(variant: Mapping[int, float], baseline: Mapping[int, float],
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                     confidence: float = CONFIDENCE) -> PairedDifference:
    """Mean of ``variant[s] - baseline[s]`` over the seeds ``s`` both have, with its percentile bootstrap
    interval (module Note [bootstrap of a handful of seeds]).

    Parameters
    ----------
    variant, baseline : mapping of seed to float
        One value per seed (non-finite values are left out).
    resamples : int
        Bootstrap resamples, ``>= 1``.
    seed : int
        Seed of the resampling.
    confidence : float
        Coverage of the interval, in ``(0, 1)``.
    """
    if not (isinstance(resamples, int) and resamples >= 1):
        raise ValueError(f"resamples={resamples!r} is not allowed: use an int >= 1")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} is not allowed: use a float in (0, 1)")
    seeds = sorted(s for s in set(variant) & set(baseline)
                   if math.isfinite(variant[s]) and math.isfinite(baseline[s]))
    differences = np.asarray([variant[s] - baseline[s] for s in seeds], dtype=np.float64)
    if differences.size == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0)
    mean = float(differences.mean())
    if differences.size < 2:
        return PairedDifference(mean, math.nan, math.nan, int(differences.size))
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, differences.size, size=(resamples, differences.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return PairedDifference(mean, float(low), float(high), int(differences.size))
