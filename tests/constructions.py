"""Test helper: count what a command builds (datasets, G and D pairs, feature extractors) by wrapping
the real builders with counters that call them.

Each builder is replaced in every loaded ``stiefel_gan`` module that holds it (``from x import f``
copies the name), so a count cannot miss a caller. In another process (a joblib worker), the same
wrappers are installed at start-up by a ``sitecustomize`` module that :func:`counting_site` writes,
and each construction appends ``<pid> <kind>`` to a file.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from pathlib import Path
from typing import Callable

#: kind -> (module, attribute) of the real builder; the evaluator is a class (its __init__ is wrapped)
BUILDERS = {"dataset": ("stiefel_gan.data.datasets", "build_dataset"),
            "models": ("stiefel_gan.gan.models", "build_models"),  # G and D together
            "feature_extractor": ("stiefel_gan.metrics.digits", "DigitsEvaluator")}


def install(record: Callable[[str], None], setattr_=setattr) -> None:
    """Wrap every builder of :data:`BUILDERS` so that each call first calls ``record(kind)``."""
    importlib.import_module("stiefel_gan.run.runner")  # loads every module that imports a builder
    for kind, (module_name, name) in BUILDERS.items():
        original = getattr(importlib.import_module(module_name), name)
        if isinstance(original, type):
            init = original.__init__

            @functools.wraps(init)
            def counted_init(self, *args, _init=init, _kind=kind, **kwargs):
                record(_kind)
                _init(self, *args, **kwargs)

            setattr_(original, "__init__", counted_init)
            continue

        @functools.wraps(original)
        def counted(*args, _original=original, _kind=kind, **kwargs):
            record(_kind)
            return _original(*args, **kwargs)

        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("stiefel_gan") and getattr(module, name, None) is original:
                setattr_(module, name, counted)


def record_to_file(path: str) -> None:
    """:func:`install` with each construction appended to ``path`` as ``<pid> <kind>``."""
    def record(kind: str) -> None:
        with open(path, "a") as handle:
            handle.write(f"{os.getpid()} {kind}\n")

    install(record)


def counting_site(folder: Path, count_file: Path) -> dict:
    """Write ``folder/sitecustomize.py`` and return the environment under which every Python process
    started from it (a command and its workers) counts its constructions into ``count_file``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('STIEFEL_GAN_TEST_COUNTS'):\n"
        "    import constructions\n"
        "    constructions.record_to_file(os.environ['STIEFEL_GAN_TEST_COUNTS'])\n")
    tests = Path(__file__).resolve().parent
    path = os.pathsep.join([str(folder), str(tests), str(tests.parent), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "STIEFEL_GAN_TEST_COUNTS": str(count_file)}


def read_counts(count_file: Path) -> list[tuple[int, str]]:
    """``(pid, kind)`` of every construction recorded in ``count_file``."""
    if not count_file.is_file():
        return []
    return [(int(pid), kind) for pid, kind in (line.split() for line in count_file.read_text().splitlines())]
