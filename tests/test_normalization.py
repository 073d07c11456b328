"""SN baselines against torch's spectral_norm, dense operator matrices and hand-computed values."""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import orthonormal, raises_one_line
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

from stiefel_gan.spectral import (
    FairSpectralNorm,
    SpectralNorm,
    apply_normalization,
    conv_operator_norm,
    orthogonal_penalty,
    reshape_singular_values,
    spectral_norm_estimates,
)

INPUT_SHAPE = (3, 8, 8)


class SmallCNN(nn.Module):
    """Convs at two resolutions (one strided), a BatchNorm and a dense head: ``3 x 8 x 8 -> 1``."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(4, 6, 4, stride=2, padding=1),
            nn.BatchNorm2d(6),
            nn.LeakyReLU(0.1),
            nn.Conv2d(6, 8, 3, padding=1),
        )
        self.head = nn.Linear(8 * 4 * 4, 1)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


CONV_INPUT_SIZES = {"features.0": (8, 8), "features.2": (8, 8), "features.5": (4, 4)}
LAYER_NAMES = set(CONV_INPUT_SIZES) | {"head"}


def dense_top_singular_value(weight, input_size, stride, padding):
    """Largest singular value of the explicit matrix of ``x -> conv2d(x, weight)``, built from basis inputs."""
    c_in = weight.shape[1]
    n_inputs = c_in * input_size[0] * input_size[1]
    basis = torch.eye(n_inputs, dtype=weight.dtype).reshape(n_inputs, c_in, *input_size)
    matrix = F.conv2d(basis, weight, stride=stride, padding=padding).reshape(n_inputs, -1).T
    return torch.linalg.svdvals(matrix)[0]


def constraint_of(layer):
    return layer.parametrizations.weight[0]


# ---------------------------------------------------------------- SpectralNorm == torch's spectral_norm

LAYER_FACTORIES = {
    "linear_wide": (lambda: nn.Linear(6, 4), (5, 6)),
    "linear_tall": (lambda: nn.Linear(3, 7), (5, 3)),
    "conv": (lambda: nn.Conv2d(3, 5, 3, padding=1), (2, 3, 6, 6)),
    "conv_strided_nonsquare": (lambda: nn.Conv2d(4, 2, (3, 2), stride=2), (2, 4, 7, 6)),
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("factory, input_shape", LAYER_FACTORIES.values(), ids=LAYER_FACTORIES.keys())
def test_spectral_norm_equals_torch_over_training_steps(factory, input_shape, seed):
    torch.manual_seed(seed)
    layer = factory()
    reference, ours = torch_spectral_norm(copy.deepcopy(layer)), copy.deepcopy(layer)
    parametrize.register_parametrization(ours, "weight", SpectralNorm(ours.weight))
    constraint_of(ours).u.copy_(constraint_of(reference)._u)
    constraint_of(ours).v.copy_(constraint_of(reference)._v)
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.05) for m in (reference, ours)]

    for step in range(5):
        real, fake = torch.randn(input_shape), torch.randn(input_shape)
        outputs = []
        for model, optimizer in zip((reference, ours), optimizers):
            optimizer.zero_grad()
            # two forwards into one backward, as a discriminator step D(real), D(fake)
            out_real, out_fake = model(real), model(fake)
            (out_real.square().mean() - out_fake.mean()).backward()
            optimizer.step()
            outputs.append((out_real, out_fake))
        for ref_out, our_out in zip(*outputs):
            torch.testing.assert_close(our_out, ref_out, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(
            ours.parametrizations.weight.original, reference.parametrizations.weight.original, rtol=1e-6, atol=1e-6
        )
        torch.testing.assert_close(constraint_of(ours).u, constraint_of(reference)._u, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(constraint_of(ours).v, constraint_of(reference)._v, rtol=1e-6, atol=1e-6)

    ours.eval()
    reference.eval()
    u_before = constraint_of(ours).u.clone()
    x = torch.randn(input_shape)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.weight, reference.weight, rtol=1e-6, atol=1e-6)
    assert torch.equal(constraint_of(ours).u, u_before)  # eval mode: no power iteration


def test_spectral_norm_registration_draws_and_iterates_like_torch():
    # same seed -> same Gaussian u, v and the same 15 (+1 at registration) iterations, bit for bit
    layer = nn.Conv2d(3, 4, 3)
    reference, ours = copy.deepcopy(layer), copy.deepcopy(layer)
    torch.manual_seed(7)
    torch_spectral_norm(reference)
    torch.manual_seed(7)
    parametrize.register_parametrization(ours, "weight", SpectralNorm(ours.weight))
    assert torch.equal(constraint_of(ours).u, constraint_of(reference)._u)
    assert torch.equal(constraint_of(ours).v, constraint_of(reference)._v)
    assert torch.equal(ours.weight, reference.weight)


def test_weight_assignment_stores_unnormalized_weight_like_torch():
    torch.manual_seed(0)
    reference = torch_spectral_norm(nn.Linear(4, 3))
    ours = nn.Linear(4, 3)
    parametrize.register_parametrization(ours, "weight", SpectralNorm(ours.weight))
    value = torch.randn(3, 4)
    reference.weight = value
    ours.weight = value
    assert torch.equal(ours.parametrizations.weight.original, value)
    assert torch.equal(reference.parametrizations.weight.original, value)


@pytest.mark.parametrize("constraint", ["sn", "fair_sn"])
def test_constraint_gradient_matches_finite_differences(constraint):
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    if constraint == "sn":
        module = SpectralNorm(weight)
    else:
        module = FairSpectralNorm(weight, (5, 5), stride=2, padding=1)
    module.eval()  # fixed buffers: W -> W / sigma(W) is then a smooth function of W alone
    assert torch.autograd.gradcheck(module, (weight.clone().requires_grad_(),), fast_mode=True)


# ---------------------------------------------------------------- FairSpectralNorm


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "c_out, c_in, kernel, input_size, stride, padding",
    [(3, 2, 3, (6, 6), 2, 1), (2, 3, 3, (5, 6), 1, 1), (4, 2, 4, (7, 7), 2, 0)],
)
def test_fair_spectral_norm_converges_to_operator_norm(c_out, c_in, kernel, input_size, stride, padding, seed):
    torch.manual_seed(seed)
    layer = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False).double()
    parametrize.register_parametrization(
        layer, "weight", FairSpectralNorm(layer.weight, input_size, stride=stride, padding=padding)
    )
    kernel_weight = layer.parametrizations.weight.original.detach()
    with torch.no_grad():
        for _ in range(1500):
            layer.weight  # each training-mode read runs one power iteration
    sigma = constraint_of(layer).sigma(kernel_weight)
    dense = dense_top_singular_value(kernel_weight, input_size, stride, padding)
    operator_norm = conv_operator_norm(kernel_weight, input_size, stride, padding, n_iter=3000, tol=1e-8)
    torch.testing.assert_close(sigma, dense, rtol=1e-4, atol=0.0)
    torch.testing.assert_close(operator_norm, dense, rtol=1e-4, atol=0.0)
    layer.eval()
    # the normalized convolution has operator norm 1 (and its reshaped kernel need not)
    normalized = dense_top_singular_value(layer.weight.detach(), input_size, stride, padding)
    torch.testing.assert_close(normalized, torch.ones((), dtype=torch.float64), rtol=1e-4, atol=0.0)


def test_fair_spectral_norm_forward_keeps_u_on_the_unit_sphere_and_eval_freezes_it():
    layer = nn.Conv2d(2, 3, 3, padding=1)
    parametrize.register_parametrization(layer, "weight", FairSpectralNorm(layer.weight, (5, 5), padding=1))
    constraint = constraint_of(layer)
    assert constraint.u.shape == (1, 2, 5, 5)
    layer(torch.randn(1, 2, 5, 5))
    torch.testing.assert_close(torch.linalg.vector_norm(constraint.u), torch.tensor(1.0))
    layer.eval()
    u_before = constraint.u.clone()
    layer(torch.randn(1, 2, 5, 5))
    assert torch.equal(constraint.u, u_before)


# ---------------------------------------------------------------- apply_normalization


@pytest.mark.parametrize("kind", ["none", "sn", "fair_sn"])
def test_apply_normalization_keeps_output_shape_and_selects_every_layer(kind):
    torch.manual_seed(0)
    model = SmallCNN()
    x = torch.randn(5, *INPUT_SHAPE)
    expected_shape = model(x).shape
    assert apply_normalization(model, kind, input_shape=INPUT_SHAPE) is model
    assert model(x).shape == expected_shape
    for name, module in model.named_modules():
        if name not in LAYER_NAMES:
            continue
        if kind == "none":
            assert not parametrize.is_parametrized(module)
        elif kind == "fair_sn" and isinstance(module, nn.Conv2d):
            assert isinstance(constraint_of(module), FairSpectralNorm)
            assert constraint_of(module).geometry.input_size == CONV_INPUT_SIZES[name]
            assert constraint_of(module).geometry.stride == module.stride
        else:
            assert isinstance(constraint_of(module), SpectralNorm)


def test_apply_fair_sn_restores_modes_and_leaves_batchnorm_statistics_alone():
    model = SmallCNN()
    model.train()
    model.features[3].eval()
    modes = {name: module.training for name, module in model.named_modules()}
    statistics = copy.deepcopy(model.features[3].state_dict())
    apply_normalization(model, "fair_sn", input_shape=INPUT_SHAPE)
    assert all(model.get_submodule(name).training == training for name, training in modes.items())
    for key, value in statistics.items():
        assert torch.equal(model.features[3].state_dict()[key], value)


def test_apply_normalization_include_selects_by_name():
    model = apply_normalization(SmallCNN(), "sn", include=["features.2", "head"])
    parametrized = {name for name, module in model.named_modules() if parametrize.is_parametrized(module)}
    assert parametrized == {"features.2", "head"}


def test_spectral_norm_makes_reshaped_top_singular_value_one():
    torch.manual_seed(1)
    model = apply_normalization(SmallCNN(), "sn")
    x = torch.randn(4, *INPUT_SHAPE)
    with torch.no_grad():
        for _ in range(300):
            model(x)
    model.eval()
    for name in LAYER_NAMES:
        layer = model.get_submodule(name)
        top = reshape_singular_values(layer.weight)[0]
        torch.testing.assert_close(top, torch.tensor(1.0), rtol=1e-3, atol=0.0)


def test_spectral_norm_estimates_report_converged_sigmas():
    torch.manual_seed(2)
    model = apply_normalization(SmallCNN().double(), "fair_sn", input_shape=INPUT_SHAPE)
    x = torch.randn(2, *INPUT_SHAPE, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(300):
            model(x)
    estimates = spectral_norm_estimates(model)
    assert set(estimates) == LAYER_NAMES
    for name, estimate in estimates.items():
        layer = model.get_submodule(name)
        original = layer.parametrizations.weight.original
        if isinstance(layer, nn.Conv2d):
            expected = dense_top_singular_value(original.detach(), CONV_INPUT_SIZES[name], layer.stride, layer.padding)
        else:
            expected = reshape_singular_values(original)[0]
        assert estimate == pytest.approx(expected.item(), rel=1e-4)
    u_before = constraint_of(model.head).u.clone()
    spectral_norm_estimates(model)
    assert torch.equal(constraint_of(model.head).u, u_before)  # reading estimates runs no iteration


@pytest.mark.parametrize("kind", ["sn", "fair_sn"])
def test_state_dict_round_trip_keeps_power_iteration_state(kind):
    torch.manual_seed(3)
    trained = apply_normalization(SmallCNN(), kind, input_shape=INPUT_SHAPE)
    x = torch.randn(4, *INPUT_SHAPE)
    for _ in range(3):
        trained(x)
    torch.manual_seed(4)
    restored = apply_normalization(SmallCNN(), kind, input_shape=INPUT_SHAPE)
    state = trained.state_dict()
    assert "head.parametrizations.weight.0.u" in state and "features.0.parametrizations.weight.0.u" in state
    restored.load_state_dict(state)
    for name in LAYER_NAMES:
        trained_constraint = constraint_of(trained.get_submodule(name))
        restored_constraint = constraint_of(restored.get_submodule(name))
        for buffer_name, buffer in trained_constraint.named_buffers():
            assert torch.equal(getattr(restored_constraint, buffer_name), buffer)
    trained.eval()
    restored.eval()
    assert torch.equal(restored(x), trained(x))


# ---------------------------------------------------------------- orthogonal_penalty


def model_with_weights(*weights):
    """A Sequential of float64 layers holding ``weights``: Linear for 2-D ones, Conv2d for 4-D ones."""
    layers = []
    for weight in weights:
        if weight.ndim == 2:
            layer = nn.Linear(weight.shape[1], weight.shape[0]).double()
        else:
            layer = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:])).double()
        with torch.no_grad():
            layer.weight.copy_(weight)
        layers.append(layer)
    return nn.Sequential(*layers)


@pytest.mark.parametrize("seed", [0, 1])
def test_orthogonal_penalty_is_zero_for_orthonormal_weights(seed):
    wide = orthonormal(3, 5, generator=torch.Generator().manual_seed(seed))
    tall = orthonormal(6, 3, generator=torch.Generator().manual_seed(seed))
    conv = orthonormal(4, 2 * 3 * 3, generator=torch.Generator().manual_seed(seed)).reshape(4, 2, 3, 3)
    assert orthogonal_penalty(model_with_weights(wide, tall, conv), beta=10.0).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "weight, expected",
    [
        # W W^T = diag(1, 4): (1 - 1)^2 + (4 - 1)^2 = 9
        (torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), 9.0),
        # tall: W^T W = diag(1, 4) again; the 3 x 3 W W^T would add its zero eigenvalue: 10
        (torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]), 9.0),
        # W W^T = [[2, 1], [1, 1]]: 1^2 + 1^2 + 1^2 + 0^2 = 3
        (torch.tensor([[1.0, 1.0], [0.0, 1.0]]), 3.0),
    ],
)
def test_orthogonal_penalty_hand_computed(weight, expected):
    penalty = orthogonal_penalty(model_with_weights(weight.double()), beta=0.5)
    assert penalty.item() == pytest.approx(0.5 * expected, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orthogonal_penalty_equals_singular_value_formula_and_its_gradient(seed):
    generator = torch.Generator().manual_seed(seed)
    wide = torch.randn(3, 5, dtype=torch.float64, generator=generator)
    tall = torch.randn(6, 2, dtype=torch.float64, generator=generator)
    conv = torch.randn(4, 2, 3, 3, dtype=torch.float64, generator=generator)
    model = model_with_weights(wide, tall, conv)
    beta = 0.25
    penalty = orthogonal_penalty(model, beta)
    expected = sum(((reshape_singular_values(w) ** 2 - 1) ** 2).sum() for w in (wide, tall, conv))
    assert penalty.item() == pytest.approx(beta * expected.item(), rel=1e-10)

    penalty.backward()
    # d/dW ||W W^T - I||_F^2 = 4 (W W^T - I) W, and 4 W (W^T W - I) for the tall side
    conv_matrix = conv.reshape(4, -1)
    expected_grads = [
        4 * beta * (wide @ wide.T - torch.eye(3, dtype=torch.float64)) @ wide,
        4 * beta * tall @ (tall.T @ tall - torch.eye(2, dtype=torch.float64)),
        (4 * beta * (conv_matrix @ conv_matrix.T - torch.eye(4, dtype=torch.float64)) @ conv_matrix).reshape(4, 2, 3, 3),
    ]
    for layer, expected_grad in zip(model, expected_grads):
        torch.testing.assert_close(layer.weight.grad, expected_grad, rtol=1e-10, atol=1e-12)
        assert layer.bias.grad is None


def test_orthogonal_penalty_uses_parametrized_weight_and_reaches_original():
    torch.manual_seed(5)
    model = apply_normalization(SmallCNN().double(), "sn").eval()
    penalty = orthogonal_penalty(model, beta=1.0)
    expected = 0.0
    for name in LAYER_NAMES:
        values = reshape_singular_values(model.get_submodule(name).weight)
        expected += ((values**2 - 1) ** 2).sum().item()
    assert penalty.item() == pytest.approx(expected, rel=1e-10)
    penalty.backward()
    for name in LAYER_NAMES:
        layer = model.get_submodule(name)
        grad, original = layer.parametrizations.weight.original.grad, layer.parametrizations.weight.original
        values = reshape_singular_values(layer.weight)
        if values.numel() == 1:
            # the rank-one head: W / sigma(W) has its one singular value at exactly 1, where (s^2 - 1)^2
            # is at its minimum, so the true gradient is zero and what autograd returns is rounding
            assert values.item() == pytest.approx(1.0, abs=1e-12)
            assert grad.abs().max().item() <= 1e-12 * original.abs().max().item()
        else:
            # several singular values below the top one (which SN pins at 1): the penalty pulls them up
            assert values.min().item() < 1 - 1e-3
            assert grad is not None and torch.all(torch.isfinite(grad)) and grad.abs().max().item() > 1e-6


def test_orthogonal_penalty_without_layers_is_zero():
    assert orthogonal_penalty(nn.Sequential(nn.ReLU()), beta=1.0).item() == 0.0


# ---------------------------------------------------------------- bad input


class CircularCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular")

    def forward(self, x):
        return self.conv(x)


class UnusedConvCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Conv2d(3, 4, 3)
        self.unused = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.used(x)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: apply_normalization(SmallCNN(), "bn"), r"kind='bn' .*none, sn, fair_sn"),
        (lambda: apply_normalization(SmallCNN(), "fair_sn"), r"input_shape=None"),
        (lambda: apply_normalization(SmallCNN(), "fair_sn", input_shape=(8, 8)), r"input_shape=\(8, 8\)"),
        (lambda: apply_normalization(SmallCNN(), "sn", n_power_iterations=0), r"n_power_iterations=0"),
        (lambda: apply_normalization(CircularCNN(), "fair_sn", input_shape=INPUT_SHAPE), r"'conv'.*circular"),
        (lambda: apply_normalization(UnusedConvCNN(), "fair_sn", input_shape=INPUT_SHAPE), r"\['unused'\]"),
        (lambda: SpectralNorm(torch.randn(4)), r"shape \(4,\)"),
        (lambda: SpectralNorm(torch.randn(3, 4), eps=0.0), r"eps=0.0"),
        (lambda: FairSpectralNorm(torch.randn(3, 4), (5, 5)), r"shape \(3, 4\)"),
        (lambda: FairSpectralNorm(torch.randn(3, 2, 3, 3), (5, 5), n_power_iterations=0), r"n_power_iterations=0"),
        (lambda: orthogonal_penalty(SmallCNN(), beta=-1.0), r"beta=-1.0"),
    ],
)
def test_bad_input_raises_one_line_value_error(call, match):
    raises_one_line(call, match=match)


def test_fair_sn_bad_layer_is_rejected_before_any_registration():
    model = UnusedConvCNN()
    with pytest.raises(ValueError):
        apply_normalization(model, "fair_sn", input_shape=INPUT_SHAPE)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
