"""stiefel_gan: GAN discriminators with a controlled singular-value spectrum on the Stiefel manifold."""
__version__ = "0.1.0"
