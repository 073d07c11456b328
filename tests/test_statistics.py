"""Statistics over seeds: the paired bootstrap on synthetic seeds with a known difference, curve statistics."""

import math

import numpy as np
import pytest
from helpers import raises_one_line

from stiefel_gan.measure.statistics import curve_area, last_mean, paired_bootstrap, summarize


def synthetic_study(delta, n_seeds, rng, seed_spread=10.0, noise=0.5):
    """Final metrics of a baseline and a variant over seeds: a large per-seed effect shared by both (the
    seed fixes data order, latents and initialization), small independent noise, and a true difference."""
    seed_effect = rng.normal(0.0, seed_spread, n_seeds)
    baseline = {s: 100 + seed_effect[s] + rng.normal(0, noise) for s in range(n_seeds)}
    variant = {s: 100 + seed_effect[s] + delta + rng.normal(0, noise) for s in range(n_seeds)}
    return variant, baseline


def test_paired_bootstrap_finds_a_known_difference_hidden_by_the_seed_spread():
    variant, baseline = synthetic_study(delta=2.0, n_seeds=12, rng=np.random.default_rng(0))
    result = paired_bootstrap(variant, baseline)
    differences = [variant[s] - baseline[s] for s in range(12)]
    assert result.n == 12 and result.mean == pytest.approx(np.mean(differences))
    assert result.low < 2.0 < result.high and result.low > 0 and not result.inconclusive
    assert result.high - result.low < 1.5  # the seed spread (std 10) is paired away
    # unpaired, the same numbers tell nothing: the spread of either mean dwarfs the difference
    assert np.std(list(baseline.values())) / math.sqrt(12) > 2.0


def test_paired_bootstrap_of_no_difference_is_inconclusive():
    variant, baseline = synthetic_study(delta=0.0, n_seeds=12, rng=np.random.default_rng(1))
    result = paired_bootstrap(variant, baseline)
    assert result.low < 0 < result.high and result.inconclusive


def test_paired_bootstrap_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    covered = []
    for replication in range(300):
        variant, baseline = synthetic_study(delta=1.0, n_seeds=20, rng=rng)
        result = paired_bootstrap(variant, baseline, resamples=2000, seed=replication)
        covered.append(result.low <= 1.0 <= result.high)
    # the percentile bootstrap under-covers slightly at n = 20 (about 93%)
    assert 0.88 <= np.mean(covered) <= 0.99


def test_three_seeds_are_called_only_when_all_agree_and_one_seed_never():
    result = paired_bootstrap({0: 5.0, 1: 7.0, 2: 6.5}, {0: 4.0, 1: 4.5, 2: 6.0})  # differences 1, 2.5, 0.5
    assert (result.low, result.high) == (0.5, 2.5) and not result.inconclusive
    mixed = paired_bootstrap({0: 5.0, 1: 7.0, 2: 5.5}, {0: 4.0, 1: 4.5, 2: 6.0})  # 1, 2.5, -0.5
    assert mixed.low == -0.5 and mixed.inconclusive
    single = paired_bootstrap({0: 5.0}, {0: 1.0})
    assert single.mean == 4.0 and math.isnan(single.low) and single.inconclusive


def test_pairs_are_formed_on_shared_seeds_with_finite_values_only():
    result = paired_bootstrap({0: 1.0, 1: 2.0, 2: float("nan"), 5: 9.0}, {0: 0.0, 1: 0.0, 2: 0.0, 3: 7.0})
    assert result.n == 2 and result.mean == 1.5
    assert paired_bootstrap({0: 1.0}, {1: 1.0}).n == 0


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
    (lambda: paired_bootstrap({0: 1.0}, {0: 1.0}, resamples=0), "resamples=0"),
    (lambda: paired_bootstrap({0: 1.0}, {0: 1.0}, confidence=1.5), "confidence=1.5"),
])
def test_bad_input_is_a_one_line_error(call, named):
    raises_one_line(call, named)
