"""Feature-set comparisons (stiefel_gan.metrics.features): torch-fidelity's FD / KID / precision-recall and
the suite's density-coverage, against closed forms, an independent dense FD and brute-force definitions."""

import numpy as np
import pytest
import torch
from helpers import dense_frechet_distance, raises_one_line

from stiefel_gan.metrics import (
    MetricUnavailable,
    density_coverage,
    feature_statistics,
    frechet_distance,
    kernel_distance,
    precision_recall,
)


def _random_spd(rng, dim, rank=None):
    factor = rng.normal(size=(dim, rank or dim))
    return factor @ factor.T / dim


def _cloud(n, dim=8, shift=0.0, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


# --- Fréchet distance --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diagonal_covariances_match_closed_form(seed):
    # commuting covariances: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("rank", [None, 20])
def test_fd_of_features_equals_an_independent_dense_computation(rank):
    # 64-d features as the digits classifier's, full rank or with dead units (rank 20)
    rng = np.random.default_rng(rank or 0)
    mixing = rng.normal(size=(rank or 64, 64))
    a = rng.normal(size=(1000, rank or 64)) @ mixing
    b = (rng.normal(size=(450, rank or 64)) * 1.3 + 0.2) @ mixing
    distance = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert distance == pytest.approx(dense_frechet_distance(a, b), rel=1e-6)
    # zero up to the roots of the round-off eigenvalues of C C (torch-fidelity's eigvals: -4e-5 at rank 20)
    mu, cov = feature_statistics(a)
    assert abs(frechet_distance(mu, cov, mu, cov)) <= 1e-6 * np.trace(cov)


def test_fd_is_symmetric_grows_with_the_mean_shift_and_is_exact_for_a_point_mass():
    rng = np.random.default_rng(3)
    cov1, cov2 = _random_spd(rng, 5), _random_spd(rng, 5)
    mu = rng.normal(size=5)
    assert frechet_distance(mu, cov1, 0 * mu, cov2) == pytest.approx(frechet_distance(0 * mu, cov2, mu, cov1), rel=1e-9)
    base = frechet_distance(0 * mu, cov1, 0 * mu, cov1)
    assert frechet_distance(mu, cov1, 0 * mu, cov1) - base == pytest.approx(mu @ mu, rel=1e-8)
    # W2^2(delta_mu, N(0, C)) = |mu|^2 + Tr C: the coupling is forced
    assert frechet_distance(mu, np.zeros((5, 5)), 0 * mu, cov2) == pytest.approx(mu @ mu + np.trace(cov2), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_feature_statistics_match_numpy_in_float64(dtype):
    features = torch.randn(50, 7, generator=torch.Generator().manual_seed(0), dtype=dtype)
    mu, cov = feature_statistics(features)
    reference = features.double().numpy()
    assert mu.dtype == np.float64 and cov.dtype == np.float64
    np.testing.assert_allclose(mu, reference.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(reference, rowvar=False), rtol=1e-12)
    assert feature_statistics(features[:, :1])[1].shape == (1, 1)


def test_bad_or_nonfinite_inputs():
    eye = np.eye(3)
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), eye, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), eye)
    with pytest.raises(ValueError, match="features"):
        feature_statistics(np.zeros((1, 4)))
    for call in (lambda: frechet_distance(np.full(3, np.nan), eye, np.zeros(3), eye),
                 lambda: feature_statistics(np.full((10, 3), np.inf)),
                 lambda: precision_recall(np.full((10, 3), np.nan), np.zeros((10, 3))),
                 lambda: density_coverage(np.zeros((10, 3)), np.full((10, 3), np.nan)),
                 lambda: kernel_distance(np.full((10, 3), np.nan), np.zeros((10, 3)), subset_size=5)):
        with pytest.raises(MetricUnavailable) as caught:
            call()
        assert caught.value.reason == "nonfinite"
    with pytest.raises(ValueError, match=r"subset_size=11: expected an integer in 2\.\.10"):
        kernel_distance(np.zeros((10, 3)), np.zeros((20, 3)), subset_size=11)


# --- KID ---------------------------------------------------------------------------------------------------------


def test_kid_is_the_unbiased_cubic_mmd():
    fake, real = _cloud(60, 4, shift=0.5, seed=1), _cloud(60, 4, seed=2)
    # one subset of all rows: no random draw changes which pairs are summed
    kernel = lambda x, y: (x @ y.T / 4 + 1) ** 3  # noqa: E731
    m = 60
    k_xx, k_yy, k_xy = kernel(fake, fake), kernel(real, real), kernel(fake, real)
    expected = ((k_xx.sum() - k_xx.trace()) + (k_yy.sum() - k_yy.trace())) / (m * (m - 1)) - 2 * k_xy.mean()
    assert kernel_distance(fake, real, subset_size=60, subsets=1) == pytest.approx(float(expected), rel=1e-10)
    same = kernel_distance(_cloud(400, seed=3), _cloud(400, seed=4), subset_size=300)
    shifted = kernel_distance(_cloud(400, shift=1.0, seed=3), _cloud(400, seed=4), subset_size=300)
    assert abs(same) < 0.02 < shifted



def test_kid_at_a_reference_scaled_kernel_does_not_change_when_the_features_are_scaled():
    fake, real = _cloud(200, 4, shift=0.5, seed=1), _cloud(200, 4, seed=2)

    def kid_at_reference_scale(scale):  # gamma = 1 / E||r||^2, as the digits evaluator sets it
        scaled_real = scale * real
        gamma = 1.0 / float((scaled_real ** 2).sum(axis=1).mean())
        return kernel_distance(scale * fake, scaled_real, subset_size=100, gamma=gamma)

    assert kid_at_reference_scale(30.0) == pytest.approx(kid_at_reference_scale(1.0), rel=1e-9)
    assert kernel_distance(30.0 * fake, 30.0 * real, subset_size=100) > 1e4 * kid_at_reference_scale(1.0) > 0
    raises_one_line(lambda: kernel_distance(fake, real, subset_size=100, gamma=-1.0), "gamma=-1.0")

# --- precision / recall ------------------------------------------------------------------------------------------


def _brute_force_precision_recall(fake, real, k):
    def radii(points):  # distance to the k-th nearest other point
        return np.sort(np.linalg.norm(points[:, None] - points[None], axis=2), axis=1)[:, k]

    def inside_any(queries, centres):
        distances = np.linalg.norm(queries[:, None] - centres[None], axis=2)
        return (distances <= radii(centres)[None]).any(axis=1).mean()

    return inside_any(fake, real), inside_any(real, fake)


def test_precision_and_recall_follow_their_definition():
    fake, real = _cloud(120, 5, shift=0.4, seed=5), _cloud(90, 5, seed=6)
    measured = precision_recall(fake, real)
    precision, recall = _brute_force_precision_recall(fake.numpy(), real.numpy(), k=3)
    # torch-fidelity averages the indicators in float32
    assert measured == {"precision": pytest.approx(precision, abs=1e-6), "recall": pytest.approx(recall, abs=1e-6)}


def test_precision_and_recall_are_1_for_identical_clouds_and_fall_for_a_shifted_one():
    real = _cloud(500)
    assert precision_recall(real, real) == {"precision": 1.0, "recall": 1.0}
    same = precision_recall(_cloud(500, seed=1), real)
    shifted = precision_recall(_cloud(500, shift=1.5, seed=1), real)
    assert min(same.values()) > 0.6  # two draws of one Gaussian in 8-d
    assert max(shifted.values()) < same["precision"] / 3
    collapsed = precision_recall(real[:1].repeat(500, 1), real)
    assert collapsed == {"precision": 1.0, "recall": pytest.approx(1 / 500)}  # its radius 0 holds only that point


# --- density / coverage ------------------------------------------------------------------------------------------


def test_density_and_coverage_of_a_hand_computed_example():
    # real 0, 1, 3, 7 with k = 1: radii 1, 1, 2, 4, balls [-1, 1], [0, 2], [1, 5], [3, 11]
    real = np.array([[0.0], [1.0], [3.0], [7.0]])
    fake = np.array([[0.5], [2.0], [12.0]])  # in 2, 2 and 0 balls; balls of 0, 1, 3 hit, that of 7 not
    assert density_coverage(fake, real, k=1) == {"density": pytest.approx(4 / 3), "coverage": pytest.approx(3 / 4)}


def test_density_and_coverage_follow_their_definition():
    fake, real = _cloud(150, 5, shift=0.3, seed=7), _cloud(100, 5, seed=8)
    f, r = fake.numpy(), real.numpy()
    radii = np.sort(np.linalg.norm(r[:, None] - r[None], axis=2), axis=1)[:, 5]
    inside = np.linalg.norm(f[:, None] - r[None], axis=2) <= radii[None]
    assert density_coverage(fake, real) == {"density": pytest.approx(inside.sum() / (5 * 150), abs=1e-12),
                                            "coverage": pytest.approx(inside.any(axis=0).mean(), abs=1e-12)}


def test_density_and_coverage_of_identical_shifted_and_collapsed_clouds():
    real = _cloud(500)
    # each real point lies in its own ball and in those of the k points it is a k-NN of: sum = N (k + 1)
    assert density_coverage(real, real) == {"density": pytest.approx(6 / 5), "coverage": 1.0}
    same = density_coverage(_cloud(1000, seed=1), real)
    shifted = density_coverage(_cloud(1000, shift=1.5, seed=1), real)
    assert 0.7 < same["density"] < 1.3 and same["coverage"] > 0.9
    assert shifted["density"] < same["density"] / 3 and shifted["coverage"] < same["coverage"] / 2
    collapsed = density_coverage(real[:1].repeat(1000, 1), real)
    assert collapsed["coverage"] < 0.02
