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

import signal
import sys
import traceback
from pathlib import Path
from typing import Sequence

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ..config.checks import preflight
from ..config.compose import (
    JobFailed,
    config_source,
    expose_sweeper_plugin,
    job_config,
    one_line,
    resumes_a_directory,
)
from ..config.paths import stop_requested

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
    """One job: check, claim the run directory Hydra named, train; returns the objective.

    Note [A study survives one bad run]
    ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    A single run ends the command the way it ended: a usage error in one line (exit status 2), a
    divergence in one line (1), a bug with its traceback (1), a signal with how to continue (128 +
    signal). In a study (``-m``) one bad job must not cost the others, so a job that fails raises
    :class:`~stiefel_gan.config.compose.JobFailed` instead: Hydra's launchers record an exception as the
    job's result and go on, where a ``SystemExit`` would end the study (and, from a joblib worker, make
    joblib kill the other workers mid-step). Every check that can refuse a job ran before the first
    one started (the checked sweeper), so what fails here is the job's own: its data, a divergence, a
    bug (its traceback is printed here, where it happened). A signal is not the job's own: the study
    stops (Note [Stopping a study] in :mod:`stiefel_gan.config.paths`) and a job that has not started
    yet does not start. The checked sweeper names every job that did not finish at the end and exits
    non-zero; each run's ``status.json`` and W&B summary say the same.
    """
    from ..gan.train import CheckpointWriteFailed, TrainingDiverged
    from ..run.runner import ended_by, execute, objective, prepare
    from ..run.signals import RunInterrupted

    hydra_cfg = HydraConfig.get()
    job = Path(hydra_cfg.runtime.output_dir)
    study = Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
    if study is not None:
        _ignore_signals_between_jobs(hydra_cfg)
        stopped = stop_requested(study)
        if stopped is not None:
            raise JobFailed(str(job), "not started", f"{signal.Signals(stopped).name} stopped the study")
    try:
        cfg = job_config(list(hydra_cfg.overrides.task)) if resumes_a_directory(hydra_cfg.overrides.task) \
            else OmegaConf.to_object(composed)
        prepared = prepare(cfg, base=job, owner=_claim_owner())
    except ValueError as error:  # usage: the config, the data, a resume directory
        if study is not None:
            raise JobFailed(str(job), "failed", one_line(error)) from None
        print(f"stiefel-gan: error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        run_dir = execute(prepared, study)
    except (TrainingDiverged, CheckpointWriteFailed, RunInterrupted) as error:
        # the run's own ending, in one line: a divergence or a failed write (exit 1), a signal (128 + signal)
        prefix = {TrainingDiverged: "training diverged: ", CheckpointWriteFailed: "checkpoint not written: "}
        print(f"stiefel-gan: {prefix.get(type(error), '')}{error}", file=sys.stderr)
        if study is not None:
            raise JobFailed(str(prepared.run_dir or job), *ended_by(error)) from None
        raise SystemExit(error.exit_status if isinstance(error, RunInterrupted) else 1) from None
    except Exception as error:  # a bug: a single run ends with Hydra's traceback, a study's job prints it
        if study is None:
            raise
        traceback.print_exc()
        raise JobFailed(str(prepared.run_dir or job), *ended_by(error)) from error
    print(run_dir)
    return objective(run_dir, cfg)


def _ignore_signals_between_jobs(hydra_cfg) -> None:
    """In a launcher's worker process (joblib, submitit), ignore SIGINT / SIGTERM while no job handles them.

    Ctrl-C reaches every process of the terminal's group. A joblib worker waiting for its next job
    would die of it, and joblib then kills the other workers, mid-step. Ignored between jobs (each
    job's run takes the signals while it trains), the workers leave stopping the study to its stop
    file, which the sweeper writes (Note [Stopping a study]). The basic launcher runs the jobs in the
    sweeper's own process, whose handlers stay as they are; so do handlers a scheduler installed.
    """
    if "BasicLauncher" in str(hydra_cfg.launcher.get("_target_", "")):
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


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
