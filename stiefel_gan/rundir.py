"""The run directory: its paths and file names, and how a process claims one.

Every module that writes or reads a run (runner, tracking, evaluation, report, the CLI) goes through
this one, so a file name is spelled once::

    runs/<experiment>/<run>/
      .hydra/                config.yaml, hydra.yaml, overrides.yaml (Hydra's own records of the job)
      .claim                 who owns the directory (see :func:`claim_run_dir`)
      train.log              Hydra's job log
      config.yaml            the resolved, typed config
      metrics.jsonl          one JSON object per logged step
      series.jsonl           line plots (normalized spectra, lambda) per diagnostics step
      samples/step_*.png     sample grids from fixed latents (scatter plots for 2-D data)
      spectra/step_*.json    every D layer's spectra, norms and lambda per diagnostics step
      geometry_rlt.png       mean relative-living-time curves of the final Geometry Score
      checkpoints/last.pt    G, D, both optimizers, latent RNG, step, W&B id (atomic writes)
      wandb/                 the W&B run

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
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .config import disc_label

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SERIES_FILE = "series.jsonl"
CHECKPOINT_FILE = "last.pt"
GEOMETRY_PLOT = "geometry_rlt.png"
CLAIM_FILE = ".claim"
HYDRA_DIR = ".hydra"
REPORT_FILE = "report.md"


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (nothing is created by building one)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def series(self) -> Path:
        return self.path / SERIES_FILE

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoints" / CHECKPOINT_FILE

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    def samples(self, step: int) -> Path:
        return self.samples_dir / f"step_{step:06d}.png"

    @property
    def spectra_dir(self) -> Path:
        return self.path / "spectra"

    def spectra(self, step: int) -> Path:
        return self.spectra_dir / f"step_{step:06d}.json"

    @property
    def geometry_plot(self) -> Path:
        return self.path / GEOMETRY_PLOT

    @property
    def claim(self) -> Path:
        return self.path / CLAIM_FILE

    @property
    def hydra(self) -> Path:
        return self.path / HYDRA_DIR

    def is_run(self) -> bool:
        """A finished or running run: it has its config and its metrics file."""
        return self.config.is_file() and self.metrics.is_file()


def label(value) -> str:
    """A config choice as text: an Enum's value (``sn``, not ``DiscKind.sn``), anything else ``str``."""
    return str(value.value) if isinstance(value, Enum) else str(value)


def run_name_for(run_name: str | None, variant: str | None, disc, optim, seed: int) -> str:
    """A run's directory name: ``run_name``, else ``<variant>-s<seed>`` for a study variant, else
    ``<disc label>-<optim>-s<seed>`` (``disc`` is the ``disc`` config node, see :func:`disc_label`)."""
    if run_name:
        return str(run_name)
    return f"{variant or f'{disc_label(disc)}-{label(optim)}'}-s{seed}"


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
