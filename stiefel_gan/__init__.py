"""stiefel_gan: GAN discriminators with a controlled singular-value spectrum on the Stiefel manifold.

``stiefel_gan.manifold`` (layers, spectra, optimizers) and ``stiefel_gan.spectral`` (exact spectra,
SN baselines) are the reusable library; ``stiefel_gan.gan``, ``runner`` and ``cli`` run experiments.
"""

import warnings

with warnings.catch_warnings():
    # geoopt 0.5.1 applies torch.jit.script at import time, which recent torch flags as deprecated:
    # harmless here, and it would print on every command
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
    import geoopt  # noqa: F401

__version__ = "0.1.0"
