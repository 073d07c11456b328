"""fit_curve recovers the (tau, eps) of known curves, in the unsquared and Miyato's squared view."""

import numpy as np
import pytest
import torch

from stiefel_gan.manifold import FixedCurve, StiefelConv2d, curve_values, fit_curve


@pytest.mark.parametrize("tau", [0.25, 0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("eps", [0.02, 0.1, 0.5])
def test_fit_recovers_an_exact_curve(tau, eps):
    values = curve_values(64, tau, eps, 3.0).double().numpy()
    fit = fit_curve(values)
    assert fit.tau == pytest.approx(tau, rel=1e-5) and fit.eps == pytest.approx(eps, abs=1e-6)
    assert fit.sigma == pytest.approx(3.0) and fit.rmse < 1e-7


def test_fit_of_a_stiefel_layers_singular_values_in_any_order_recovers_its_spectrum():
    torch.manual_seed(0)
    layer = StiefelConv2d(16, 24, 3, spectrum=FixedCurve(tau=0.4, eps=0.15, sigma=1.0))
    singular_values = torch.linalg.svdvals(layer.weight.detach().double().flatten(1)).numpy()
    fit = fit_curve(singular_values[np.random.default_rng(0).permutation(24)])
    assert fit.tau == pytest.approx(0.4, rel=1e-4) and fit.eps == pytest.approx(0.15, abs=1e-5)


def test_fit_of_a_noisy_curve_is_close_and_beats_its_neighbours():
    rng = np.random.default_rng(1)
    values = curve_values(200, 2.0, 0.1, 1.0).double().numpy() + rng.normal(0, 0.01, 200)
    fit = fit_curve(values)
    assert fit.tau == pytest.approx(2.0, rel=0.05) and fit.eps == pytest.approx(0.1, abs=0.02)
    y = np.sort(values)[::-1] / np.max(values)

    t = np.linspace(0, 1, 200)

    def residual(tau, eps):
        return np.sqrt(np.mean((y - eps - (1 - eps) * (1 - t) ** tau) ** 2))

    assert fit.rmse == pytest.approx(residual(fit.tau, fit.eps), rel=1e-9)
    for tau, eps in ((fit.tau * 1.02, fit.eps), (fit.tau / 1.02, fit.eps), (fit.tau, fit.eps + 0.005)):
        assert residual(tau, eps) > fit.rmse


def test_squared_view_of_the_fit_is_the_squared_curve():
    # Miyato's Fig. 3 plots (s_i / s_0)^2: a curve with tau = 0.5 is linear in that view
    fit = fit_curve(curve_values(33, 0.5, 0.0, 1.0).double().numpy())
    t = np.linspace(0, 1, 33)
    squared = (fit.eps + (1 - fit.eps) * (1 - t) ** fit.tau) ** 2
    np.testing.assert_allclose(squared, 1 - t, atol=1e-5)


@pytest.mark.parametrize("values", [[1.0, 0.5], [0.0, 0.0, 0.0], [1.0, np.nan, 0.1]])
def test_fit_needs_three_finite_values_with_a_positive_largest(values):
    with pytest.raises(ValueError, match="k >= 3 finite singular values"):
        fit_curve(values)
