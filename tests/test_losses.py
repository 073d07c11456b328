"""GAN losses against hand-computed values and torch's binary cross-entropy."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import raises_one_line

from stiefel_gan.config.schema import LOSS_KINDS
from stiefel_gan.gan.losses import discriminator_loss, generator_loss


def test_hinge_hand_computed():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-3.0, 0.0, 0.5])
    # relu(1 - real) = [0, 0.5, 2], relu(1 + fake) = [0, 1, 1.5]: each sums to 2.5 over 3 entries
    assert discriminator_loss("hinge", real, fake).item() == pytest.approx(5.0 / 3.0)
    # -mean(fake) = 2.5 / 3
    assert generator_loss("hinge", fake).item() == pytest.approx(2.5 / 3.0)


def test_vanilla_hand_computed():
    log3 = math.log(3.0)
    real = torch.tensor([0.0, log3], dtype=torch.float64)
    fake = torch.tensor([0.0, -log3], dtype=torch.float64)
    # softplus(-0) = log 2 and softplus(-log 3) = log(4/3), for the real and the fake halves alike
    expected_d = 2 * (math.log(2.0) + math.log(4.0 / 3.0)) / 2
    assert discriminator_loss("vanilla", real, fake).item() == pytest.approx(expected_d, rel=1e-12)
    # softplus(-fake) = [log 2, log 4]
    assert generator_loss("vanilla", fake).item() == pytest.approx(1.5 * math.log(2.0), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vanilla_matches_binary_cross_entropy(seed, dtype):
    gen = torch.Generator().manual_seed(seed)
    real = 3 * torch.randn(7, generator=gen, dtype=dtype)
    fake = 3 * torch.randn(5, generator=gen, dtype=dtype)  # batches of different sizes
    reference_d = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + (
        F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    )
    reference_g = F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(discriminator_loss("vanilla", real, fake), reference_d, rtol=tol, atol=tol)
    torch.testing.assert_close(generator_loss("vanilla", fake), reference_g, rtol=tol, atol=tol)


@pytest.mark.parametrize("seed", [0, 1])
def test_hinge_matches_elementwise_definition(seed):
    gen = torch.Generator().manual_seed(seed)
    real = 2 * torch.randn(9, generator=gen, dtype=torch.float64)
    fake = 2 * torch.randn(9, generator=gen, dtype=torch.float64)
    expected = sum(max(0.0, 1 - r) for r in real.tolist()) / 9 + sum(max(0.0, 1 + f) for f in fake.tolist()) / 9
    assert discriminator_loss("hinge", real, fake).item() == pytest.approx(expected, rel=1e-12)


def test_hinge_gradients_are_piecewise_constant():
    real = torch.tensor([0.5, 2.0], requires_grad=True)  # inside / outside the margin
    fake = torch.tensor([-0.5, -2.0], requires_grad=True)
    discriminator_loss("hinge", real, fake).backward()
    torch.testing.assert_close(real.grad, torch.tensor([-0.5, 0.0]))
    torch.testing.assert_close(fake.grad, torch.tensor([0.5, 0.0]))


def test_vanilla_is_stable_for_large_logits():
    # a confident, wrong discriminator: the loss grows linearly and the gradient stays -1/n, +1/n
    real = torch.tensor([-1000.0, -1000.0], requires_grad=True)
    fake = torch.tensor([1000.0, 1000.0], requires_grad=True)
    loss = discriminator_loss("vanilla", real, fake)
    assert loss.item() == pytest.approx(2000.0)
    loss.backward()
    torch.testing.assert_close(real.grad, torch.full((2,), -0.5))
    torch.testing.assert_close(fake.grad, torch.full((2,), 0.5))
    # non-saturating generator: a rejected fake still gets a full gradient
    fake_g = torch.tensor([-1000.0], requires_grad=True)
    generator_loss("vanilla", fake_g).backward()
    torch.testing.assert_close(fake_g.grad, torch.tensor([-1.0]))


@pytest.mark.parametrize("kind", ["wgan", "Hinge", "", None])
def test_unknown_kind_raises_one_line(kind):
    logits = torch.zeros(2)
    for call in (lambda: discriminator_loss(kind, logits, logits), lambda: generator_loss(kind, logits)):
        raises_one_line(call, repr(kind), *LOSS_KINDS)
