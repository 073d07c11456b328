"""A collapsed generator (identical samples, NaN samples) gets a defined metric or MetricUnavailable, quickly.

Every time bound below is generous (30 s; 180 s for a nearly collapsed cloud that is scored); the comment next to it gives the time measured on
the 2-core development machine, under a concurrent test run.
"""

import math
import pickle
import time

import gudhi
import numpy as np
import pytest
import torch
from helpers import tiny_run
from scipy.spatial.distance import cdist

from stiefel_gan.config.schema import MetricsConfig
from stiefel_gan.data.images import load_digits
from stiefel_gan.data.mixtures import sample_mixture
from stiefel_gan.manifold import fit_curve
from stiefel_gan.manifold.spectra import FIT_TAU_BOUNDS
from stiefel_gan.metrics import (
    DigitsEvaluator,
    FidelityProtocol,
    MetricUnavailable,
    compute_fidelity,
    feature_statistics,
    frechet_distance,
    geometry_score,
    mode_metrics,
    relative_living_times,
)
from stiefel_gan.measure.quality import geometry_gamma
from stiefel_gan.metrics.geometry import _candidate_simplices

BOUND_S = 30.0
RING = 2.0 * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], axis=1)
STD = 0.02


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _unavailable(function, *args, **kwargs) -> tuple[MetricUnavailable, float]:
    start = time.perf_counter()
    with pytest.raises(MetricUnavailable) as caught:
        function(*args, **kwargs)
    return caught.value, time.perf_counter() - start


def _no_hole_curve(i_max=100):
    curve = np.zeros(i_max)
    curve[0] = 1.0
    return curve


# --- the exception ------------------------------------------------------------------------------------------------


def test_metric_unavailable_carries_its_reason_across_processes():
    error = MetricUnavailable("nonfinite", "samples contain NaN or inf")
    assert isinstance(error, ValueError) and error.reason == "nonfinite"
    assert str(error) == "samples contain NaN or inf (nonfinite)"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.detail, str(copy)) == (error.reason, error.detail, str(error))
    with pytest.raises(ValueError, match="reason"):
        MetricUnavailable("slow", "an unknown reason")


# --- Geometry Score -----------------------------------------------------------------------------------------------


def test_identical_samples_have_no_hole_at_the_default_settings():
    # one distinct point: no edge, no cycle, beta_1 = 0 for every alpha (before: 12 s per draw, ~3.4 h for n = 1000)
    samples = np.tile(np.random.default_rng(0).normal(size=256), (1000, 1))
    rlt, seconds = _timed(relative_living_times, samples)
    assert seconds < BOUND_S  # measured 0.02 s
    np.testing.assert_array_equal(rlt, _no_hole_curve())
    # the score of a cloud against itself is 0, whatever the draws
    assert geometry_score(rlt, relative_living_times(samples, seed=1)) == 0.0


def test_two_distinct_points_have_no_hole():
    # a complex on 2 vertices has at most one edge: cycle rank E - V + c = 0
    samples = np.repeat(np.random.default_rng(1).normal(size=(2, 256)), 500, axis=0)
    rlt, seconds = _timed(relative_living_times, samples)
    assert seconds < BOUND_S  # measured 0.01 s
    np.testing.assert_array_equal(rlt, _no_hole_curve())


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nonfinite_samples_never_reach_gudhi(bad_value):
    everywhere = np.full((1000, 256), bad_value)
    once = np.random.default_rng(2).normal(size=(1000, 256))
    once[17, 3] = bad_value
    for samples in (everywhere, once):
        error, seconds = _unavailable(relative_living_times, samples)
        assert error.reason == "nonfinite" and seconds < BOUND_S  # measured 0.001 s
    error, _ = _unavailable(geometry_score, np.full(100, np.nan), _no_hole_curve())
    assert error.reason == "nonfinite"


def test_a_tight_cluster_and_one_outlier_is_over_budget_before_gudhi_runs():
    # alpha_max = gamma * (distance to the outlier) dwarfs the cluster: every witness ties every landmark
    # triple, 1000 * C(64, 3) candidates per draw, ~13 s of gudhi per draw before the budget existed
    rng = np.random.default_rng(3)
    samples = np.ones((1000, 256))
    samples[:999] += 1e-9 * rng.normal(size=(999, 256))
    samples[999] += 10.0
    error, seconds = _unavailable(relative_living_times, samples)
    assert error.reason == "complex_too_large"
    assert seconds < BOUND_S  # measured 0.6 s (counting the candidates of the 1000 draws)


def test_duplicates_change_nothing_and_distinct_clouds_keep_the_scores_of_before():
    # RLT of these clouds computed by the code before deduplication and the budget (commit 663bed2)
    rng = np.random.default_rng(2)
    angle, radius = rng.uniform(0, 2 * np.pi, 400), np.sqrt(rng.uniform(0, 1, 400))
    disc = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    disc_before = {1: 0.02985109530431737, 2: 0.12407775183706793, 3: 0.17224532163439002, 4: 0.09945897796579724,
                   5: 0.12696825556193228, 6: 0.05321860301473826, 7: 0.10832516219847733, 8: 0.07205363955016032,
                   9: 0.09631327543506013, 10: 0.05246675142493772, 11: 0.02294178212231705,
                   12: 0.03694564913727879, 13: 0.0051337348135255334}
    gauss = np.random.default_rng(1).normal(size=(200, 64))
    gauss_before = {18: 0.014912309924895107, 19: 0.1850876900751049, 27: 0.07687998941508555,
                    28: 0.12312001058491447, 32: 0.04969741128989403, 33: 0.06600317720454725,
                    34: 0.23427188269263413, 35: 0.050027528812924604, 36: 0.18136537744436843,
                    37: 0.01863462255563157}
    for cloud, options, before in ((disc, {"L_0": 32, "gamma": 1 / 32, "n": 6, "seed": 4}, disc_before),
                                   # the default gamma of N = 200, which the copies below would change
                                   (gauss, {"L_0": 32, "gamma": 1 / 128 * 200 / 5000, "n": 5, "seed": 3},
                                    gauss_before)):
        expected = np.zeros(100)
        expected[list(before)] = list(before.values())
        np.testing.assert_array_equal(relative_living_times(cloud, **options), expected)
        # copies appended after their originals: the same distinct cloud in the same order, hence the same draws
        with_copies = np.concatenate([cloud, cloud[::3], cloud[:5]])
        np.testing.assert_array_equal(relative_living_times(with_copies, **options), expected)


def test_fewer_distinct_points_than_landmarks_makes_all_of_them_landmarks():
    rng = np.random.default_rng(4)
    angle = np.sort(rng.uniform(0, 2 * np.pi, 12))
    distinct = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    repeated = distinct[rng.integers(0, 12, 1000)]
    repeated[:12] = distinct  # every point present
    gamma = 1 / 4
    rlt, seconds = _timed(relative_living_times, repeated, L_0=64, gamma=gamma)
    assert seconds < BOUND_S  # measured 0.01 s
    # the 12 points with L_0 = 12: every draw is all of them, in another order, so the same complex up to relabelling
    reference = relative_living_times(distinct, L_0=12, gamma=gamma, n=5)
    np.testing.assert_allclose(rlt, reference, rtol=0, atol=1e-12)
    assert rlt.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["noisy circle", "cluster and outlier", "grid with ties"])
def test_candidate_count_bounds_the_complex_gudhi_builds(name):
    rng = np.random.default_rng(5)
    if name == "noisy circle":
        angle = rng.uniform(0, 2 * np.pi, 150)
        points = np.stack([np.cos(angle), np.sin(angle)], axis=1) + 0.05 * rng.normal(size=(150, 2))
    elif name == "cluster and outlier":
        points = np.concatenate([1e-6 * rng.normal(size=(60, 3)), [[5.0, 0.0, 0.0]]])
    else:  # a lattice: many equal distances
        points = np.stack(np.meshgrid(np.arange(12.0), np.arange(12.0)), axis=-1).reshape(-1, 2)
    landmarks = rng.choice(len(points), 16, replace=False)
    distances = cdist(points, points[landmarks])
    alpha_max = 0.25 * distances.max()
    table = [list(zip(np.argsort(row).tolist(), np.sort(row).tolist())) for row in distances]
    tree = gudhi.WitnessComplex(nearest_landmark_table=table).create_simplex_tree(
        max_alpha_square=alpha_max, limit_dimension=2
    )
    # each simplex gudhi inserts was examined by at least one witness
    assert tree.num_simplices() <= _candidate_simplices(distances, 0.25)


def test_budget_is_enforced_and_leaves_normal_clouds_alone():
    samples = np.random.default_rng(6).normal(size=(300, 8))
    assert relative_living_times(samples, n=3).sum() == pytest.approx(1.0)
    # 3 draws of 300 x 64 table entries alone estimate 0.009 s
    error, _ = _unavailable(relative_living_times, samples, n=3, max_seconds=0.001)
    assert error.reason == "complex_too_large" and "max_seconds=0.001" in str(error)
    with pytest.raises(ValueError, match="max_seconds=0"):
        relative_living_times(samples, n=3, max_seconds=0)


def _nearly_collapsed_digits(digits: int, noise: float) -> np.ndarray:
    """``digits`` real training digits, each repeated to make 1,000 points, plus Gaussian noise of std ``noise``."""
    rng = np.random.default_rng(7)
    train = load_digits(16, split="train").tensors[0].reshape(-1, 256).numpy().astype(np.float64)
    chosen = train[rng.choice(len(train), digits, replace=False)]
    return chosen[np.arange(1000) % digits] + noise * rng.normal(size=(1000, 256))


def _digits_budget_options() -> dict:
    """The Geometry Score options a run of the digits budget passes (SampleQuality.geometry)."""
    metrics = MetricsConfig(n_samples=1000)
    return {"L_0": metrics.gs_landmarks, "gamma": geometry_gamma("digits", metrics.n_samples),
            "i_max": metrics.gs_i_max, "n": metrics.gs_n, "max_seconds": metrics.gs_max_seconds}


@pytest.mark.parametrize(("digits", "noise"), [(5, 1e-3), (2, 1e-3), (5, 1e-6), (5, 1e-2)])
def test_nearly_collapsed_digits_are_over_budget_before_gudhi_runs(digits, noise):
    """A few digits repeated with a little noise: every witness sees its cluster's ~1000 / digits / 5 landmarks
    at almost the same distance and tries all their triples.  Before the seconds bound, 5 digits with noise
    1e-3 were under the candidate budget and took 114 CPU s (176 s wall on the loaded 2-core machine);
    now all four raise in 0.4 - 1 s (counting the 1,000 draws).  Estimates: 5 digits 137 s (noise 1e-3 and
    1e-6), 95 s (noise 1e-2); 2 digits 1730 s."""
    error, seconds = _unavailable(relative_living_times, _nearly_collapsed_digits(digits, noise),
                                  **_digits_budget_options())
    assert error.reason == "complex_too_large"
    assert seconds < BOUND_S  # measured 0.4 - 1 s


def test_nearly_collapsed_digits_in_20_clusters_are_scored_within_the_bound():
    """20 digits with noise 1e-3: 2.2e4 candidates per draw, estimated 17 s, measured 13 - 20 s (loaded
    machine).  The bound asserted is three times the default max_seconds: not a timing test."""
    options = _digits_budget_options()
    rlt, seconds = _timed(relative_living_times, _nearly_collapsed_digits(20, 1e-3), **options)
    assert seconds < 3 * options["max_seconds"]
    assert rlt.shape == (100,) and (rlt >= 0).all() and rlt.sum() == pytest.approx(1.0)


def test_the_seconds_bound_keeps_the_scores_of_normal_clouds():
    """Real digits (1,000 training digits against the 450 held-out ones, digits settings, 20 draws) and two
    2-D mixtures (ring8 against grid25, gamma 1/8): the scores of the code before the seconds bound,
    which are also under it at the full 1,000 draws (digits: estimated 11 s, measured 15 s)."""
    train = load_digits(16, split="train").tensors[0].reshape(-1, 256).numpy().astype(np.float64)
    held_out = load_digits(16, split="held_out").tensors[0].reshape(-1, 256).numpy().astype(np.float64)
    options = {**_digits_budget_options(), "n": 20, "seed": 0}
    digits_score = geometry_score(relative_living_times(train[:1000], **options),
                                  relative_living_times(held_out, **options))
    assert digits_score == 0.06355637999011565
    ring = sample_mixture("ring8", 400, seed=0).tensors[0].numpy().astype(np.float64)
    grid = sample_mixture("grid25", 400, seed=1).tensors[0].numpy().astype(np.float64)
    mixture_options = {"L_0": 32, "gamma": 1 / 8, "n": 10, "seed": 0}
    mixture_score = geometry_score(relative_living_times(ring, **mixture_options),
                                   relative_living_times(grid, **mixture_options))
    assert mixture_score == 0.6654918282570471


# --- Fréchet distance ---------------------------------------------------------------------------------------------


def test_identical_features_give_the_point_mass_distance_exactly():
    # W2^2(delta_x, N(mu, C)) = ||x - mu||^2 + Tr C: the coupling is forced
    rng = np.random.default_rng(7)
    real = rng.normal(size=(2000, 64)) * rng.uniform(0.1, 3.0, 64) + rng.normal(size=64)
    point = rng.normal(size=64)
    mu_real, cov_real = feature_statistics(real)
    (mu, cov), seconds = _timed(feature_statistics, np.tile(point, (1000, 1)))
    distance, more_seconds = _timed(frechet_distance, mu, cov, mu_real, cov_real)
    assert seconds + more_seconds < BOUND_S  # measured 0.01 s
    expected = np.sum((point - mu_real) ** 2) + np.trace(cov_real)
    assert distance == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu_real, cov_real, mu, cov) == pytest.approx(expected, rel=1e-10)


def test_rank_one_covariances_match_their_closed_form():
    # C1 = u u^T, C2 = v v^T: C1^{1/2} C2 C1^{1/2} = (u.v)^2 u u^T / |u|^2, whose root has trace |u.v|
    rng = np.random.default_rng(8)
    u, v, mu1, mu2 = (rng.normal(size=10) for _ in range(4))
    expected = np.sum((mu1 - mu2) ** 2) + u @ u + v @ v - 2 * abs(u @ v)
    # torch-fidelity's eigvals of C1 C2: the nine zero eigenvalues' roots leave ~1e-8 of the scale
    assert frechet_distance(mu1, np.outer(u, u), mu2, np.outer(v, v)) == pytest.approx(expected, rel=1e-7)


def test_nonfinite_features_are_unavailable():
    error, seconds = _unavailable(feature_statistics, np.full((1000, 64), np.nan))
    assert error.reason == "nonfinite" and seconds < BOUND_S  # measured 0.001 s
    eye = np.eye(3)
    error, _ = _unavailable(frechet_distance, np.zeros(3), np.full((3, 3), np.inf), np.zeros(3), eye)
    assert error.reason == "nonfinite"


# --- mode metrics -------------------------------------------------------------------------------------------------


def test_a_repeated_point_at_a_mode_centre_covers_that_mode_alone():
    samples = np.tile(RING[3], (1000, 1))
    metrics, seconds = _timed(mode_metrics, samples, RING, STD)
    assert seconds < BOUND_S  # measured 0.001 s
    # all mass on one of M modes: KL(p || U) = log M
    assert metrics == {"modes_covered": 1, "n_modes": 8, "high_quality_fraction": 1.0,
                       "mode_kl": pytest.approx(math.log(8), rel=1e-12)}
    far = mode_metrics(np.zeros((1000, 2)), RING, STD)
    assert (far["modes_covered"], far["high_quality_fraction"]) == (0, 0.0) and math.isnan(far["mode_kl"])


def test_nonfinite_samples_make_mode_metrics_unavailable():
    error, seconds = _unavailable(mode_metrics, np.full((1000, 2), np.nan), RING, STD)
    assert error.reason == "nonfinite" and seconds < BOUND_S  # measured 0.001 s
    with pytest.raises(ValueError, match="centers") as caught:
        mode_metrics(np.zeros((4, 2)), np.full((8, 2), np.nan), STD)
    assert not isinstance(caught.value, MetricUnavailable)  # bad centres are the caller's bug


# --- digits metrics -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluator():
    return DigitsEvaluator()


def test_identical_digits_are_a_point_mass_in_one_class(evaluator):
    image = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    images = image.repeat(1000, 1, 1, 1)
    distance, seconds = _timed(evaluator.frechet_distance, images)
    coverage, more_seconds = _timed(evaluator.class_coverage, images)
    compared, most_seconds = _timed(evaluator.feature_metrics, images)
    assert seconds + more_seconds + most_seconds < BOUND_S  # measured 0.1 s + 0.1 s + 0.9 s
    assert all(math.isfinite(value) for value in compared.values())
    assert compared["digits_fd"] == pytest.approx(distance, rel=1e-12)
    # a point in the features: coverage of at most the few real balls it falls in, recall 0 (radius 0)
    assert compared["recall"] == 0.0 and compared["coverage"] < 0.05
    features = evaluator.features(images).double().numpy()
    mu = features.mean(axis=0)
    expected = np.sum((mu - evaluator.reference_mu) ** 2) + np.trace(evaluator.reference_cov)
    assert distance == pytest.approx(expected, rel=1e-9)
    # one class by argmax; uniform noise is no digit, so no class at softmax >= 0.9
    assert coverage == {"classes_covered": 1, "classes_covered_confident": 0,
                        "class_kl": pytest.approx(math.log(10), rel=1e-12)}


def test_nonfinite_digits_are_unavailable(evaluator):
    images = torch.full((1000, 1, 16, 16), float("nan"))
    for metric in (evaluator.frechet_distance, evaluator.class_coverage, evaluator.feature_metrics):
        error, seconds = _unavailable(metric, images)
        assert error.reason == "nonfinite" and seconds < BOUND_S  # measured 0.001 s


# --- torch-fidelity ----------------------------------------------------------------------------------------------


def test_nonfinite_images_are_unavailable_before_any_network_is_loaded():
    protocol = FidelityProtocol("tiny", n_fake=10, n_real=10, is_splits=1, kid_subsets=1, kid_subset_size=10,
                                real_split="train")
    real = torch.zeros(10, 3, 16, 16)
    fake = real.clone()
    fake[4, 1, 2, 3] = float("nan")
    error, seconds = _unavailable(compute_fidelity, fake, real, protocol)
    assert error.reason == "nonfinite" and seconds < BOUND_S  # measured 0.001 s


# --- spectrum fit -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[2.0], [2.0, 1.0]])
def test_fit_of_one_or_two_values_refuses_at_once(values):
    start = time.perf_counter()
    with pytest.raises(ValueError, match="k >= 3"):
        fit_curve(values)
    assert time.perf_counter() - start < BOUND_S  # measured 0.0001 s


@pytest.mark.parametrize("k", [3, 64, 1000])
def test_fit_of_a_flat_spectrum_leaves_tau_undefined(k):
    fit, seconds = _timed(fit_curve, np.full(k, 2.5))
    assert seconds < BOUND_S  # measured 0.0001 s
    assert math.isnan(fit.tau) and (fit.eps, fit.sigma, fit.rmse) == (1.0, 2.5, 0.0)


def test_fit_of_a_rank_one_spectrum_runs_to_the_tau_bound():
    # eps = 0 and sum_i (1 - t_i)^(2 tau) decreasing in tau: the best tau is the largest allowed
    values = np.zeros(64)
    values[0] = 3.0
    fit, seconds = _timed(fit_curve, values)
    assert seconds < BOUND_S  # measured 0.003 s
    assert fit.eps == 0.0 and fit.sigma == 3.0
    assert fit.tau == pytest.approx(FIT_TAU_BOUNDS[1], rel=1e-6)


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_geometry_score_time_bound_that_is_not_positive_stops_before_training(value, tmp_path, stops_in_one_line):
    stops_in_one_line(["train", *tiny_run(2, f"metrics.gs_max_seconds={value}"), f"out_dir={tmp_path / 'runs'}"],
                      f"metrics.gs_max_seconds={float(value)}", "> 0")
    assert not (tmp_path / "runs").exists()
