"""The command line: ``stiefel-gan`` (:mod:`.cli`) and ``stiefel-gan-train`` (:mod:`.train`).

Thin: parsing and dispatch only, over the packages below. Nothing imports this package; the entry
points first check that the experiment stack is installed (the ``suite`` extra), so that a user who
installed only the layers (``pip install stiefel-gan``) gets one line saying what to install instead
of an ImportError from deep inside.
"""

from __future__ import annotations

import importlib.util
import sys

#: one importable module of each package of the ``suite`` extra the commands need at once
SUITE_MODULES = {"hydra": "hydra-core", "omegaconf": "omegaconf", "wandb": "wandb", "torchvision": "torchvision",
                 "scipy": "scipy", "sklearn": "scikit-learn", "matplotlib": "matplotlib", "yaml": "pyyaml",
                 "tqdm": "tqdm", "torch_fidelity": "torch-fidelity", "gudhi": "gudhi"}


def missing_suite_packages() -> list[str]:
    """The packages of the ``suite`` extra that are not installed (by their PyPI names)."""
    missing = []
    for module, package in SUITE_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules: marked absent
            found = False
        if not found:
            missing.append(package)
    return missing


def _require_suite(command: str) -> None:
    missing = missing_suite_packages()
    if missing:
        print(f"{command}: error: the experiment commands need the suite extra ({', '.join(missing)} not "
              "installed): python -m pip install 'stiefel-gan[suite]' (from a checkout: python -m pip install "
              "-e '.[suite]')", file=sys.stderr)
        raise SystemExit(2)


def main() -> None:
    """``stiefel-gan``."""
    _require_suite("stiefel-gan")
    from .cli import main as cli_main

    sys.exit(cli_main())


def train_main() -> None:
    """``stiefel-gan-train``: the Hydra app under a one-word name (Hydra's shell completion needs one)."""
    _require_suite("stiefel-gan-train")
    from .train import main as train

    train()
