r"""Statistics over seeds for the reports: summaries, curve statistics, and each variant's difference from
the baseline with its sign-flip p-value and effect size; Holm's correction of a study's declared comparisons.

A study trains every variant with the same seeds (``train.seed: 0, 1, 2``), and a seed fixes the data
order, the latents and, through ``torch.manual_seed``, the initialization. Two variants run with the same
seed share that much of their randomness, so a variant is compared with the baseline *paired by seed*:
the per-seed differences :math:`d_s = x_{variant, s} - x_{baseline, s}` remove what the seed does to
both, which an unpaired comparison of two means would count as noise.

Note [sign-flip test of paired differences]
    If a variant and the baseline do not differ, the two runs of a seed are exchangeable: each difference
    :math:`d_s` is as likely to be :math:`+|d_s|` as :math:`-|d_s|`. The test statistic is the mean
    difference :math:`\bar d`, and its null distribution is :math:`\bar d` under every pattern of signs
    :math:`\epsilon \in \{-1, +1\}^n`; the two-sided p-value is

    .. math:: p = \frac{\#\{\epsilon : |\frac{1}{n} \sum_s \epsilon_s d_s| \ge |\bar d|\}}{2^n}.

    ``scipy.stats.permutation_test(..., permutation_type="samples")`` enumerates all :math:`2^n` patterns
    (an exact test) up to :data:`EXACT_SIGN_FLIP_PAIRS` pairs, and draws :data:`SIGN_FLIP_RESAMPLES`
    seeded random patterns beyond (then :math:`p = (\#\{\dots\} + 1) / (\text{resamples} + 1)`, which keeps
    the test's level). scipy's two-sided p-value, twice the smaller one-sided one, is the formula above:
    the sign-flip distribution is symmetric about 0. Zeros and ties need nothing special: a zero flips to
    itself, and the enumeration counts every pattern. One pair: both patterns give :math:`|d|`, so
    :math:`p = 1`.

    The observed pattern and its mirror image always count, so :math:`p \ge 2 / 2^n = 2^{1-n}`: 0.25 with
    3 seeds, 0.125 with 4, 0.0625 with 5, 0.03125 with 6. Below 6 seeds no difference can reach
    :math:`p \le 0.05`, however large; after Holm's correction over :math:`m` comparisons the first one needs
    :math:`2^{1-n} \le \alpha / m` (:func:`stiefel_gan.config.seeds.fewest_pairs_for_a_verdict`).

Note [effect in baseline seed SDs]
    The p-value says how sure, not how much. The effect is the mean difference divided by the sample
    standard deviation (``ddof = 1``) of the baseline's per-seed values: how many of the baseline's own
    seed-to-seed spreads the variant moves the metric (the "± std" of the baseline's row in a report). It
    is NaN when the baseline has fewer than two seeds or every seed gave the same value (SD 0, e.g. 8 of 8
    modes covered): there is no spread to measure by. The p-value does not depend on it. In a contrast
    ``A - B`` between two variants, ``B`` is the baseline of this Note: the effect is in ``B``'s seed SDs.

Note [Holm's step-down correction]
    A study tests its :math:`m` declared comparisons (a variant minus the baseline) and contrasts (one variant
    minus another, ``report.contrasts``) together, as one family. Sort their p-values,
    :math:`p_{(1)} \le \dots \le p_{(m)}`; Holm (1979) rejects :math:`H_{(1)}, \dots, H_{(k)}` for the
    largest :math:`k` with :math:`p_{(j)} \le \alpha / (m - j + 1)` for every :math:`j \le k`. Equivalently,
    with the adjusted p-values

    .. math:: \tilde p_{(i)} = \max_{j \le i} \min\bigl(1, (m - j + 1)\, p_{(j)}\bigr),

    :math:`H_{(i)}` is rejected when :math:`\tilde p_{(i)} \le \alpha`. The probability of calling any
    comparison of the family when none differs (the family-wise error rate) is at most :math:`\alpha`
    whatever the dependence between the tests, which matters here: every comparison shares the baseline, and
    a contrast shares its variants with their comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import permutation_test

from ..config.seeds import check_alpha

#: Up to this many pairs the sign-flip test enumerates every one of the 2^n sign patterns (scipy builds
#: them one by one: 2^12 take about 40 ms a cell, 2^16 about 0.75 s, and a report has hundreds of cells).
EXACT_SIGN_FLIP_PAIRS = 12

#: Random sign patterns drawn beyond :data:`EXACT_SIGN_FLIP_PAIRS` pairs (drawn at once: about 0.05 s; the
#: p-value's Monte Carlo standard error is at most 0.0035, about 0.0009 near 0.05 / 3).
SIGN_FLIP_RESAMPLES = 20_000

#: Seed of those random patterns, so that a report is reproducible.
SIGN_FLIP_SEED = 0

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



def _mean(values: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(values, axis=axis)


def sign_flip_p_value(differences: Sequence[float]) -> float:
    """Two-sided p-value of the paired sign-flip test of ``mean(differences) = 0`` (module Note [sign-flip
    test of paired differences]): exact over all 2^n sign patterns up to :data:`EXACT_SIGN_FLIP_PAIRS` pairs.

    Parameters
    ----------
    differences : sequence of float
        The per-seed differences ``d_s``: at least one, all finite.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or d.size == 0 or not np.all(np.isfinite(d)):
        raise ValueError(f"differences={d.tolist()!r} are not allowed: use a non-empty 1-D sequence of finite floats")
    if d.size == 1:  # d and -d: the same |mean|
        return 1.0
    # scipy enumerates every pattern when n_resamples >= 2^n, and draws n_resamples at random otherwise
    resamples = 2 ** d.size if d.size <= EXACT_SIGN_FLIP_PAIRS else SIGN_FLIP_RESAMPLES
    result = permutation_test((d,), _mean, permutation_type="samples", vectorized=True, n_resamples=resamples,
                              alternative="two-sided", rng=np.random.default_rng(SIGN_FLIP_SEED))
    return float(result.pvalue)


@dataclass(frozen=True)
class PairedDifference:
    """``variant - baseline`` paired by seed.

    Attributes
    ----------
    mean : float
        Mean of the per-seed differences (NaN without pairs).
    p_value : float
        Two-sided sign-flip p-value of the mean (:func:`sign_flip_p_value`; NaN without pairs), not
        corrected for any other comparison.
    effect : float
        ``mean`` in baseline seed SDs (module Note [effect in baseline seed SDs]; NaN where undefined).
    n : int
        Seeds present (with a finite value) in both.
    """

    mean: float
    p_value: float
    effect: float
    n: int


def paired_difference(variant: Mapping[int, float], baseline: Mapping[int, float]) -> PairedDifference:
    """Mean of ``variant[s] - baseline[s]`` over the seeds ``s`` both have with finite values, its sign-flip
    p-value and its effect in the SDs of the baseline's finite per-seed values (every seed it has)."""
    seeds = sorted(s for s in set(variant) & set(baseline)
                   if math.isfinite(variant[s]) and math.isfinite(baseline[s]))
    if not seeds:
        return PairedDifference(math.nan, math.nan, math.nan, 0)
    differences = [variant[s] - baseline[s] for s in seeds]
    mean = float(np.mean(differences))
    spread = summarize(list(baseline.values())).std
    effect = mean / spread if spread > 0 else math.nan  # NaN spread (one seed) compares False too
    return PairedDifference(mean, sign_flip_p_value(differences), effect, len(seeds))


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's adjusted p-values, in the order given (module Note [Holm's step-down correction]):
    ``max over j <= i of min(1, (m - j + 1) p_(j))`` for the ``i``-th smallest; ties keep their order."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p_values={p.tolist()!r} are not allowed: use a 1-D sequence of floats in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.tolist()


@dataclass(frozen=True)
class TestedDifference:
    """A declared comparison after Holm's correction over its family.

    Attributes
    ----------
    difference : PairedDifference
    adjusted_p_value : float
        Holm's adjusted p-value (a comparison without pairs enters the family with ``p = 1``).
    significant : bool
        ``adjusted_p_value <= alpha``: the only case in which a report calls a difference.
    """

    difference: PairedDifference
    adjusted_p_value: float
    significant: bool


def holm_decisions(differences: Mapping[Hashable, PairedDifference], alpha: float) -> dict[Hashable, TestedDifference]:
    """Each declared comparison of the family ``differences`` (name -> difference) tested at family-wise
    level ``alpha`` by Holm's step-down correction (module Note [Holm's step-down correction]).

    The family is what was declared: a comparison without pairs counts in ``m`` with ``p = 1`` (it cannot
    be called, and leaving it out would loosen the others' thresholds after the fact).
    """
    check_alpha(alpha)
    names = list(differences)
    p_values = [1.0 if differences[name].n == 0 else differences[name].p_value for name in names]
    adjusted = holm_adjusted(p_values)
    return {name: TestedDifference(differences[name], p, p <= alpha) for name, p in zip(names, adjusted)}
