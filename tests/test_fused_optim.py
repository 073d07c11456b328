"""The fused Stiefel optimizers against geoopt's RiemannianAdam / RiemannianSGD (the reference), and
the per-entry variant against projected Adam written out with torch's own Adam."""

import copy

import geoopt
import pytest
import torch
from geoopt import ManifoldParameter
from geoopt.manifolds import EuclideanStiefel
from helpers import orthonormal, raises_one_line
from torch import nn

from stiefel_gan.manifold import (
    CayleyStiefel,
    QRStiefel,
    StiefelAdam,
    StiefelSGD,
    load_optimizer_state,
    make_optimizer,
    manifold_drift,
)

#: (shape, manifold) of each factor: three 12 x 4 QR factors and a batched 3 x 12 x 4 one form one batch of
#: six matrices (Note [batched factors]); Cayley and geoopt's Householder QR factors form batches of their own
FACTORS = [((12, 4), QRStiefel), ((12, 4), QRStiefel), ((3, 12, 4), QRStiefel), ((12, 4), QRStiefel),
           ((9, 1), QRStiefel), ((5, 5), CayleyStiefel), ((6, 2), CayleyStiefel), ((6, 2), CayleyStiefel),
           ((7, 3), EuclideanStiefel), ((2, 7, 3), EuclideanStiefel)]


def make_params(dtype=torch.float64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    factors = [ManifoldParameter(orthonormal(*shape, generator=generator, dtype=dtype), manifold=manifold())
               for shape, manifold in FACTORS]
    plain = [nn.Parameter(torch.randn(4, 3, generator=generator, dtype=dtype)),
             nn.Parameter(torch.randn(7, generator=generator, dtype=dtype))]
    return factors, plain


def loss_of(factors, plain, step: int):
    """A smooth loss whose gradients change with the step (so the moments matter)."""
    generator = torch.Generator().manual_seed(1000 + step)
    total = 0
    for factor in factors:
        target = torch.randn(factor.shape, generator=generator, dtype=factor.dtype)
        probe = torch.randn(factor.shape[-1], 2, generator=generator, dtype=factor.dtype)
        total = total + ((factor @ probe).tanh() - target[..., :2]).pow(2).sum() + (factor * target).sum() ** 2 / 10
    return total + (plain[0].sin().sum() - 1) ** 2 + ((plain[1] ** 2).sum() - plain[0].mean()) ** 2


def run_steps(optimizer, factors, plain, steps, start: int = 0):
    for step in range(start, start + steps):
        optimizer.zero_grad()
        loss_of(factors, plain, step).backward()
        optimizer.step()


def groups(factors, plain, **stiefel_options):
    return [{"params": factors, **stiefel_options}, {"params": plain}]


ADAM_OPTIONS = [{}, {"amsgrad": True}, {"weight_decay": 0.05, "stabilize": 7}, {"betas": (0.0, 0.99)}]
SGD_OPTIONS = [{"momentum": 0.9, "nesterov": True, "weight_decay": 0.05}, {"momentum": 0.5, "dampening": 0.3},
               {"momentum": 0.0}, {"momentum": 0.9, "stabilize": 7}]


@pytest.mark.parametrize("options", ADAM_OPTIONS, ids=str)
def test_stiefel_adam_follows_geoopts_riemannian_adam_for_100_float64_steps(options):
    factors, plain = make_params()
    reference_factors, reference_plain = copy.deepcopy((factors, plain))
    ours = StiefelAdam(groups(factors, plain), lr=2e-2, **options)
    reference = geoopt.optim.RiemannianAdam(groups(reference_factors, reference_plain), lr=2e-2, **options)
    run_steps(ours, factors, plain, 100)
    run_steps(reference, reference_factors, reference_plain, 100)
    moved = min((a - b).abs().max().item() for a, b in zip(factors, make_params()[0]))
    assert moved > 0.05  # every factor goes somewhere
    for a, b in zip([*factors, *plain], [*reference_factors, *reference_plain]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("options", SGD_OPTIONS, ids=str)
def test_stiefel_sgd_follows_geoopts_riemannian_sgd_for_100_float64_steps(options):
    factors, plain = make_params()
    reference_factors, reference_plain = copy.deepcopy((factors, plain))
    ours = StiefelSGD(groups(factors, plain), lr=2e-3, **options)
    reference = geoopt.optim.RiemannianSGD(groups(reference_factors, reference_plain), lr=2e-3, **options)
    run_steps(ours, factors, plain, 100)
    run_steps(reference, reference_factors, reference_plain, 100)
    for a, b in zip([*factors, *plain], [*reference_factors, *reference_plain]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_entry_second_moment_is_torch_adams_step_projected_and_retracted():
    """Reference: torch's Adam on a shadow copy gives Adam's step Delta; projected Adam is qf(X + Pi_X(Delta))."""
    factors, plain = make_params()
    factor = factors[0]
    shadow = nn.Parameter(factor.detach().clone())
    reference_adam = torch.optim.Adam([shadow], lr=2e-2, betas=(0.8, 0.99))
    ours = StiefelAdam([factor], lr=2e-2, betas=(0.8, 0.99), second_moment="entry")
    x = factor.detach().clone()
    for step in range(30):
        ours.zero_grad()
        loss_of([factor], plain, step).backward()
        shadow.grad = factor.grad.clone()
        before = shadow.detach().clone()
        reference_adam.step()
        delta = shadow.detach() - before  # -lr m_hat / (sqrt(v_hat) + eps), per entry
        x = QRStiefel().retr(x, QRStiefel().proju(x, delta))
        ours.step()
        torch.testing.assert_close(factor.detach(), x, rtol=0, atol=1e-10)
    assert ours.state[factor]["exp_avg_sq"].shape == factor.shape  # one second moment per entry


def test_entry_steps_move_every_entry_by_about_lr_and_matrix_steps_the_whole_factor():
    """The point of the per-entry variant (Note [one second moment per matrix]): a first step moves a
    factor by ~lr per entry (~lr sqrt(n p) in norm) instead of ~lr in Frobenius norm."""
    generator = torch.Generator().manual_seed(0)
    start = orthonormal(64, 16, generator=generator)
    grad = torch.randn(64, 16, generator=generator, dtype=torch.float64)
    moved = {}
    for mode in ("matrix", "entry"):
        factor = ManifoldParameter(start.clone(), manifold=QRStiefel())
        factor.grad = grad.clone()
        StiefelAdam([factor], lr=1e-3, second_moment=mode).step()
        moved[mode] = (factor.detach() - start).norm().item()
    assert moved["matrix"] == pytest.approx(1e-3, rel=0.05)
    assert 0.3 * 1e-3 * 32 < moved["entry"] < 1e-3 * 32  # sqrt(64 * 16) = 32 entries' worth, less the normal part


def test_entry_drift_stays_below_1e5_after_10000_float32_steps():
    """Both retractions in one optimizer; the gradient of 0.5 ||X - T||^2 plus noise, without autograd
    (10 000 steps of the optimizer alone)."""
    generator = torch.Generator().manual_seed(0)
    factors = [ManifoldParameter(orthonormal(48, 16, generator=generator, dtype=torch.float32), manifold=manifold())
               for manifold in (QRStiefel, CayleyStiefel)]
    targets = [torch.randn(48, 16, generator=generator) for _ in factors]
    optimizer = StiefelAdam(factors, lr=1e-2, second_moment="entry")
    start = [(factor.detach() - target).norm() for factor, target in zip(factors, targets)]
    for _ in range(10_000):
        for factor, target in zip(factors, targets):
            factor.grad = factor.detach() - target + 0.5 * torch.randn(48, 16, generator=generator)
        optimizer.step()
    for factor, target, distance in zip(factors, targets, start):
        assert manifold_drift(factor.detach()) < 1e-5
        assert (factor.detach() - target).norm() < 0.9 * distance  # it went somewhere


@pytest.mark.parametrize("second_moment", ["matrix", "entry"])
def test_state_dict_round_trip_continues_bit_for_bit(second_moment):
    factors, plain = make_params(dtype=torch.float32)
    straight_factors, straight_plain = copy.deepcopy((factors, plain))
    straight = StiefelAdam(groups(straight_factors, straight_plain), lr=2e-2, second_moment=second_moment)
    run_steps(straight, straight_factors, straight_plain, 8)
    first = StiefelAdam(groups(factors, plain), lr=2e-2, second_moment=second_moment)
    run_steps(first, factors, plain, 5)
    saved = copy.deepcopy(first.state_dict())
    resumed_factors, resumed_plain = copy.deepcopy((factors, plain))
    resumed = StiefelAdam(groups(resumed_factors, resumed_plain), lr=1.0, second_moment=second_moment)
    load_optimizer_state(resumed, saved)
    run_steps(resumed, resumed_factors, resumed_plain, 3, start=5)
    for a, b in zip([*straight_factors, *straight_plain], [*resumed_factors, *resumed_plain]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("ours_class,geoopt_class,options", [
    (StiefelAdam, geoopt.optim.RiemannianAdam, {"lr": 2e-2, "amsgrad": True}),
    (StiefelSGD, geoopt.optim.RiemannianSGD, {"lr": 2e-3, "momentum": 0.9})])
def test_state_dicts_are_interchangeable_with_geoopts(ours_class, geoopt_class, options):
    """A checkpoint of geoopt's optimizer continues under ours, and ours under geoopt's, both on geoopt's trajectory."""
    factors, plain = make_params()
    reference = geoopt_class(groups(factors, plain), **options)
    run_steps(reference, factors, plain, 4)
    geoopt_saved = copy.deepcopy(reference.state_dict())
    at_4 = copy.deepcopy((factors, plain))
    run_steps(reference, factors, plain, 8, start=4)  # the reference trajectory, steps 4..11

    continued = copy.deepcopy(at_4)
    ours = ours_class(groups(*continued), **options)
    load_optimizer_state(ours, geoopt_saved)
    run_steps(ours, *continued, 4, start=4)
    ours_saved = copy.deepcopy(ours.state_dict())
    back = copy.deepcopy(continued)
    geoopt_again = geoopt_class(groups(*back), **options)
    load_optimizer_state(geoopt_again, ours_saved)
    run_steps(geoopt_again, *back, 4, start=8)
    for a, b in zip([*back[0], *back[1]], [*factors, *plain]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_a_per_entry_state_does_not_load_into_the_matrix_optimizer():
    factors, plain = make_params()
    entry = StiefelAdam(groups(factors, plain), second_moment="entry")
    run_steps(entry, factors, plain, 1)
    with pytest.raises(ValueError, match=r"second_moment='entry' cannot continue with second_moment='matrix'"):
        StiefelAdam(groups(factors, plain)).load_state_dict(entry.state_dict())


@pytest.mark.parametrize("make,named", [
    (lambda: StiefelAdam(make_params()[0], second_moment="diagonal"), "second_moment='diagonal'"),
    (lambda: StiefelAdam([ManifoldParameter(torch.eye(3), manifold=geoopt.Sphere())]), "Sphere"),
    (lambda: make_optimizer(nn.Linear(2, 2), "radam", second_moment="full"), "second_moment='full'"),
    (lambda: StiefelSGD(make_params()[0], lr=0.1, nesterov=True), "nesterov=True"),
], ids=["second_moment", "manifold", "make_optimizer", "nesterov"])
def test_bad_input_is_a_one_line_value_error(make, named):
    raises_one_line(make, named)
