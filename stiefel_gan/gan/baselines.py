r"""The discriminator constraints of Miyato et al.'s Figure 3 and Table 2 that are not spectral
normalization: weight clipping, weight normalization and gradient penalties.

Weight clipping (``wc``, Arjovsky et al. 2017)
    After every D update each parameter is clamped to ``[-c, c]`` (WGAN's ``c = 0.01``). The effective
    weight is the parameter itself.

Weight normalization (``wn``, Salimans & Kingma 2016)
    :math:`W_i = g_i \, v_i / \lVert v_i \rVert` for each output unit ``i`` (a row of a dense weight, a
    filter ``c_in x kh x kw`` of a conv), through :func:`torch.nn.utils.parametrizations.weight_norm`:
    ``layer.weight`` is the effective weight, ``parametrizations.weight.original0`` holds ``g`` and
    ``original1`` holds ``v``.

Gradient penalties (``gp``)
    Two-sided (WGAN-GP, Gulrajani et al. 2017):
    :math:`\lambda\, \mathbb{E}_{\hat x} (\lVert \nabla_{\hat x} D(\hat x) \rVert_2 - 1)^2` with
    :math:`\hat x = \alpha x_r + (1 - \alpha) x_f`, :math:`\alpha \sim U[0, 1]` per sample, and
    :math:`\lambda = 10`. One-sided R1 (Mescheder et al. 2018):
    :math:`\frac{\gamma}{2} \mathbb{E}_{x_r} \lVert \nabla_{x} D(x_r) \rVert_2^2` on real samples only.
    Both are differentiable with respect to D's parameters (the input gradient is taken with
    ``create_graph=True``), so they are added to D's loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from .._modules import select_layers

#: WGAN's clip value (Arjovsky et al. 2017, Algorithm 1).
WGAN_CLIP_VALUE = 0.01
#: WGAN-GP's penalty weight (Gulrajani et al. 2017, Algorithm 1).
WGAN_GP_WEIGHT = 10.0


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}={value!r} is not allowed: use a number > 0")


@torch.no_grad()
def clip_weights(model: nn.Module, clip_value: float = WGAN_CLIP_VALUE) -> None:
    """Clamp every parameter of ``model`` to ``[-clip_value, clip_value]`` in place (WGAN's weight clipping)."""
    _check_positive("clip_value", clip_value)
    for parameter in model.parameters():
        parameter.clamp_(-clip_value, clip_value)


def apply_weight_norm(model: nn.Module) -> nn.Module:
    """Weight normalization on every ``nn.Linear`` / ``nn.Conv2d`` of ``model`` (submodules), in place.

    Each layer's weight becomes ``g * v / ||v||`` with one norm per output unit (``dim=0``), starting
    from the current weight (``g = ||W_i||``, ``v = W``), so the model computes the same function.
    """
    for _, layer, _, _ in select_layers(model, (nn.Linear, nn.Conv2d)):
        parametrizations.weight_norm(layer, "weight", dim=0)
    return model


def _input_gradients(discriminator: nn.Module, inputs: Tensor) -> Tensor:
    """``d D(x_n) / d x_n`` for each sample, differentiable again (``create_graph=True``), ``N x features``."""
    with torch.enable_grad():  # the value is also wanted under no_grad (evaluation, finite differences)
        inputs = inputs.detach().requires_grad_(True)
        logits = discriminator(inputs)
        # samples do not interact in D (no batch statistics), so the gradient of the sum is per sample
        (gradients,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return gradients.flatten(1)


def interpolates(real: Tensor, fake: Tensor, generator: torch.Generator) -> Tensor:
    r""":math:`\alpha x_r + (1 - \alpha) x_f`, one :math:`\alpha \sim U[0, 1]` per sample from ``generator``.

    ``alpha`` is drawn on the generator's device (the CPU for the training loop's latent stream) and
    moved to the data's, so a run's numbers do not depend on the device.
    """
    alpha = torch.rand(real.shape[0], generator=generator, dtype=real.dtype, device=generator.device)
    alpha = alpha.to(real.device).view(-1, *([1] * (real.ndim - 1)))
    return alpha * real.detach() + (1 - alpha) * fake.detach()


def gradient_penalty(discriminator: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator,
                     weight: float = WGAN_GP_WEIGHT) -> Tensor:
    r"""WGAN-GP's two-sided penalty :math:`\lambda\, \mathrm{mean}_n (\lVert \nabla D(\hat x_n) \rVert - 1)^2`.

    Parameters
    ----------
    discriminator : nn.Module
        ``D``, one logit per sample.
    real, fake : Tensor
        Batches of the same shape (only the first ``min`` samples are paired).
    generator : torch.Generator
        Draws the interpolation weights (:func:`interpolates`).
    weight : float
        :math:`\lambda > 0`.
    """
    _check_positive("weight", weight)
    n = min(real.shape[0], fake.shape[0])
    gradients = _input_gradients(discriminator, interpolates(real[:n], fake[:n], generator))
    norms = torch.linalg.vector_norm(gradients, dim=1)
    return weight * torch.mean((norms - 1) ** 2)


def r1_penalty(discriminator: nn.Module, real: Tensor, weight: float = WGAN_GP_WEIGHT) -> Tensor:
    r"""R1: :math:`\frac{\gamma}{2}\, \mathrm{mean}_n \lVert \nabla D(x_n) \rVert^2` on real samples,
    :math:`\gamma` = ``weight > 0``."""
    _check_positive("weight", weight)
    return weight / 2 * torch.mean(torch.sum(_input_gradients(discriminator, real) ** 2, dim=1))
