"""Build a GAN from a config: architectures, D's parameterization, optimizers, penalties, diagnostics.

Of the GAN code, this is the module that knows layer types (the D parameterizations: SN, the Stiefel
layers, the baselines); the training loop only sees :class:`GAN`: it asks it for optimizers, the
regularization term and a dictionary of diagnostics. The measurements that read layers are
:mod:`stiefel_gan.effective_weights` (any model's effective weights) and the diagnostics built on it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .._modules import check_patterns_match, eval_mode, layer_predicate
from ..config.schema import Config, DiscConfig, OptimConfig
from ..data.datasets import build_dataset
from ..effective_weights import effective_weight, weighted_layers
from ..manifold import FrobeniusNormalized, build_spectrum, make_optimizer, stiefelize
from ..spectral import apply_normalization, orthogonal_penalty, reshape_singular_values
from .baselines import apply_weight_norm, clip_weights, gradient_penalty, r1_penalty
from .models import build_models


def spectrum_from_config(disc: DiscConfig):
    """The unbound spectrum of ``disc.kind=stiefel``: ``disc.spectrum``, rescaled by ``disc.normalize``.

    A curve's largest value is ``disc.sigma``; ``disc.max_value`` rescales a grid only
    (:func:`stiefel_gan.config.checks.check_config` refuses a ``max_value`` that contradicts a curve's sigma).
    """
    curve = {"tau": disc.tau, "eps": disc.eps, "sigma": disc.sigma}
    if disc.spectrum == "curve":
        spectrum = build_spectrum("curve", **curve, learn=tuple(str(name) for name in disc.learn))
    elif disc.spectrum == "grid":
        spectrum = build_spectrum("grid", **curve, sort=disc.sort, max_value=disc.max_value)
    else:
        spectrum = build_spectrum("fixed", **curve)
    if disc.normalize == "frobenius":
        spectrum = FrobeniusNormalized(spectrum, disc.normalize_target)
    return spectrum


def parameterize_discriminator(discriminator: nn.Module, disc: DiscConfig, input_shape) -> nn.Module:
    """Apply ``disc.kind`` to every Linear / Conv2d of ``discriminator`` (the final dense layer included).

    Every kind leaves each layer's effective weight readable as ``layer.weight`` (in eval mode without
    side effects): the normalized weight of SN / fair SN / WN, ``diag(lambda) X`` of a Stiefel layer,
    the parameter itself for the others.
    """
    if disc.kind in ("sn", "fair_sn"):
        return apply_normalization(discriminator, str(disc.kind), input_shape=input_shape,
                                   n_power_iterations=disc.n_power_iterations)
    if disc.kind == "stiefel":
        return _stiefelize_discriminator(discriminator, disc, input_shape)
    if disc.kind == "wn":
        return apply_weight_norm(discriminator)
    if disc.kind == "wc":
        clip_weights(discriminator, disc.clip_value)  # the constraint holds from the first step on
    return discriminator  # none, ortho_reg, gp (loss terms, see GAN.penalty), wc (GAN.after_discriminator_step)


def _layer_patterns(disc: DiscConfig) -> tuple[list[str] | None, list[str] | None]:
    """``disc.layers``' include / exclude patterns as :func:`~stiefel_gan.manifold.stiefelize` takes them
    (``None``: no pattern)."""
    return list(disc.layers.include) or None, list(disc.layers.exclude) or None


def _stiefelize_discriminator(discriminator: nn.Module, disc: DiscConfig, input_shape) -> nn.Module:
    """The layers ``disc.layers`` selects take ``disc``'s spectrum; the others become ``disc.layers.others``
    (a flat spectrum at the same ``sigma``, SN, or nothing). A pattern that matches no layer is a
    one-line ValueError, before any layer is converted."""
    include, exclude = _layer_patterns(disc)
    spectrum = spectrum_from_config(disc)
    factors = {"factorization": str(disc.factorization), "retraction": str(disc.retraction)}
    if include is None and exclude is None:
        return stiefelize(discriminator, spectrum, **factors)
    names = list(weighted_layers(discriminator))
    try:
        check_patterns_match(names, include, exclude, what="D layer")
    except ValueError as error:  # "exclude pattern 'x' is not allowed: ...", under its config key
        raise ValueError(f"disc.layers.{error}") from None
    keep = layer_predicate(include, exclude)
    others = [name for name in names if not keep(name, discriminator.get_submodule(name))]
    if others and disc.layers.others == "flat":
        stiefelize(discriminator, build_spectrum("fixed", tau=1.0, eps=1.0, sigma=disc.sigma), include=others,
                   **factors)
    elif others and disc.layers.others == "sn":
        apply_normalization(discriminator, "sn", input_shape=input_shape, n_power_iterations=disc.n_power_iterations,
                            include=others)
    chosen = [name for name in names if name not in others]
    return stiefelize(discriminator, spectrum, include=chosen, **factors)


def shapeless_layers(discriminator: nn.Module, disc: DiscConfig) -> dict[str, int]:
    """The layers that take ``disc``'s spectrum and have ``k <= 2`` singular values, with their ``k``.

    With one value a spectrum is its scale ``sigma`` alone, with two the ratio ``eps``: neither has a
    shape, so a study of shapes says nothing about these layers (a k = 2 layer is, for the 2-D
    mixtures' input layer, ten times less sensitive along one input direction at ``eps = 0.1``)."""
    if disc.kind != "stiefel":
        return {}
    keep = layer_predicate(*_layer_patterns(disc))
    with torch.no_grad():
        counts = {name: min(weight.shape[0], weight[0].numel())
                  for name, layer in weighted_layers(discriminator).items() if keep(name, layer)
                  for weight in (effective_weight(layer),)}
    return {name: k for name, k in counts.items() if k <= 2}


class LogitGain:
    """A forward hook that multiplies D's output by ``gain``: ``D_c(x) = c D(x)``.

    D's Lipschitz constant and every gradient through it scale by ``c``; with the hinge loss,
    ``max(0, 1 - c D(x)) = c max(0, 1/c - D(x))``, a margin of ``1 / c`` (up to the factor ``c`` on the
    loss). A hook, not a wrapping module, so that D's parameters, their names and its checkpoints are
    those of the ungained D.
    """

    def __init__(self, gain: float):
        self.gain = float(gain)

    def __call__(self, module: nn.Module, inputs, output: Tensor) -> Tensor:
        return output * self.gain


def apply_logit_gain(discriminator: nn.Module, gain: float) -> nn.Module:
    """``discriminator``'s logit times ``gain`` (:class:`LogitGain`; nothing is registered for 1)."""
    if gain != 1.0:
        discriminator.register_forward_hook(LogitGain(gain))
    return discriminator


class GAN(nn.Module):
    """Generator, discriminator and what the loop needs to know about D's parameterization."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, disc: DiscConfig):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.disc = disc

    def optimizers(self, optim: OptimConfig) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """(G's Adam, D's optimizer with explicit groups: Stiefel factors, spectrum, the rest)."""
        betas = (optim.beta1, optim.beta2)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=optim.lr_g, betas=betas)
        group_lr = {name: lr for name, lr in (("stiefel", optim.lr_stiefel), ("spectrum", optim.lr_spectrum))
                    if lr is not None}
        extra = {"momentum": optim.momentum} if optim.name in ("rsgd", "geoopt_rsgd") else {"betas": betas}
        if optim.name == "radam":  # a string: the optimizer's state dict goes into the checkpoint
            extra["second_moment"] = str(optim.second_moment)
        opt_d = make_optimizer(self.discriminator, str(optim.name), lr=optim.lr_d, group_lr=group_lr, **extra)
        return opt_g, opt_d

    def penalty(self, real: Tensor, fake: Tensor, generator: torch.Generator) -> Tensor | float:
        """The regularization added to D's loss: Brock's orthonormal penalty for ``ortho_reg``, the
        gradient penalty for ``gp`` (its interpolation weights drawn from ``generator``, the run's
        latent stream, so that a resumed run repeats them), else 0."""
        if self.disc.kind == "ortho_reg":
            return orthogonal_penalty(self.discriminator, self.disc.ortho_beta)
        if self.disc.kind == "gp":
            if self.disc.penalty == "r1":
                return r1_penalty(self.discriminator, real, self.disc.penalty_weight)
            return gradient_penalty(self.discriminator, real, fake, generator, self.disc.penalty_weight)
        return 0.0

    def after_discriminator_step(self) -> None:
        """What follows each D update: weight clipping for ``wc``."""
        if self.disc.kind == "wc":
            clip_weights(self.discriminator, self.disc.clip_value)

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        """Cheap scalars for every log step: each D layer's largest reshaped singular value.

        Measured in eval mode, so that reading an SN layer's weight does not run a power iteration
        (that would change the training trajectory). The full spectral and gradient diagnostics are
        :class:`stiefel_gan.measure.diagnostics.DiscriminatorDiagnostics`, run less often.
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
    apply_logit_gain(discriminator, cfg.disc.gain)
    return GAN(generator, discriminator, cfg.disc)


def initial_gan(cfg: Config, data_shape: tuple[int, ...]) -> GAN:
    """The GAN a run of seed ``cfg.train.seed`` starts from: torch's global RNG seeded with that seed, then
    :func:`build_gan` (model initialization, and SN's initial ``u``, follow the seed)."""
    torch.manual_seed(cfg.train.seed)
    return build_gan(cfg, data_shape)


def run_dataset(cfg: Config) -> Dataset:
    """The training data of a run of ``cfg``: its dataset, image side, split and (for a mixture) the
    sample drawn from ``cfg.train.seed``."""
    return build_dataset(cfg.data.name, root=cfg.data.root, image_size=cfg.data.image_size,
                         download=cfg.data.download, seed=cfg.train.seed, n_samples=cfg.data.n_samples,
                         split=cfg.data.split)
