"""Fréchet distance and feature statistics against closed forms and a dense eigen-decomposition."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from stiefel_gan.metrics import feature_statistics, frechet_distance


def _random_spd(rng, dim, rank=None):
    factor = rng.normal(size=(dim, rank or dim))
    return factor @ factor.T / dim


def _reference_distance(mu1, cov1, mu2, cov2):
    """Tr (C1 C2)^{1/2} = Tr (C1^{1/2} C2 C1^{1/2})^{1/2}, from symmetric eigendecompositions only."""
    values, vectors = np.linalg.eigh(cov1)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    inner = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_root = np.sum(np.sqrt(np.clip(inner, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * trace_root)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diagonal_covariances_match_closed_form(seed):
    # commuting covariances: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_covariances_match_symmetric_eigen_reference(seed):
    rng = np.random.default_rng(seed)
    cov1, cov2 = _random_spd(rng, 12), _random_spd(rng, 12)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(_reference_distance(mu1, cov1, mu2, cov2), rel=1e-8)
    assert frechet_distance(mu1, cov1, mu1, cov1) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_singular_covariances_are_regularized_silently(seed):
    # rank 3 in dimension 10, as features from fewer samples than dimensions
    rng = np.random.default_rng(seed)
    cov1, cov2 = _random_spd(rng, 10, rank=3), _random_spd(rng, 10, rank=3)
    mu = np.zeros(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
        distance = frechet_distance(mu, cov1, mu, cov2)
    assert np.isfinite(distance)
    assert distance == pytest.approx(_reference_distance(mu, cov1, mu, cov2), abs=1e-3)


def test_distance_is_symmetric_and_grows_with_mean_shift():
    rng = np.random.default_rng(3)
    cov1, cov2 = _random_spd(rng, 5), _random_spd(rng, 5)
    mu = rng.normal(size=5)
    assert frechet_distance(mu, cov1, 0 * mu, cov2) == pytest.approx(frechet_distance(0 * mu, cov2, mu, cov1), rel=1e-9)
    base = frechet_distance(0 * mu, cov1, 0 * mu, cov1)
    assert frechet_distance(mu, cov1, 0 * mu, cov1) - base == pytest.approx(mu @ mu, rel=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_feature_statistics_match_numpy_in_float64(dtype):
    features = torch.randn(50, 7, generator=torch.Generator().manual_seed(0), dtype=dtype)
    mu, cov = feature_statistics(features)
    reference = features.double().numpy()
    assert mu.dtype == np.float64 and cov.dtype == np.float64
    np.testing.assert_allclose(mu, reference.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(reference, rowvar=False), rtol=1e-12)
    assert feature_statistics(features[:, :1])[1].shape == (1, 1)


def test_bad_inputs_raise_value_error():
    eye = np.eye(3)
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), eye, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), eye)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full(3, np.nan), eye, np.zeros(3), eye)
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(3), -eye, np.zeros(3), eye)
    with pytest.raises(ValueError, match="features"):
        feature_statistics(np.zeros((1, 4)))
