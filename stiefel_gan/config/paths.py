"""Where a config's run lives and the names of its files::

    runs/<experiment>/<run>/
      .hydra/                config.yaml, hydra.yaml, overrides.yaml (Hydra's own records of the job)
      .claim                 who owns the directory (stiefel_gan.run.rundir)
      train.log              Hydra's job log
      config.yaml            the resolved, typed config
      metrics.jsonl          one JSON object per logged step
      series.jsonl           line plots (normalized spectra, lambda) per diagnostics step
      metric_status.jsonl    why a metric is NaN at a step ({"step", "quality/<metric>_status": reason})
      samples/step_*.png     sample grids from fixed latents (scatter plots for 2-D data)
      spectra/step_*.json    every D layer's spectra, norms and lambda per diagnostics step
      geometry_rlt.png       mean relative-living-time curves of the final Geometry Score
      checkpoints/last.pt    G, D, both optimizers, latent RNG, step, W&B id (atomic writes)
      checkpoints/previous.pt  the checkpoint before it, which a resume falls back to
      checkpoints/last.unreadable.pt  a last.pt that could not be read, set aside by that fallback
      status.json            running, finished, failed, diverged or interrupted; why, at which step
      wandb/                 the W&B run

A study's sweep directory (``runs/<experiment>/``) also gets ``.stop`` while a signal stops it
(:func:`request_stop`).

Every module that writes or reads a run goes through :class:`RunDir`, so a file name is spelled once.
It sits with the config, below everything built from it, because the checks read files a config
names (``resume=<run dir>``: its config and checkpoint) before anything is built; claiming a directory
is I/O and belongs to :mod:`stiefel_gan.run.rundir`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .naming import default_run_name
from .schema import Config

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SERIES_FILE = "series.jsonl"
METRIC_STATUS_FILE = "metric_status.jsonl"
CHECKPOINT_FILE = "last.pt"
PREVIOUS_CHECKPOINT_FILE = "previous.pt"
UNREADABLE_CHECKPOINT_FILE = "last.unreadable.pt"
GEOMETRY_PLOT = "geometry_rlt.png"
CLAIM_FILE = ".claim"
HYDRA_DIR = ".hydra"
REPORT_FILE = "report.md"
STATUS_FILE = "status.json"
STOP_FILE = ".stop"

#: what ``status.json`` says of a run: ``running`` from its claim until it ends (a run killed outright,
#: SIGKILL or a power cut, stays ``running``), then how it ended
RUN_STATUSES = ("running", "finished", "failed", "diverged", "interrupted")


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
    def metric_status(self) -> Path:
        return self.path / METRIC_STATUS_FILE

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoints" / CHECKPOINT_FILE

    @property
    def previous_checkpoint(self) -> Path:
        return self.path / "checkpoints" / PREVIOUS_CHECKPOINT_FILE

    @property
    def unreadable_checkpoint(self) -> Path:
        return self.path / "checkpoints" / UNREADABLE_CHECKPOINT_FILE

    def has_checkpoint(self) -> bool:
        return self.checkpoint.is_file() or self.previous_checkpoint.is_file()

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

    @property
    def status(self) -> Path:
        return self.path / STATUS_FILE

    def is_run(self) -> bool:
        """A finished or running run: it has its config and its metrics file."""
        return self.config.is_file() and self.metrics.is_file()


def run_base(cfg: Config) -> Path:
    """``<out_dir>/<name>/<run name>``: where a run of this config goes (a suffix when it is taken)."""
    return Path(cfg.out_dir) / cfg.name / default_run_name(cfg)


def request_stop(sweep_dir: Path, signum: int) -> None:
    """Mark the study in ``sweep_dir`` as stopped by signal ``signum`` (Note [Stopping a study]).

    Note [Stopping a study]
    ~~~~~~~~~~~~~~~~~~~~~~~
    Ctrl-C or SIGTERM to ``stiefel-gan train -m`` / ``compare`` stops the whole study, but its jobs may
    run in other processes (joblib workers, submitit jobs) that the signal does not reach, or that
    Hydra would go on feeding with the study's next jobs. The command's sweeper therefore writes
    ``<sweep dir>/.stop``; a running job polls it between steps (and stops like a signalled run: the
    step ends, the checkpoint is written), a job about to start does not start. The file is the one
    thing both sides see on every launcher, so its name and its two functions live here, below the
    sweeper (which may import only ``stiefel_gan.config``) and the runner.
    """
    path = Path(sweep_dir) / STOP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(int(signum)))


def stop_requested(sweep_dir: Path) -> int | None:
    """The signal that stopped the study in ``sweep_dir`` (Note [Stopping a study]), or ``None``."""
    try:
        return int((Path(sweep_dir) / STOP_FILE).read_text())
    except (FileNotFoundError, ValueError):  # ValueError: read while being written (empty)
        return None
