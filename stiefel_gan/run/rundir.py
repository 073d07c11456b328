"""Claiming a run directory: which process owns ``runs/<experiment>/<run>/`` (its layout:
:mod:`stiefel_gan.config.paths`).

Note [Claiming a run directory]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Two identical commands started together (a parallel launcher does exactly that) compute the same
directory name. Checking ``exists()`` and then creating it is a race: both see "free" and both write
into it. A claim is therefore the atomic creation of ``<dir>/.claim`` with ``O_CREAT | O_EXCL``: the
file system lets exactly one process create it, and the others move on to ``<dir>-2``, ``<dir>-3``...
The claim holds an *owner*: a Slurm/submitit job id, which stays the same when Slurm requeues a
preempted job, or a one-off token. A requeued job finds its own claim and continues that directory
instead of starting a ``-2`` run.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

from ..config.paths import CLAIM_FILE, RunDir


def new_owner() -> str:
    """A claim owner for a process that no scheduler will requeue: unique, never matched again."""
    return f"pid{os.getpid()}-{uuid.uuid4().hex}"


def _try_claim(path: Path, owner: str) -> bool:
    """Create ``path/.claim`` holding ``owner``; ``False`` when another process holds it (see Note
    [Claiming a run directory])."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except OSError as error:
        if error.errno == errno.EEXIST:
            return False
        raise
    with os.fdopen(descriptor, "w") as handle:
        handle.write(owner)
    return True


def claim_owner(path: Path) -> str | None:
    """The owner written in ``path/.claim``, or ``None`` when the directory is unclaimed."""
    try:
        return (Path(path) / CLAIM_FILE).read_text()
    except FileNotFoundError:
        return None


def candidates(base: Path):
    """``base``, ``base-2``, ``base-3``, ...: the names a run of this name may take."""
    yield base
    suffix = 2
    while True:
        yield base.with_name(f"{base.name}-{suffix}")
        suffix += 1


def claim_run_dir(base: Path, owner: str) -> tuple[Path, bool]:
    """Claim the first free directory among :func:`candidates` of ``base``, or the one ``owner``
    already holds.

    Returns ``(directory, reclaimed)``: ``reclaimed`` is ``True`` when ``owner`` held the directory
    before (a requeued job), so the caller continues it from its checkpoint.

    A directory that exists without a claim counts as taken when it holds a run's config (a run
    written before claims existed); one Hydra just created for this job (``.hydra/``, its log) is not.
    """
    for candidate in candidates(Path(base)):
        held_by = claim_owner(candidate)
        if held_by == owner:
            return candidate, True
        if held_by is not None:
            continue
        if not RunDir(candidate).config.exists() and _try_claim(candidate, owner):
            return candidate, False
    raise AssertionError("unreachable: candidates() never ends")
