"""GAN objectives on discriminator logits: hinge and non-saturating ("vanilla").

With real logits ``r = D(x)`` and fake logits ``f = D(G(z))``, each averaged over the batch:

==========  ==========================================  ======================
kind        discriminator minimizes                     generator minimizes
==========  ==========================================  ======================
hinge       ``mean(relu(1 - r)) + mean(relu(1 + f))``   ``-mean(f)``
vanilla     ``mean(softplus(-r)) + mean(softplus(f))``  ``mean(softplus(-f))``
==========  ==========================================  ======================

``softplus(-r) = -log sigmoid(r)`` and ``softplus(f) = -log(1 - sigmoid(f))``, so the vanilla D loss is
the binary cross-entropy of Goodfellow et al. 2014 with labels real = 1, fake = 0, and the vanilla G
loss is its non-saturating variant (G maximizes ``log sigmoid(f)`` instead of minimizing
``log(1 - sigmoid(f))``, whose gradient vanishes when D rejects the fakes confidently). The hinge pair
is the one of Miyato et al. 2018 (their best standard-CNN and ResNet results). Softplus is evaluated in
a numerically stable form by torch, so large logits neither overflow nor lose the gradient.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..config.schema import LOSS_KINDS


def _require_kind(kind: str) -> None:
    if kind not in LOSS_KINDS:
        raise ValueError(f"kind={kind!r} is not allowed: use one of {LOSS_KINDS}")


def discriminator_loss(kind: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Scalar loss the discriminator minimizes (see the module docstring for the formulas).

    Parameters
    ----------
    kind : {"hinge", "vanilla"}
        Objective.
    real_logits, fake_logits : Tensor
        Discriminator outputs on real and generated samples; each is averaged over all its entries,
        so the two batches may differ in size.
    """
    _require_kind(kind)
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(kind: str, fake_logits: Tensor) -> Tensor:
    """Scalar loss the generator minimizes (see the module docstring for the formulas).

    Parameters
    ----------
    kind : {"hinge", "vanilla"}
        Objective.
    fake_logits : Tensor
        Discriminator outputs on generated samples, averaged over all entries.
    """
    _require_kind(kind)
    if kind == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()
