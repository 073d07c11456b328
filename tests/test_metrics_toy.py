"""Mode metrics on 2-D Gaussian mixtures against exact cases and a per-sample reference loop."""

import math

import numpy as np
import pytest
import torch

from stiefel_gan.metrics import mode_metrics

RING = 2.0 * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], axis=1)
STD = 0.02


def _reference(samples, centers, std, min_samples_per_mode):
    """The definitions, one sample at a time."""
    counts = np.zeros(len(centers), dtype=int)
    for point in samples:
        distances = [math.dist(point, center) for center in centers]
        nearest = int(np.argmin(distances))
        if distances[nearest] <= 3 * std:
            counts[nearest] += 1
    total = counts.sum()
    kl = sum(c / total * math.log(len(centers) * c / total) for c in counts if c > 0) if total else math.nan
    return {
        "modes_covered": int(sum(c >= min_samples_per_mode for c in counts)),
        "n_modes": len(centers),
        "high_quality_fraction": total / len(samples),
        "mode_kl": kl,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_samples_of_the_target_cover_every_mode_with_rayleigh_quality(seed):
    rng = np.random.default_rng(seed)
    samples = RING[rng.integers(0, 8, 4000)] + STD * rng.normal(size=(4000, 2))
    metrics = mode_metrics(samples, RING, STD)
    assert metrics["modes_covered"] == 8 and metrics["n_modes"] == 8
    # P(|z| <= 3) for a 2-D standard Gaussian is 1 - exp(-9/2); 5 binomial standard errors
    expected = 1 - math.exp(-4.5)
    assert abs(metrics["high_quality_fraction"] - expected) < 5 * math.sqrt(expected * (1 - expected) / 4000)
    assert metrics["mode_kl"] < 0.01


def test_collapse_onto_two_modes_gives_log_four():
    samples = np.repeat(RING[[2, 5]], 50, axis=0)
    metrics = mode_metrics(torch.from_numpy(samples), RING, STD)
    assert metrics["modes_covered"] == 2
    assert metrics["high_quality_fraction"] == 1.0
    assert metrics["mode_kl"] == pytest.approx(math.log(4), rel=1e-12)


def test_threshold_counts_only_modes_with_enough_high_quality_samples():
    samples = np.concatenate([np.repeat(RING[:1], 3, axis=0), np.repeat(RING[1:2], 4, axis=0)])
    assert mode_metrics(samples, RING, STD, min_samples_per_mode=3)["modes_covered"] == 2
    assert mode_metrics(samples, RING, STD, min_samples_per_mode=4)["modes_covered"] == 1


def test_no_high_quality_sample_leaves_kl_undefined():
    metrics = mode_metrics(np.zeros((10, 2)), RING, STD)
    assert metrics["modes_covered"] == 0 and metrics["high_quality_fraction"] == 0.0
    assert math.isnan(metrics["mode_kl"])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("min_samples_per_mode", [1, 5])
def test_matches_per_sample_reference(seed, min_samples_per_mode):
    # a generator that misses modes, blurs others and puts mass in between
    rng = np.random.default_rng(seed)
    samples = RING[rng.integers(0, 5, 300)] + rng.uniform(0.01, 0.1) * rng.normal(size=(300, 2))
    expected = _reference(samples, RING, STD, min_samples_per_mode)
    metrics = mode_metrics(samples, RING, STD, min_samples_per_mode)
    assert metrics.keys() == expected.keys()
    for key in expected:
        assert metrics[key] == pytest.approx(expected[key], rel=1e-12)


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="dimension"):
        mode_metrics(np.zeros((4, 3)), RING, STD)
    with pytest.raises(ValueError, match="std"):
        mode_metrics(np.zeros((4, 2)), RING, 0.0)
    with pytest.raises(ValueError, match="min_samples_per_mode"):
        mode_metrics(np.zeros((4, 2)), RING, STD, min_samples_per_mode=0)
    with pytest.raises(ValueError, match="samples"):
        mode_metrics(np.zeros(4), RING, STD)
    with pytest.raises(ValueError, match="NaN"):
        mode_metrics(np.full((4, 2), np.nan), RING, STD)
