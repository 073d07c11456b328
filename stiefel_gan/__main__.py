"""``python -m stiefel_gan``: the ``stiefel-gan`` command."""

import sys

from .cli import main

sys.exit(main())
