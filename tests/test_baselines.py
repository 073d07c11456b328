"""The baselines of Miyato et al.'s Table 2 (weight clipping, weight normalization, gradient penalties),
each checked against its defining property with an independent reference; the Frobenius-matched
spectrum; the axis bias of ``factorization=diag`` shown numerically."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_MODELS, tiny_run
from torch import nn

from stiefel_gan.config.compose import compose_config
from stiefel_gan.config.schema import DiscConfig
from stiefel_gan.data.datasets import data_shape
from stiefel_gan.gan.baselines import clip_weights, gradient_penalty, interpolates, r1_penalty
from stiefel_gan.gan.builder import build_gan, parameterize_discriminator
from stiefel_gan.gan.models import build_models
from stiefel_gan.manifold import (
    FixedCurve,
    FrobeniusNormalized,
    LearnableCurve,
    LearnableGrid,
    StiefelConv2d,
    StiefelLinear,
    make_optimizer,
    stiefel_layers,
)
from stiefel_gan.run.runner import run

TINY = tiny_run(3, *TINY_MODELS["standard_cnn"], "metrics.n_samples=50")


def trained_discriminator(tmp_path, *overrides):
    """D's state after three real training steps of the runner (digits, standard CNN)."""
    cfg = compose_config([*TINY, f"out_dir={tmp_path}", *overrides])
    run_dir = run(cfg)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    gan = build_gan(cfg, data_shape("digits", 16))
    gan.discriminator.load_state_dict(checkpoint["discriminator"])
    return gan.discriminator.eval(), cfg


# ---------------------------------------------------------------------------------------------- weight clipping


def test_weight_clipping_keeps_every_parameter_within_c_and_bites(tmp_path):
    torch.manual_seed(0)
    _, untouched = build_models("standard_cnn", (1, 16, 16), d_width=4)
    assert max(p.abs().max().item() for p in untouched.parameters()) > 0.01  # N(0, 0.02): clipping must act

    discriminator, cfg = trained_discriminator(tmp_path, "disc=wc")
    c = cfg.disc.clip_value
    assert c == 0.01
    values = torch.cat([p.detach().flatten() for p in discriminator.parameters()])
    assert values.abs().max().item() <= c
    at_bound = (values.abs() == c).float().mean().item()
    assert at_bound > 0.05, "clipping is active: many weights sit exactly at +-c after Adam steps"
    assert (values.abs() < c).any()


def test_clip_weights_is_a_projection_onto_the_box():
    layer = nn.Linear(5, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(-1, 1, 15).view(3, 5))
    expected = layer.weight.detach().clamp(-0.3, 0.3)
    clip_weights(layer, 0.3)
    assert torch.equal(layer.weight.detach(), expected)
    with pytest.raises(ValueError, match="clip_value=0"):
        clip_weights(layer, 0)


# ---------------------------------------------------------------------------------------- weight normalization


def test_weight_normalization_direction_has_norm_one_and_g_is_the_row_norm(tmp_path):
    discriminator, _ = trained_discriminator(tmp_path, "disc=wn")
    layers = [m for m in discriminator.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(layers) == 8  # seven convs and the dense layer, all normalized
    for layer in layers:
        g = layer.parametrizations.weight.original0.detach()
        v = layer.parametrizations.weight.original1.detach()
        weight = layer.weight.detach()  # the effective weight, read in eval mode
        rows = weight.flatten(1)
        direction = rows / g.flatten()[:, None]
        torch.testing.assert_close(torch.linalg.vector_norm(direction, dim=1), torch.ones(rows.shape[0]))
        # independent reference: g v / ||v|| with the norm over everything but the output unit
        reference = g * v / torch.linalg.vector_norm(v.flatten(1), dim=1).view(-1, *([1] * (v.ndim - 1)))
        torch.testing.assert_close(weight, reference)
    x = torch.randn(3, 1, 16, 16)
    conv1 = discriminator.features.conv1
    torch.testing.assert_close(conv1(x), F.conv2d(x, conv1.weight.detach(), conv1.bias, padding=1))


# ------------------------------------------------------------------------------------------- gradient penalties


def small_discriminator(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 7), nn.Tanh(), nn.Linear(7, 5), nn.Softplus(), nn.Linear(5, 1)).double()


def finite_difference_input_gradient(discriminator, x, h=1e-6):
    """d D / d x by central differences, one coordinate at a time (no autograd)."""
    grads = torch.zeros_like(x)
    with torch.no_grad():
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                step = torch.zeros_like(x[i])
                step[j] = h
                grads[i, j] = (discriminator(x[i] + step) - discriminator(x[i] - step)).item() / (2 * h)
    return grads


def test_two_sided_gradient_penalty_equals_finite_differences():
    discriminator = small_discriminator()
    real, fake = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64) * 3
    penalty = gradient_penalty(discriminator, real, fake, torch.Generator().manual_seed(5), weight=10.0)
    x_hat = interpolates(real, fake, torch.Generator().manual_seed(5))
    alpha = (x_hat - fake) / (real - fake)  # the same alpha for every coordinate of a sample
    assert torch.allclose(alpha, alpha[:, :1].expand_as(alpha)) and bool(((alpha >= 0) & (alpha <= 1)).all())
    norms = torch.linalg.vector_norm(finite_difference_input_gradient(discriminator, x_hat), dim=1)
    expected = 10.0 * torch.mean((norms - 1) ** 2)
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-7)
    assert 0.1 < penalty.item()  # not a 0 == 0 comparison


def test_r1_penalty_equals_finite_differences():
    discriminator = small_discriminator(1)
    real = torch.randn(5, 3, dtype=torch.float64)
    grads = finite_difference_input_gradient(discriminator, real)
    expected = 10.0 / 2 * torch.mean(torch.sum(grads ** 2, dim=1))
    assert r1_penalty(discriminator, real, weight=10.0).item() == pytest.approx(expected.item(), rel=1e-7)


def test_gradient_penalty_is_differentiable_in_the_parameters():
    """The penalty trains D: its parameter gradient (double backward) matches a finite difference."""
    discriminator = small_discriminator(2)
    real, fake = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)

    def penalty():
        return gradient_penalty(discriminator, real, fake, torch.Generator().manual_seed(0))

    weight = discriminator[0].weight
    (grad,) = torch.autograd.grad(penalty(), weight)
    h = 1e-6
    with torch.no_grad():
        weight[2, 1] += h
        plus = penalty().item()
        weight[2, 1] -= 2 * h
        minus = penalty().item()
        weight[2, 1] += h
    assert grad[2, 1].item() == pytest.approx((plus - minus) / (2 * h), rel=1e-5)
    assert grad.abs().max() > 0


def test_gp_run_adds_the_penalty_to_d_loss(tmp_path):
    """With a huge penalty weight D's loss is dominated by it: the penalty is in the training loss."""
    from stiefel_gan.run.records import read_metrics

    plain = run(compose_config([*TINY, f"out_dir={tmp_path}", "disc=none", "run_name=plain"]))
    penalized = run(compose_config([*TINY, f"out_dir={tmp_path}", "disc=gp", "disc.penalty_weight=1e4",
                                    "run_name=penalized"]))
    first = [[r["loss/d"] for r in read_metrics(d) if "loss/d" in r][0] for d in (plain, penalized)]
    # at initialization ||grad D|| is about 0, so the two-sided penalty is about weight * 1
    assert first[0] < 3 and first[1] > 1e3


# -------------------------------------------------------------------------------------- Frobenius-matched spectra


@pytest.mark.parametrize("inner", [FixedCurve(tau=0.25, eps=0.05), FixedCurve(tau=4.0),
                                   LearnableCurve(tau=2.0, learn=("tau", "eps")),
                                   LearnableGrid(init=FixedCurve(tau=0.5), sort=True)])
@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_frobenius_matching_is_exact_and_keeps_the_shape(inner, layer):
    torch.manual_seed(0)
    spectrum = FrobeniusNormalized(inner, target=2.5)
    module = (StiefelLinear(20, 9, spectrum=spectrum, dtype=torch.float64) if layer == "linear"
              else StiefelConv2d(4, 6, 3, padding=1, spectrum=spectrum, dtype=torch.float64))
    optimizer = make_optimizer(module, "radam", lr=0.05)
    for _ in range(3):  # exact before and after training steps
        weight = module.weight.detach().flatten(1)
        assert torch.linalg.matrix_norm(weight).item() == pytest.approx(2.5, rel=1e-12)
        singular = torch.linalg.svdvals(weight)
        lam = module.singular_values()
        torch.testing.assert_close(singular, torch.sort(lam, descending=True).values)
        bound_inner = module.spectrum.inner().detach()
        torch.testing.assert_close(lam / lam.norm(), bound_inner / bound_inner.norm())  # the shape is the inner's
        optimizer.zero_grad()
        x = torch.randn(3, *((20,) if layer == "linear" else (4, 5, 5)), dtype=torch.float64)
        module(x).square().sum().backward()
        optimizer.step()


def test_frobenius_matched_discriminator_from_the_config():
    disc = DiscConfig(kind="stiefel", tau=0.5, normalize="frobenius", normalize_target=1.7, max_value=None)
    _, model = build_models("standard_cnn", (1, 16, 16), d_width=4)
    parameterize_discriminator(model, disc, (1, 16, 16))
    layers = list(stiefel_layers(model))
    assert len(layers) == 8
    for _, layer in layers:
        assert torch.linalg.matrix_norm(layer.weight.detach().flatten(1)).item() == pytest.approx(1.7, rel=1e-5)


@pytest.mark.parametrize("target", [0.0, -1.0, math.inf])
def test_frobenius_target_must_be_positive(target):
    with pytest.raises(ValueError, match=f"target={target}"):
        FrobeniusNormalized(FixedCurve(), target)


# ------------------------------------------------------------------------------------------ the bias of diag


def right_singular_vectors(weight):
    """The right singular vectors of a dense weight, by a dense SVD (rows of V^T)."""
    return torch.linalg.svd(weight, full_matrices=False).Vh


@pytest.mark.parametrize("steps", [0, 5])
def test_diag_pins_a_tall_layers_input_axes_and_svd_does_not(steps):
    """``Linear(2, 128)`` on 2-D data: with ``diag`` (``W = X diag(lambda)``) the right singular vectors are
    the coordinate axes, so input coordinate i is scaled by exactly lambda_i (the second input at eps times
    the first's scale), whatever training does; with ``svd`` they are rotated."""
    torch.manual_seed(0)
    curve = FixedCurve(tau=1.0, eps=0.1)
    layers = {f: StiefelLinear(2, 128, spectrum=curve, factorization=f, dtype=torch.float64) for f in ("diag", "svd")}
    for layer in layers.values():
        optimizer = make_optimizer(layer, "radam", lr=0.1)
        for _ in range(steps):
            optimizer.zero_grad()
            layer(torch.randn(16, 2, dtype=torch.float64)).sin().sum().backward()
            optimizer.step()
    diag, svd = (layers[f].weight.detach() for f in ("diag", "svd"))
    torch.testing.assert_close(right_singular_vectors(diag).abs(), torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(torch.linalg.vector_norm(diag, dim=0), torch.tensor([1.0, 0.1], dtype=torch.float64))
    # svd: the input axes get mixed gains, none of them a singular value
    assert right_singular_vectors(svd).abs().min().item() > 0.05
    gains = torch.linalg.vector_norm(svd, dim=0)
    assert (gains - torch.tensor([1.0, 0.1], dtype=torch.float64)).abs().max().item() > 0.05


def test_diag_pins_a_wide_layers_filter_norms_and_svd_does_not():
    """A wide layer (``diag(lambda) X``): output unit i's filter norm is lambda_i, its left singular
    vectors the coordinate axes."""
    torch.manual_seed(1)
    curve = FixedCurve(tau=2.0, eps=0.05)
    diag = StiefelConv2d(8, 6, 3, spectrum=curve, factorization="diag", dtype=torch.float64)
    svd = StiefelConv2d(8, 6, 3, spectrum=curve, factorization="svd", dtype=torch.float64)
    lam = diag.singular_values()
    torch.testing.assert_close(torch.linalg.vector_norm(diag.weight.detach().flatten(1), dim=1), lam)
    left = torch.linalg.svd(diag.weight.detach().flatten(1)).U
    torch.testing.assert_close(left.abs(), torch.eye(6, dtype=torch.float64))
    svd_norms = torch.linalg.vector_norm(svd.weight.detach().flatten(1), dim=1)
    assert (svd_norms - lam).abs().max().item() > 0.05
