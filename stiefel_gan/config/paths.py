"""Where a config's run lives and the names of its files::

    runs/<experiment>/<run>/
      .hydra/                config.yaml, hydra.yaml, overrides.yaml (Hydra's own records of the job)
      .claim                 who owns the directory (stiefel_gan.run.rundir)
      train.log              Hydra's job log
      config.yaml            the resolved, typed config
      metrics.jsonl          one JSON object per logged step
      series.jsonl           line plots (normalized spectra, lambda) per diagnostics step
      samples/step_*.png     sample grids from fixed latents (scatter plots for 2-D data)
      spectra/step_*.json    every D layer's spectra, norms and lambda per diagnostics step
      geometry_rlt.png       mean relative-living-time curves of the final Geometry Score
      checkpoints/last.pt    G, D, both optimizers, latent RNG, step, W&B id (atomic writes)
      wandb/                 the W&B run

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


def run_base(cfg: Config) -> Path:
    """``<out_dir>/<name>/<run name>``: where a run of this config goes (a suffix when it is taken)."""
    return Path(cfg.out_dir) / cfg.name / default_run_name(cfg)
