"""Property tests for the Stiefel layers, run over every spectrum kind, layer type, factorization,
shape, dtype and several seeds (geoopt-style: the same checks over every variant)."""

import copy
import itertools

import numpy as np
import pytest
import torch
import torchvision
from geoopt import ManifoldParameter
from geoopt.manifolds import EuclideanStiefel
from helpers import orthonormal, raises_one_line
from torch import nn

from stiefel_gan.manifold import (
    CayleyStiefel,
    FixedCurve,
    LearnableCurve,
    LearnableGrid,
    QRStiefel,
    StiefelConv2d,
    StiefelLinear,
    build_spectrum,
    curve_values,
    load_optimizer_state,
    make_optimizer,
    manifold_drift,
    parameter_groups,
    stiefel_layers,
    stiefelize,
)

SPECTRA = {
    "fixed": lambda: FixedCurve(tau=0.5, eps=0.2, sigma=1.5),
    "curve": lambda: LearnableCurve(tau=2.0, eps=0.1, learn=("tau", "eps", "sigma")),
    "grid": lambda: LearnableGrid(init=FixedCurve(tau=0.7, eps=0.05)),
    "grid_sorted_max": lambda: LearnableGrid(init=FixedCurve(tau=1.3), sort=True, max_value=2.0),
}
# (kind, out, in): wide (out < in), tall (out > in) and square reshaped weights
SHAPES = [("linear", 6, 11), ("linear", 13, 4), ("linear", 7, 7), ("conv", 5, 3), ("conv", 12, 1)]
FACTORIZATIONS = ["diag", "svd"]
DTYPES = [torch.float64, torch.float32]
SEEDS = [0, 1]

CASES = list(itertools.product(SPECTRA, SHAPES, FACTORIZATIONS))


def make_layer(spectrum, shape, factorization, dtype, retraction="qr"):
    kind, out, inp = shape
    options = {"spectrum": SPECTRA[spectrum](), "factorization": factorization, "dtype": dtype,
               "retraction": retraction}
    if kind == "linear":
        return StiefelLinear(inp, out, **options)
    return StiefelConv2d(inp, out, kernel_size=3, stride=2, padding=1, **options)


def layer_input(layer, dtype, batch=4):
    if isinstance(layer, StiefelLinear):
        return torch.randn(batch, layer.in_features, dtype=dtype)
    return torch.randn(batch, layer.in_channels, 6, 6, dtype=dtype)


def tolerance(dtype):
    return 1e-10 if dtype == torch.float64 else 2e-5


def reshaped_singular_values(layer):
    return torch.linalg.svdvals(layer.weight.detach().reshape(layer.weight.shape[0], -1))


def train_steps(layer, optimizer_name, steps, dtype, lr=1e-2):
    optimizer = make_optimizer(layer, optimizer_name, lr=lr)
    target_gen = torch.Generator().manual_seed(123)
    x = layer_input(layer, dtype)
    target = torch.randn(layer(x).shape, generator=target_gen, dtype=dtype)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (layer(x) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
    return optimizer


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("spectrum,shape,factorization", CASES)
def test_singular_values_are_lambda(spectrum, shape, factorization, dtype, seed):
    torch.manual_seed(seed)
    layer = make_layer(spectrum, shape, factorization, dtype)
    expected = torch.sort(layer.singular_values().abs(), descending=True).values
    torch.testing.assert_close(reshaped_singular_values(layer), expected, rtol=tolerance(dtype) * 10, atol=tolerance(dtype) * 10)
    assert layer.weight.shape == layer.weight_shape


@pytest.mark.parametrize("optimizer_name", ["radam", "rsgd"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spectrum,shape,factorization", CASES)
def test_factors_stay_on_manifold_and_spectrum_stays_exact(spectrum, shape, factorization, dtype, optimizer_name):
    torch.manual_seed(0)
    layer = make_layer(spectrum, shape, factorization, dtype)
    assert layer.parametrization.drift() < tolerance(dtype)
    before = layer.weight.detach().clone()
    train_steps(layer, optimizer_name, steps=15, dtype=dtype)
    assert not torch.allclose(layer.weight.detach(), before), "the optimizer did not move the weight"
    assert layer.parametrization.drift() < tolerance(dtype)
    expected = torch.sort(layer.singular_values().abs(), descending=True).values
    torch.testing.assert_close(reshaped_singular_values(layer), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spectrum,shape,factorization", CASES)
def test_gradients_reach_factors_and_spectrum(spectrum, shape, factorization):
    torch.manual_seed(0)
    layer = make_layer(spectrum, shape, factorization, torch.float64)
    layer(layer_input(layer, torch.float64)).sin().sum().backward()
    groups = parameter_groups(layer)
    expected_spectrum_params = 0 if spectrum == "fixed" else (3 if spectrum == "curve" else 1)
    assert len(groups["spectrum"]) == expected_spectrum_params
    assert len(groups["stiefel"]) == (1 if factorization == "diag" else 2)
    for p in groups["stiefel"] + groups["spectrum"]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_curve_matches_its_definition():
    k, tau, eps, sigma = 9, 0.6, 0.15, 1.7
    t = np.arange(k) / (k - 1)
    expected = sigma * (eps + (1 - eps) * (1 - t) ** tau)
    np.testing.assert_allclose(curve_values(k, tau, eps, sigma).double().numpy(), expected, rtol=1e-6)
    assert curve_values(1, tau, eps, sigma).tolist() == pytest.approx([sigma])


@pytest.mark.parametrize("tau,sign", [(0.4, -1), (3.0, 1)])
def test_tau_sets_concave_or_convex(tau, sign):
    values = FixedCurve(tau=tau, eps=0.1).build(20)().double()
    second_difference = values[2:] - 2 * values[1:-1] + values[:-2]
    assert (torch.sign(second_difference) == sign).all()
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1)


def test_learnable_curve_starts_at_fixed_curve_and_sigma_is_frozen_by_default():
    learnable, fixed = LearnableCurve(tau=0.3, eps=0.25, sigma=1.2).build(7), FixedCurve(0.3, 0.25, 1.2).build(7)
    torch.testing.assert_close(learnable(), fixed(), rtol=1e-5, atol=1e-6)
    assert {name for name, _ in learnable.named_parameters()} == {"raw_tau", "raw_eps"}


def test_grid_sort_and_max_value():
    grid = LearnableGrid(init=[0.5, 2.0, 1.0], sort=True, max_value=3.0).build(3)
    torch.testing.assert_close(grid().detach(), torch.tensor([3.0, 1.5, 0.75]))
    unsorted = LearnableGrid(init=[0.5, 2.0, 1.0]).build(3)
    torch.testing.assert_close(unsorted().detach(), torch.tensor([0.5, 2.0, 1.0]))


def test_grid_from_curve_starts_on_the_curve():
    grid = LearnableGrid(init=FixedCurve(tau=2.0, eps=0.3)).build(6)
    torch.testing.assert_close(grid().detach(), curve_values(6, 2.0, 0.3, 1.0), rtol=1e-5, atol=1e-6)


def test_one_spectrum_object_serves_many_layers():
    spectrum = LearnableGrid()
    a, b = StiefelLinear(8, 3, spectrum=spectrum), StiefelLinear(8, 5, spectrum=spectrum)
    assert a.singular_values().numel() == 3 and b.singular_values().numel() == 5
    assert a.spectrum.raw is not b.spectrum.raw


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n,p", [(10, 4), (6, 6), (9, 1)])
def test_cayley_retraction_equals_dense_formula(n, p, seed):
    gen = torch.Generator().manual_seed(seed)
    manifold = CayleyStiefel()
    x = orthonormal(n, p, generator=gen)
    xi = manifold.proju(x, torch.randn(n, p, generator=gen, dtype=torch.float64))
    projector = torch.eye(n, dtype=torch.float64) - 0.5 * x @ x.T
    skew = projector @ xi @ x.T - x @ xi.T @ projector
    identity = torch.eye(n, dtype=torch.float64)
    dense = torch.linalg.solve(identity - 0.5 * skew, (identity + 0.5 * skew) @ x)
    torch.testing.assert_close(manifold.retr(x, xi), dense, rtol=1e-10, atol=1e-10)
    assert manifold_drift(manifold.retr(x, xi)) < 1e-12
    # first order: R(t xi) = x + t xi + O(t^2)
    t = 1e-5
    torch.testing.assert_close((manifold.retr(x, t * xi) - x) / t, xi, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", [1e-3, 0.3, 3.0])  # Cholesky QR, Cholesky QR, Householder fallback
def test_qr_retraction_equals_householder_on_both_paths(seed, scale):
    gen = torch.Generator().manual_seed(seed)
    x = orthonormal(40, 7, generator=gen)
    xi = QRStiefel().proju(x, torch.randn(40, 7, generator=gen, dtype=torch.float64))
    xi = xi * scale / xi.norm()
    torch.testing.assert_close(QRStiefel().retr(x, xi), EuclideanStiefel().retr(x, xi), rtol=1e-12, atol=1e-12)


def test_qr_retraction_is_geoopts_euclidean_stiefel():
    gen = torch.Generator().manual_seed(0)
    x = orthonormal(12, 5, generator=gen)
    u = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(QRStiefel().retr(x, u), EuclideanStiefel().retr(x, u))


@pytest.mark.parametrize("retraction", ["qr", "cayley"])
@pytest.mark.parametrize("optimizer_name", ["radam", "rsgd"])
def test_drift_stays_below_1e5_after_10000_float32_steps(optimizer_name, retraction):
    torch.manual_seed(0)
    layer = StiefelLinear(48, 16, spectrum=LearnableCurve(), retraction=retraction)
    kwargs = {"momentum": 0.9} if optimizer_name == "rsgd" else {}
    optimizer = make_optimizer(layer, optimizer_name, lr=1e-2, **kwargs)
    x, target = torch.randn(32, 48), torch.randn(32, 16)
    for _ in range(10_000):
        optimizer.zero_grad()
        nn.functional.mse_loss(layer(x), target).backward()
        optimizer.step()
    assert layer.parametrization.drift() < 1e-5


def test_stiefelize_resnet18_keeps_output_shape_and_replaces_every_layer():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    expected_shape = model(x).shape
    n_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    stiefelize(model, spectrum=FixedCurve(tau=0.5))
    assert model(x).shape == expected_shape
    assert len(list(stiefel_layers(model))) == n_layers
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in model.modules())
    assert model.conv1.stride == (2, 2) and model.conv1.padding == (3, 3) and model.conv1.bias is None
    assert model.fc.bias is not None


@pytest.mark.parametrize("factorization", ["diag", "svd"])
def test_stiefelize_starts_from_the_weight_and_keeps_bias(factorization):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 10))
    old_weight, old_bias = model[3].weight.detach().double().clone(), model[3].bias.detach().clone()
    stiefelize(model, spectrum=FixedCurve(tau=1.0, eps=0.1), include=["3"], factorization=factorization)
    assert isinstance(model[0], nn.Conv2d) and isinstance(model[3], StiefelLinear)
    u, _, vh = torch.linalg.svd(old_weight, full_matrices=False)
    lam = torch.diag(curve_values(10, 1.0, 0.1, 1.0).double())
    # svd keeps the singular directions; diag takes the polar factor U V^T as X (W = diag(lambda) X)
    expected = u @ lam @ vh if factorization == "svd" else lam @ u @ vh
    torch.testing.assert_close(model[3].weight.detach().double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model[3].bias.detach(), old_bias)


@pytest.mark.parametrize("spectrum,shape,factorization", CASES[::3])
def test_state_dict_round_trip_gives_identical_outputs(spectrum, shape, factorization):
    torch.manual_seed(0)
    layer = make_layer(spectrum, shape, factorization, torch.float32)
    train_steps(layer, "radam", steps=3, dtype=torch.float32)
    torch.manual_seed(99)
    fresh = make_layer(spectrum, shape, factorization, torch.float32)
    fresh.load_state_dict(layer.state_dict())
    x = layer_input(layer, torch.float32)
    assert torch.equal(fresh(x), layer(x))


@pytest.mark.parametrize("optimizer_name", ["radam", "rsgd"])
def test_optimizer_state_round_trip_continues_identically(optimizer_name):
    kwargs = {"momentum": 0.9} if optimizer_name == "rsgd" else {}

    def build():
        torch.manual_seed(0)
        model = nn.Sequential(StiefelConv2d(2, 4, 3, spectrum=LearnableGrid(sort=True)), nn.Flatten(),
                              StiefelLinear(4 * 4 * 4, 3, spectrum=LearnableCurve()))
        return model, make_optimizer(model, optimizer_name, lr=1e-2, **kwargs)

    x, target = torch.randn(5, 2, 6, 6), torch.randn(5, 3)

    def run(model, optimizer, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), target).backward()
            optimizer.step()

    straight, straight_opt = build()
    run(straight, straight_opt, 10)

    first, first_opt = build()
    run(first, first_opt, 4)
    saved = copy.deepcopy({"model": first.state_dict(), "optimizer": first_opt.state_dict()})
    resumed, resumed_opt = build()
    resumed.load_state_dict(saved["model"])
    load_optimizer_state(resumed_opt, saved["optimizer"])
    run(resumed, resumed_opt, 6)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert isinstance(resumed[0].parametrization.factor, ManifoldParameter)


def test_make_optimizer_groups_and_learning_rates():
    model = nn.Sequential(StiefelLinear(6, 4, spectrum=LearnableCurve()), nn.Linear(4, 2))
    optimizer = make_optimizer(model, "rsgd", lr=0.1, group_lr={"stiefel": 0.01, "spectrum": 0.5}, momentum=0.9)
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert by_name["stiefel"]["lr"] == 0.01 and by_name["spectrum"]["lr"] == 0.5 and by_name["other"]["lr"] == 0.1
    assert len(by_name["other"]["params"]) == 3  # StiefelLinear bias, Linear weight and bias
    assert all(g["momentum"] == 0.9 for g in optimizer.param_groups)
    adam = make_optimizer(nn.Linear(3, 3), "adam", lr=1e-3, betas=(0.5, 0.9))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["betas"] == (0.5, 0.9)


def test_build_spectrum_by_name():
    assert isinstance(build_spectrum("fixed", tau=2.0), FixedCurve)
    grid = build_spectrum("grid", tau=2.0, eps=0.2, sort=True, max_value=1.0)
    assert isinstance(grid, LearnableGrid) and grid.sort and grid.max_value == 1.0


def test_extra_repr_shows_shapes_spectrum_and_storage():
    text = repr(StiefelConv2d(3, 8, 3, spectrum=LearnableCurve(tau=0.5)))
    assert "8x27" in text and "stored transposed" in text and "LearnableCurve" in text and "tau=0.5" in text
    assert "stored transposed" not in repr(StiefelLinear(3, 8))


BAD_INPUTS = [
    (lambda: FixedCurve(tau=0.0), "tau=0.0"),
    (lambda: FixedCurve(tau=-1.0), "tau=-1.0"),
    (lambda: FixedCurve(eps=1.5), "eps=1.5"),
    (lambda: LearnableCurve(eps=1.0), "eps=1.0"),  # a fixed curve may be flat (eps = 1), a learned one not
    (lambda: LearnableCurve(eps=0.0), "eps=0.0"),
    (lambda: FixedCurve(sigma=0.0), "sigma=0.0"),
    (lambda: LearnableCurve(learn=("shape",)), "learn=('shape',)"),
    (lambda: StiefelLinear(4, 2, spectrum=LearnableGrid(init=[1.0, 0.5, 0.2])), "grid of 3 values"),
    (lambda: make_optimizer(nn.Linear(2, 2), "lbfgs"), "'lbfgs'"),
    (lambda: make_optimizer(StiefelLinear(2, 2), "adam"), "'adam'"),
    (lambda: StiefelLinear(4, 2, factorization="qr"), "factorization='qr'"),
    (lambda: StiefelLinear(4, 2, retraction="exp"), "retraction='exp'"),
    (lambda: StiefelLinear(0, 2), "k=0"),
    (lambda: StiefelLinear(4, 2, dtype=torch.int64), "dtype=torch.int64"),
    (lambda: StiefelConv2d(4, 4, 3, groups=3), "groups=3"),
    (lambda: build_spectrum("spline"), "'spline'"),
]


@pytest.mark.parametrize("make,named", BAD_INPUTS, ids=[n for _, n in BAD_INPUTS])
def test_bad_input_is_a_one_line_value_error_naming_the_value(make, named):
    raises_one_line(make, named, "allowed")
