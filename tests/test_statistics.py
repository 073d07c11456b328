"""Statistics over seeds: the paired sign-flip p-value against a brute-force enumeration of its sign
patterns, the effect in baseline seed SDs, Holm's correction against hand-computed values and against its
step-down definition, curve statistics; the regression over seeds against per-seed np.linalg.lstsq, and
its t interval's coverage in simulated studies."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats
from helpers import raises_one_line

from stiefel_gan.config.seeds import fewest_pairs_for_a_verdict, smallest_sign_flip_p_value
from stiefel_gan.measure.regression import clustered_least_squares
from stiefel_gan.measure.statistics import (
    EXACT_SIGN_FLIP_PAIRS,
    PairedDifference,
    curve_area,
    holm_adjusted,
    holm_decisions,
    last_mean,
    paired_difference,
    sign_flip_p_value,
    summarize,
)


def brute_force_sign_flip(differences):
    """The definition: the share of the 2^n sign patterns whose |mean| reaches the observed |mean|."""
    d = np.asarray(differences, dtype=np.float64)
    observed = abs(d.mean())
    tolerance = 1e-9 * max(observed, 1e-300)  # the same value reached by another pattern's rounding
    hits = sum(abs((np.asarray(signs) * d).mean()) >= observed - tolerance
               for signs in itertools.product((1.0, -1.0), repeat=d.size))
    return hits / 2 ** d.size


RNG = np.random.default_rng(0)
CASES = {
    "n=2": [0.4, 1.3],
    "n=3 one sign": [1.0, 2.5, 0.5],
    "n=3 mixed": [1.0, 2.5, -0.5],
    "n=4 ties": [2.0, 2.0, -2.0, 2.0],
    "n=5 zeros": [0.0, 3.0, 0.0, 1.0, 2.0],
    "n=5 all zero": [0.0] * 5,
    "n=6 ties and a zero": [1.0, -1.0, 1.0, 1.0, 0.0, 3.0],
    "n=6 mean zero": [1.0, -1.0, 2.0, -2.0, 0.5, -0.5],
    "n=7 integers": [3.0, 1.0, 4.0, 1.0, -5.0, 9.0, 2.0],
    **{f"n={n} normal": list(RNG.normal(0.3, 1.0, n)) for n in (8, 10, EXACT_SIGN_FLIP_PAIRS)},
}


@pytest.mark.parametrize("differences", CASES.values(), ids=CASES.keys())
def test_the_sign_flip_p_value_is_the_enumeration_of_every_sign_pattern(differences):
    assert sign_flip_p_value(differences) == pytest.approx(brute_force_sign_flip(differences), abs=1e-12)


def test_beyond_the_exact_range_the_random_patterns_agree_with_the_enumeration():
    d = np.random.default_rng(1).normal(0.4, 1.0, 20)
    # all 2^20 patterns by halves: every sum of the first ten signed values with every sum of the last ten
    halves = [np.asarray(list(itertools.product((1.0, -1.0), repeat=10))) @ part for part in (d[:10], d[10:])]
    exact = np.mean(np.abs(halves[0][:, None] + halves[1][None, :]) >= abs(d.sum()) * (1 - 1e-12))
    assert sign_flip_p_value(d) == pytest.approx(exact, abs=0.01)  # 20,000 patterns: standard error 0.0035
    assert sign_flip_p_value(d) == sign_flip_p_value(d)  # seeded: a report is reproducible


def test_the_smallest_p_value_is_two_over_two_to_the_n():
    for n, smallest in ((1, 1.0), (3, 0.25), (5, 0.0625), (6, 0.03125)):
        assert smallest_sign_flip_p_value(n) == smallest
        assert sign_flip_p_value(np.arange(1.0, n + 1)) == pytest.approx(smallest)  # every difference positive
    # so a verdict at 0.05 needs 6 seeds alone, 7 for Holm's first of two or three, 8 for four to six
    assert [fewest_pairs_for_a_verdict(0.05, m) for m in (1, 2, 3, 4, 6, 7)] == [6, 7, 7, 8, 8, 9]
    for alpha, m in itertools.product((0.01, 0.05, 0.1, 0.25), range(1, 12)):
        n = fewest_pairs_for_a_verdict(alpha, m)
        assert 2.0 ** (1 - n) <= alpha / m < 2.0 ** (2 - n) or n == 1


def test_paired_differences_carry_the_mean_the_p_value_and_the_effect_in_baseline_seed_sds():
    variant, baseline = {0: 5.0, 1: 7.0, 2: 6.5}, {0: 4.0, 1: 4.5, 2: 6.0}  # differences 1, 2.5, 0.5
    result = paired_difference(variant, baseline)
    assert (result.mean, result.p_value, result.n) == (pytest.approx(4 / 3), 0.25, 3)
    assert result.effect == pytest.approx((4 / 3) / np.std([4.0, 4.5, 6.0], ddof=1))
    mixed = paired_difference({0: 5.0, 1: 7.0, 2: 5.5}, baseline)  # 1, 2.5, -0.5
    assert mixed.p_value == pytest.approx(brute_force_sign_flip([1.0, 2.5, -0.5])) and mixed.p_value == 0.5
    single = paired_difference({0: 5.0}, {0: 1.0})
    assert (single.mean, single.p_value, single.n) == (4.0, 1.0, 1) and math.isnan(single.effect)  # one baseline seed
    flat = paired_difference({0: 7.0, 1: 6.0}, {0: 8.0, 1: 8.0})  # modes covered: 8 of 8 in every baseline seed
    assert flat.mean == -1.5 and math.isnan(flat.effect) and flat.p_value == 0.5


def test_pairs_are_formed_on_shared_seeds_with_finite_values_only():
    result = paired_difference({0: 1.0, 1: 2.0, 2: float("nan"), 5: 9.0}, {0: 0.0, 1: 0.0, 2: 0.0, 3: 7.0})
    assert result.n == 2 and result.mean == 1.5
    # the effect divides by the spread of the baseline's finite values, all of its seeds
    assert result.effect == pytest.approx(1.5 / np.std([0.0, 0.0, 0.0, 7.0], ddof=1))
    empty = paired_difference({0: 1.0}, {1: 1.0})
    assert empty.n == 0 and all(math.isnan(x) for x in (empty.mean, empty.p_value, empty.effect))


def test_holm_matches_hand_computed_adjusted_p_values():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running maximum 0.02, 0.03, 0.06, 0.06
    assert holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjusted([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # 2 x 0.5 capped at 1, then the maximum
    assert holm_adjusted([0.02, 0.02]) == pytest.approx([0.04, 0.04])  # ties
    assert holm_adjusted([0.3]) == [0.3] and holm_adjusted([]) == []
    # 0.001 x 5, 0.012 x 4, 0.013 x 3, 0.04 x 2, 0.2 x 1
    assert holm_adjusted([0.2, 0.013, 0.001, 0.04, 0.012]) == pytest.approx([0.2, 0.048, 0.005, 0.08, 0.048])


def holm_step_down(p_values, alpha):
    """Holm's procedure as he defined it: walk the sorted p-values, reject while p_(j) <= alpha / (m - j + 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = set()
    for j, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - j):
            break
        rejected.add(index)
    return rejected


def test_holm_adjusted_p_values_reject_exactly_what_the_step_down_procedure_rejects():
    rng = np.random.default_rng(3)
    for _ in range(500):
        m = int(rng.integers(1, 9))
        p = list(rng.uniform(0, 0.1, m) ** rng.uniform(0.5, 2))  # many near the thresholds
        adjusted = holm_adjusted(p)
        for alpha in (0.01, 0.05, 0.1):
            assert {i for i, q in enumerate(adjusted) if q <= alpha} == holm_step_down(p, alpha)


def test_holm_decisions_test_the_declared_family_and_count_a_comparison_without_pairs():
    none = PairedDifference(math.nan, math.nan, math.nan, 0)
    differences = {"a": PairedDifference(-3.0, 0.004, -2.0, 10), "b": PairedDifference(1.0, 0.03, 0.5, 10),
                   "c": none}
    decisions = holm_decisions(differences, alpha=0.05)
    # p-values 0.004, 0.03, 1 (no pairs): adjusted 0.012, 0.06, 1
    assert [decisions[k].adjusted_p_value for k in "abc"] == pytest.approx([0.012, 0.06, 1.0])
    assert [decisions[k].significant for k in "abc"] == [True, False, False]
    assert decisions["a"].difference == differences["a"]
    without = holm_decisions({k: differences[k] for k in "ab"}, alpha=0.05)  # a family of two: b passes at 0.05
    assert [without[k].significant for k in "ab"] == [True, True]


def test_curve_statistics():
    # the trapezoid area of 0 -> 10 over steps 0..10, then 10 flat to step 30: (50 + 200) / 30
    assert curve_area([0, 10, 30], [0.0, 10.0, 10.0]) == pytest.approx(250 / 30)
    assert curve_area([500], [3.0]) == 3.0
    assert last_mean([821.0, 751.0, 280.0, 300.0]) == pytest.approx((751 + 280 + 300) / 3)
    assert last_mean([2.0]) == 2.0 and math.isnan(last_mean([]))
    summary = summarize([1.0, None, 3.0, float("inf"), float("nan")])
    assert (summary.mean, summary.std, summary.n) == (2.0, pytest.approx(math.sqrt(2)), 2)
    assert summarize([4.0]).n == 1 and math.isnan(summarize([4.0]).std)


@pytest.mark.parametrize("call, named", [
    (lambda: curve_area([0, 0], [1.0, 2.0]), "strictly increasing"),
    (lambda: curve_area([0, 1], [1.0]), "equal, non-empty"),
    (lambda: last_mean([1.0], count=0), "count=0"),
    (lambda: sign_flip_p_value([]), "differences=[]"),
    (lambda: sign_flip_p_value([1.0, float("nan")]), "finite"),
    (lambda: smallest_sign_flip_p_value(0), "n=0"),
    (lambda: fewest_pairs_for_a_verdict(1.5), "alpha=1.5"),
    (lambda: fewest_pairs_for_a_verdict(0.05, 0), "comparisons=0"),
    (lambda: holm_adjusted([0.5, 1.2]), "p_values=[0.5, 1.2]"),
    (lambda: holm_decisions({}, alpha=0.0), "alpha=0.0"),
])
def test_bad_input_is_a_one_line_error(call, named):
    raises_one_line(call, named)


# ------------------------------------------------------------------- least squares with a t interval over seeds

def per_seed_lstsq(x, y, seeds):
    """The reference: np.linalg.lstsq with an intercept in each seed on its own, one row per seed."""
    design = np.column_stack([np.ones(len(y)), x])
    return np.stack([np.linalg.lstsq(design[seeds == s], y[seeds == s], rcond=None)[0] for s in np.unique(seeds)])


def test_clustered_least_squares_fits_as_lstsq_and_takes_its_interval_over_seeds():
    rng = np.random.default_rng(0)
    n_seeds, per_seed = 6, 8
    seeds = np.repeat(np.arange(n_seeds), per_seed)
    x = np.tile(rng.normal(size=(per_seed, 2)), (n_seeds, 1))  # every seed runs the same variants
    # a seed's error is shared by all its runs: an offset of each seed, large next to the runs' own noise
    y = 1.0 + 2.0 * x[:, 0] + rng.normal(0, 1.0, n_seeds)[seeds] + rng.normal(0, 0.1, len(seeds))
    fit = clustered_least_squares(x, y, seeds, ["a", "b"])
    # the same design in every seed: the mean of the seeds' fits is the pooled fit
    expected = np.linalg.lstsq(np.column_stack([np.ones(len(y)), x]), y, rcond=None)[0]
    np.testing.assert_allclose([c.estimate for c in fit.coefficients], expected, rtol=1e-10)
    assert [c.name for c in fit.coefficients] == ["intercept", "a", "b"]
    assert (fit.n_observations, fit.n_clusters, fit.n_clusters_left_out, fit.degrees_of_freedom) == (48, 6, 0, 5)
    residual = y - np.column_stack([np.ones(len(y)), x]) @ expected
    assert fit.r_squared == pytest.approx(1 - residual @ residual / np.sum((y - y.mean()) ** 2))
    # the interval: mean +- t_{0.975, 5} sd / sqrt(6) of the six seeds' own fits
    by_seed = per_seed_lstsq(x, y, seeds)
    half = stats.t.ppf(0.975, 5) * by_seed.std(axis=0, ddof=1) / math.sqrt(6)
    np.testing.assert_allclose([c.low for c in fit.coefficients], by_seed.mean(axis=0) - half, rtol=1e-10)
    np.testing.assert_allclose([c.high for c in fit.coefficients], by_seed.mean(axis=0) + half, rtol=1e-10)
    np.testing.assert_allclose([c.per_seed_sd for c in fit.coefficients], by_seed.std(axis=0, ddof=1), rtol=1e-10)
    # the seeds' offsets are in the intercept's interval (their sd 1 over 6 seeds), not in the slopes'
    assert fit.coefficients[0].high - fit.coefficients[0].low > 10 * (fit.coefficients[1].high - fit.coefficients[1].low)
    assert fit.coefficients[0].low < 1.0 < fit.coefficients[0].high
    assert fit.coefficients[1].excludes_zero and not fit.coefficients[2].excludes_zero
    one_seed = clustered_least_squares(x[:per_seed], y[:per_seed], seeds[:per_seed], ["a", "b"])
    assert all(np.isnan(c.low) and np.isnan(c.per_seed_sd) and not c.excludes_zero for c in one_seed.coefficients)


def test_a_seed_that_cannot_be_fitted_alone_is_left_out_and_none_fittable_gives_the_pooled_fit():
    rng = np.random.default_rng(1)
    seeds = np.repeat(np.arange(4), 6)
    x = rng.normal(size=(24, 2))  # a design that differs between seeds: the mean of their fits is not the pooled fit
    y = 3.0 * x[:, 1] + rng.normal(0, 1.0, len(seeds))
    keep = (seeds != 3) | (np.arange(24) % 6 < 2)  # seed 3 keeps 2 runs for 3 coefficients
    fit = clustered_least_squares(x[keep], y[keep], seeds[keep], ["a", "b"])
    assert (fit.n_clusters, fit.n_clusters_left_out, fit.n_observations) == (3, 1, 18)
    by_seed = per_seed_lstsq(x[seeds < 3], y[seeds < 3], seeds[seeds < 3])
    np.testing.assert_allclose([c.estimate for c in fit.coefficients], by_seed.mean(axis=0), rtol=1e-10)
    half = stats.t.ppf(0.975, 2) * by_seed.std(axis=0, ddof=1) / math.sqrt(3)
    np.testing.assert_allclose([c.high - c.estimate for c in fit.coefficients], half, rtol=1e-10)
    # each run its own "seed": no seed replicates the design, so the pooled fit of all runs, without an interval
    by_run = clustered_least_squares(x, y, np.arange(24), ["a", "b"])
    assert (by_run.n_clusters, by_run.n_clusters_left_out, by_run.n_observations) == (0, 24, 24)
    pooled = np.linalg.lstsq(np.column_stack([np.ones(24), x]), y, rcond=None)[0]
    np.testing.assert_allclose([c.estimate for c in by_run.coefficients], pooled, rtol=1e-10)
    assert all(np.isnan(c.low) and not c.excludes_zero for c in by_run.coefficients)


#: shape_gain-like variants: 4 taus x 4 sigmas, each seed runs all 16
LOG_TAUS, LOG_SIGMAS = np.log([0.25, 0.5, 1.0, 4.0]), np.log([0.9, 1.0, 1.1, 1.2])
SIMULATED_STUDIES = 1000
#: 3 binomial SDs of a 95% coverage over SIMULATED_STUDIES independent studies: 0.021
COVERAGE_TOLERANCE = 3 * math.sqrt(0.95 * 0.05 / SIMULATED_STUDIES)


def simulated_shape_gain(rng, n_seeds, tau_effect):
    """One study: the final FD on log tau and log D-slope at step 0 (which falls with tau and grows as sigma^8,
    measured with noise, so each seed's design differs a little), with a seed offset and a seed's own
    deviation of the tau effect (both shared by all its runs) and each run's noise."""
    log_tau, log_sigma = (np.repeat(LOG_TAUS, 4), np.tile(LOG_SIGMAS, 4))
    log_slope = 8 * log_sigma - 0.5 * log_tau + rng.normal(0, 0.1, (n_seeds, 16))
    tau_per_seed = tau_effect + rng.normal(0, 10, (n_seeds, 1))
    fd = (500 + tau_per_seed * log_tau + 80 * log_slope + rng.normal(0, 30, (n_seeds, 1))
          + rng.normal(0, 5, (n_seeds, 16)))
    x = np.column_stack([np.tile(log_tau, n_seeds), log_slope.ravel()])
    return x, fd.ravel(), np.repeat(np.arange(n_seeds), 16)


@pytest.mark.parametrize("n_seeds", [3, 6])
def test_the_interval_covers_the_true_coefficient_in_95_percent_of_simulated_studies(n_seeds):
    rng = np.random.default_rng(n_seeds)
    covered = called_without_effect = 0
    for _ in range(SIMULATED_STUDIES):
        with_effect = clustered_least_squares(*simulated_shape_gain(rng, n_seeds, -40.0), ["tau", "slope"])
        tau = with_effect.coefficients[1]
        covered += tau.low < -40.0 < tau.high
        without_effect = clustered_least_squares(*simulated_shape_gain(rng, n_seeds, 0.0), ["tau", "slope"])
        called_without_effect += without_effect.coefficients[1].excludes_zero
    assert abs(covered / SIMULATED_STUDIES - 0.95) <= COVERAGE_TOLERANCE
    assert called_without_effect / SIMULATED_STUDIES <= 0.05 + COVERAGE_TOLERANCE


def test_clustered_least_squares_refuses_what_it_cannot_fit_in_one_line():
    x = np.column_stack([np.arange(6.0), np.ones(6)])  # the second column is the intercept again
    raises_one_line(lambda: clustered_least_squares(x, np.arange(6.0), [0, 0, 0, 1, 1, 1], ["a", "b"]),
                    "a, b", "constant or a linear function")
    raises_one_line(lambda: clustered_least_squares(x[:2, :1], np.arange(2.0), [0, 1], ["a"]),
                    "2 runs", "more runs than coefficients")
    raises_one_line(lambda: clustered_least_squares(x[:, :1], np.arange(6.0), [0, 0, 0, 1, 1, 1], ["a"], confidence=95),
                    "confidence=95", "(0, 1)")
