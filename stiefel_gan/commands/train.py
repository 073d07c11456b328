"""``stiefel-gan train``: the Hydra application.

Hydra's own command line is kept whole: ``--cfg job``, ``--help`` (the config groups), ``--info``,
``--shell-completion``, ``-m`` with Hydra's sweepers (the default one here is
``hydra_plugins.stiefel_gan_sweeper.CheckedSweeper``; ``hydra/sweeper=optuna`` optimizes the value the
task returns, the dataset's headline quality metric) and ``hydra/launcher=basic|joblib|submitit_local|
submitit_slurm`` (presets in ``configs/hydra/launcher/``).

Bad input is refused before anything is written: one line on stderr, exit status 2. A single run is
checked by :func:`~stiefel_gan.config.checks.preflight` before Hydra creates its output directory;
the jobs of a sweep are each composed and checked by that sweeper before the first one is launched.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ..config.checks import preflight
from ..config.compose import config_source, expose_sweeper_plugin, job_config, one_line, resumes_a_directory

APP_NAME = "stiefel-gan train"


def _claim_owner() -> str | None:
    """The submitit job id when this job runs under submitit (it survives a Slurm requeue, so the
    requeued job finds its own run directory), else ``None`` (a one-off owner)."""
    try:
        import submitit

        return f"submitit-{submitit.JobEnvironment().job_id}"
    except (ImportError, RuntimeError):
        return None


def task(composed: DictConfig) -> float | None:
    """One job: check, claim the run directory Hydra named, train; returns the objective."""
    from ..gan.train import CheckpointWriteFailed, TrainingDiverged
    from ..run.runner import execute, objective, prepare
    from ..run.signals import RunInterrupted

    hydra_cfg = HydraConfig.get()
    try:
        cfg = job_config(list(hydra_cfg.overrides.task)) if resumes_a_directory(hydra_cfg.overrides.task) \
            else OmegaConf.to_object(composed)
        prepared = prepare(cfg, base=Path(hydra_cfg.runtime.output_dir), owner=_claim_owner())
    except ValueError as error:  # usage: the config, the data, a resume directory
        print(f"stiefel-gan: error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        run_dir = execute(prepared)
    except TrainingDiverged as error:
        print(f"stiefel-gan: training diverged: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except CheckpointWriteFailed as error:
        print(f"stiefel-gan: checkpoint not written: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except RunInterrupted as error:
        print(f"stiefel-gan: {error}", file=sys.stderr)
        raise SystemExit(error.exit_status) from None
    print(run_dir)
    return objective(run_dir, cfg)


def hydra_app():
    """The decorated Hydra entry point (built on demand: :func:`config_source` depends on the install)."""
    source = config_source()
    expose_sweeper_plugin()
    return hydra.main(config_path=source, config_name="config", version_base="1.3")(task)


HYDRA_FLAGS_WITHOUT_RUN = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i",
                           "--shell-completion", "-sc", "--resolve", "-p", "--package")


def run_train(argv: Sequence[str]) -> int:
    """``stiefel-gan train ARGS``: check a single run first, then hand the command line to Hydra."""
    argv = list(argv)
    multirun = "-m" in argv or "--multirun" in argv
    inspect_only = any(a.split("=", 1)[0] in HYDRA_FLAGS_WITHOUT_RUN for a in argv)
    if not multirun and not inspect_only:
        try:
            preflight([a for a in argv if not a.startswith("-")])
        except ValueError as error:
            print(f"stiefel-gan: error: {one_line(error)}", file=sys.stderr)
            return 2
    saved_argv = sys.argv
    sys.argv = [APP_NAME.replace(" ", "-"), *argv]
    GlobalHydra.instance().clear()
    try:
        hydra_app()()
    except ValueError as error:  # Hydra's own command-line checks ("Only one of --run, --multirun, ...")
        print(f"stiefel-gan: error: {one_line(error)}", file=sys.stderr)
        return 2
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved_argv
        GlobalHydra.instance().clear()
    return 0


def main() -> None:
    """``stiefel-gan-train``: the same app under a one-word name, which Hydra's shell completion needs
    (its scripts run ``<first word> -sc query=...``):
    ``eval "$(stiefel-gan-train --shell-completion install=bash)"``."""
    sys.exit(run_train(sys.argv[1:]))
