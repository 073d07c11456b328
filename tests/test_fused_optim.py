"""The fused Stiefel optimizers against geoopt's RiemannianAdam / RiemannianSGD (the reference), and
the per-entry variant against projected Adam written out with torch's own Adam."""

import copy

import geoopt
import pytest
import torch
from geoopt import ManifoldParameter
from geoopt.manifolds import EuclideanStiefel
from torch import nn

from stiefel_gan.manifold import (CayleyStiefel, LearnableCurve, QRStiefel, StiefelAdam, StiefelLinear, StiefelSGD,
                                  load_optimizer_state, make_optimizer, manifold_drift)

#: (shape, manifold) of each factor: three 12 x 4 QR factors and a batched 3 x 12 x 4 one form one batch of
#: six matrices (Note [batched factors]); Cayley and geoopt's Householder QR factors form batches of their own
FACTORS = [((12, 4), QRStiefel), ((12, 4), QRStiefel), ((3, 12, 4), QRStiefel), ((12, 4), QRStiefel),
           ((9, 1), QRStiefel), ((5, 5), CayleyStiefel), ((6, 2), CayleyStiefel), ((6, 2), CayleyStiefel),
           ((7, 3), EuclideanStiefel), ((2, 7, 3), EuclideanStiefel)]


def make_params(dtype=torch.float64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    factors = [ManifoldParameter(torch.linalg.qr(torch.randn(*shape, generator=generator, dtype=dtype))[0],
                                 manifold=manifold()) for shape, manifold in FACTORS]
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


ADAM_OPTIONS = [{}, {"amsgrad": True}, {"weight_decay": 0.05}, {"stabilize": 7}, {"betas": (0.0, 0.99)}]
SGD_OPTIONS = [{"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}, {"momentum": 0.5, "dampening": 0.3},
               {"momentum": 0.0}, {"momentum": 0.9, "weight_decay": 0.05, "stabilize": 7}]


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
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("options", SGD_OPTIONS, ids=str)
def test_stiefel_sgd_follows_geoopts_riemannian_sgd_for_100_float64_steps(options):
    factors, plain = make_params()
    reference_factors, reference_plain = copy.deepcopy((factors, plain))
    ours = StiefelSGD(groups(factors, plain), lr=2e-3, **options)
    reference = geoopt.optim.RiemannianSGD(groups(reference_factors, reference_plain), lr=2e-3, **options)
    run_steps(ours, factors, plain, 100)
    run_steps(reference, reference_factors, reference_plain, 100)
    for a, b in zip([*factors, *plain], [*reference_factors, *reference_plain]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
