"""Geometry Score on point clouds whose 1-d homology is known (circle: one hole; disc: none)."""

import matplotlib.image
import numpy as np
import pytest

from stiefel_gan.metrics import geometry_score, plot_rlt, relative_living_times
from stiefel_gan.metrics.geometry import (
    GAMMA_PER_5000_POINTS,
    _relative_living_times_of_barcode,
)

# gamma 1/8 lets the witness complex of 400 points and 32 landmarks fill in the gaps that
# sparse witnesses leave, so that the topology of the shape itself dominates the curve
SHAPE_OPTIONS = {"L_0": 32, "gamma": 1 / 8, "n": 30}


def _noisy_circle(num_points, seed):
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, num_points)
    return np.stack([np.cos(angle), np.sin(angle)], axis=1) + 0.05 * rng.normal(size=(num_points, 2))


def _disc(num_points, seed):
    rng = np.random.default_rng(seed)
    angle, radius = rng.uniform(0, 2 * np.pi, num_points), np.sqrt(rng.uniform(0, 1, num_points))
    return radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)


@pytest.fixture(scope="module")
def curves():
    return {
        "circle": relative_living_times(_noisy_circle(400, 0), seed=0, **SHAPE_OPTIONS),
        "circle, new sample": relative_living_times(_noisy_circle(400, 1), seed=1, **SHAPE_OPTIONS),
        "disc": relative_living_times(_disc(400, 2), seed=2, **SHAPE_OPTIONS),
        "disc, new sample": relative_living_times(_disc(400, 3), seed=3, **SHAPE_OPTIONS),
    }


def test_rlt_is_a_distribution_over_hole_counts(curves):
    for rlt in curves.values():
        assert rlt.shape == (100,)
        assert np.all(rlt >= 0)
        assert rlt.sum() == pytest.approx(1.0, abs=1e-9)


def test_circle_has_one_hole_and_disc_none(curves):
    assert np.argmax(curves["circle"]) == 1 and curves["circle"][1] > 0.8
    assert np.argmax(curves["disc"]) == 0


def test_score_separates_shapes_but_not_samples(curves):
    same_circle = geometry_score(curves["circle"], curves["circle, new sample"])
    same_disc = geometry_score(curves["disc"], curves["disc, new sample"])
    different = geometry_score(curves["circle"], curves["disc"])
    assert same_circle < 0.01 and same_disc < 0.01
    assert different > 0.5
    assert geometry_score(curves["disc"], curves["circle"]) == different
    assert geometry_score(curves["disc"], curves["disc"]) == 0.0


def test_landmark_draws_are_seeded_and_gamma_defaults_to_the_papers():
    points = _noisy_circle(300, 4)
    default = relative_living_times(points, n=3, seed=5)
    np.testing.assert_array_equal(default, relative_living_times(points, n=3, seed=5))
    explicit = relative_living_times(points, n=3, seed=5, gamma=GAMMA_PER_5000_POINTS * 300 / 5000)
    np.testing.assert_array_equal(default, explicit)
    assert not np.array_equal(default, relative_living_times(points, n=3, seed=6))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_barcode_rlt_matches_dense_grid_count(seed):
    # RLT(i) = |{alpha in [0, alpha_max]: #{[b, d) containing alpha} = i}| / alpha_max
    rng = np.random.default_rng(seed)
    births = rng.uniform(0, 1, 6)
    deaths = births + rng.uniform(0, 1, 6)
    deaths[0] = np.inf
    intervals, alpha_max = np.stack([births, deaths], axis=1), 1.3
    grid = (np.arange(200_000) + 0.5) / 200_000 * alpha_max
    alive = ((intervals[:, :1] <= grid) & (grid < np.minimum(intervals[:, 1:], alpha_max))).sum(axis=0)
    expected = np.bincount(alive, minlength=8)[:8] / grid.size
    np.testing.assert_allclose(_relative_living_times_of_barcode(intervals, alpha_max, 8), expected, atol=1e-4)
    # time with i_max holes or more is left out
    truncated = _relative_living_times_of_barcode(intervals, alpha_max, 2)
    np.testing.assert_allclose(truncated, expected[:2], atol=1e-4)


def test_empty_barcode_is_all_time_without_holes():
    np.testing.assert_array_equal(_relative_living_times_of_barcode(np.zeros((0, 2)), 0.5, 3), [1.0, 0.0, 0.0])


def test_plot_rlt_writes_a_png(tmp_path, curves):
    path = tmp_path / "rlt.png"
    plot_rlt({"circle": curves["circle"], "disc": curves["disc"]}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (400, 600)
    # lines were drawn: more than the white background and black axes
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 10


@pytest.mark.parametrize("i_max", [1, 3, 100])
def test_plot_rlt_shows_a_curve_whose_last_hole_count_is_visible(tmp_path, i_max):
    # issue 8: with time at i_max - 1 holes (99 of i_max = 100, as a D of width 4 produced) the x axis
    # got one point more than the curve ("x and y must have same first dimension")
    rlt = np.zeros(i_max)
    rlt[0], rlt[-1] = 0.5, 0.5
    path = tmp_path / "rlt.png"
    plot_rlt({"generated": rlt, "real": np.eye(i_max)[0]}, path)
    assert matplotlib.image.imread(path).shape[:2] == (400, 600)


def test_bad_inputs_raise_value_error(tmp_path):
    points = _noisy_circle(80, 0)
    with pytest.raises(ValueError, match="L_0"):
        relative_living_times(points, L_0=81)
    with pytest.raises(ValueError, match="gamma"):
        relative_living_times(points, gamma=-1.0)
    with pytest.raises(ValueError, match="n="):
        relative_living_times(points, n=0)
    with pytest.raises(ValueError, match="X has shape"):
        relative_living_times(points[:, 0])
    with pytest.raises(ValueError, match="shapes"):
        geometry_score(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="curves"):
        plot_rlt({"a": np.zeros(3), "b": np.zeros(4)}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        plot_rlt({}, tmp_path / "x.png")
