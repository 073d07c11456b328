"""Build a GAN from a config: architectures, D's parameterization, optimizers, penalties, diagnostics.

This is the one place that knows layer types. The training loop only sees :class:`GAN`: it asks it
for optimizers, the regularization term and a dictionary of diagnostics.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import STIEFEL_SPECTRA, Config, DiscConfig, OptimConfig
from .._modules import eval_mode
from ..diagnostics import weighted_layers
from ..manifold import build_spectrum, make_optimizer, stiefelize
from ..spectral import apply_normalization, orthogonal_penalty, reshape_singular_values
from .models import build_models


def spectrum_from_config(disc: DiscConfig):
    """The unbound spectrum a Stiefel ``disc`` kind uses (``stiefel_svd`` takes ``disc.spectrum``)."""
    kind = STIEFEL_SPECTRA.get(disc.kind, disc.spectrum)
    curve = {"tau": disc.tau, "eps": disc.eps, "sigma": disc.sigma}
    if kind == "curve":
        return build_spectrum("curve", **curve, learn=tuple(disc.learn))
    if kind == "grid":
        return build_spectrum("grid", **curve, sort=disc.sort, max_value=disc.max_value)
    return build_spectrum(kind, **curve)


def parameterize_discriminator(discriminator: nn.Module, disc: DiscConfig, input_shape) -> nn.Module:
    """Apply ``disc.kind`` to every Linear / Conv2d of ``discriminator`` (the final dense layer included)."""
    if disc.kind in ("sn", "fair_sn"):
        return apply_normalization(discriminator, disc.kind, input_shape=input_shape,
                                   n_power_iterations=disc.n_power_iterations)
    if disc.kind.startswith("stiefel"):
        factorization = "svd" if disc.kind == "stiefel_svd" else disc.factorization
        return stiefelize(discriminator, spectrum_from_config(disc), factorization=factorization,
                          retraction=disc.retraction)
    return discriminator  # none, ortho_reg (a loss term, see GAN.penalty)


class GAN(nn.Module):
    """Generator, discriminator and what the loop needs to know about D's parameterization."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, disc: DiscConfig):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.disc_kind = disc.kind
        self.ortho_beta = disc.ortho_beta

    def optimizers(self, optim: OptimConfig) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """(G's Adam, D's optimizer with explicit groups: Stiefel factors, spectrum, the rest)."""
        betas = (optim.beta1, optim.beta2)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=optim.lr_g, betas=betas)
        group_lr = {name: lr for name, lr in (("stiefel", optim.lr_stiefel), ("spectrum", optim.lr_spectrum))
                    if lr is not None}
        extra = {"momentum": optim.momentum} if optim.name in ("rsgd", "geoopt_rsgd") else {"betas": betas}
        if optim.name == "radam":
            extra["second_moment"] = optim.second_moment
        opt_d = make_optimizer(self.discriminator, optim.name, lr=optim.lr_d, group_lr=group_lr, **extra)
        return opt_g, opt_d

    def penalty(self) -> Tensor | float:
        """The regularization added to D's loss (Brock's orthonormal penalty for ``ortho_reg``, else 0)."""
        if self.disc_kind == "ortho_reg":
            return orthogonal_penalty(self.discriminator, self.ortho_beta)
        return 0.0

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        """Cheap scalars for every log step: each D layer's largest reshaped singular value.

        Measured in eval mode, so that reading an SN layer's weight does not run a power iteration
        (that would change the training trajectory). The full spectral and gradient diagnostics are
        :class:`stiefel_gan.diagnostics.DiscriminatorDiagnostics`, run less often.
        """
        with eval_mode(self.discriminator):
            return {f"sigma_max/{name}": reshape_singular_values(layer.weight)[0].item()
                    for name, layer in weighted_layers(self.discriminator).items()}


def build_gan(cfg: Config, data_shape: tuple[int, ...]) -> GAN:
    """G and D for ``data_shape``, D parameterized by ``cfg.disc``."""
    generator, discriminator = build_models(cfg.model.arch, data_shape, z_dim=cfg.model.z_dim,
                                            g_width=cfg.model.g_width, d_width=cfg.model.d_width,
                                            mlp_depth=cfg.model.mlp_depth)
    parameterize_discriminator(discriminator, cfg.disc, data_shape)
    return GAN(generator, discriminator, cfg.disc)
