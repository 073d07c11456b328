"""stiefel_gan's Hydra sweeper (see checked_sweeper)."""
