"""``python -m stiefel_gan``: the ``stiefel-gan`` command."""

from .commands import main

main()
