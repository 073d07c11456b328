"""The experiment configs, shipped in the package as ``stiefel_gan.configs`` (see pyproject.toml)."""
