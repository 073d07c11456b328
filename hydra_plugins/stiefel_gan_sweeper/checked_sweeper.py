"""The default sweeper of ``stiefel-gan train -m`` (``configs/hydra/sweeper/checked.yaml``).

Hydra instantiates sweepers only from the ``hydra_plugins`` namespace package, hence this module;
the checks themselves live in :mod:`stiefel_gan.config.checks`.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from omegaconf import OmegaConf

from stiefel_gan.config.checks import check_job, check_launcher, check_study
from stiefel_gan.config.compose import JobFailed, UsageError, job_config, one_line
from stiefel_gan.config.naming import NAMED_KEYS, run_name_for, swept_wandb_group
from stiefel_gan.config.paths import STOP_FILE, request_stop, stop_requested


class CheckedSweeper(BasicSweeper):
    """Hydra's basic sweeper (``a=1,2`` axes, ``hydra.sweeper.params``) that composes and checks every
    job, and the jobs together (the variants ``report.comparisons`` names), before launching the first,
    and gives jobs that share a default run name distinct ones.

    Note [Names within a sweep]: a run's default name says its variant (or disc and optimizer) and
    seed. A sweep over anything else (``disc.tau=0.5,1``, ``data=ring8,grid25``) would give two jobs
    one name, one directory and one W&B group; such jobs get ``run_name`` and ``wandb.group``
    overrides that append the other swept values.

    A job that fails does not stop the others (Note [A study survives one bad run] in
    :mod:`stiefel_gan.commands.train`); at the end every job that did not finish is named on stderr,
    one line each, and the exit status is 1 (128 + signal when a signal stopped the study).
    """

    def sweep(self, arguments: list[str]) -> Any:
        try:
            check_launcher(self.config.hydra.launcher)
            jobs = self._expanded_jobs(arguments)
            here = not str(self.config.hydra.launcher.get("_target_", "")).endswith("SlurmLauncher")
            configs = [job_config(overrides) for overrides in jobs]
            for cfg in configs:
                check_job(cfg, here=here)
            check_study(configs, study_presets=self._study_presets())
        except UsageError as error:
            print(f"stiefel-gan: error: {one_line(error)}", file=sys.stderr)
            raise SystemExit(2) from None
        return self._launch(jobs)

    def _study_presets(self) -> list[str]:
        """The variant presets of the study's own axis (``hydra.sweeper.params.variant`` of the experiment),
        whichever of them this sweep runs."""
        params = self.config.hydra.sweeper.get("params") or {}
        return [name.strip() for name in str(params.get("variant", "")).split(",") if name.strip()]

    def _expanded_jobs(self, arguments: list[str]) -> list[list[str]]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        try:
            parsed = parser.parse_overrides([*self._parse_config(), *arguments])
        except HydraException as error:
            raise UsageError(one_line(error)) from None
        swept = [o.get_key_element() for o in parsed if o.is_sweep_override()]
        try:
            jobs = [list(job) for batch in self.split_arguments(parsed, None) for job in batch]
        except HydraException as error:  # a sweep type the basic sweeper cannot expand
            raise UsageError(one_line(error)) from None
        extra_keys = [key for key in swept if key.lstrip("+~") not in NAMED_KEYS]
        if not extra_keys:
            return jobs
        named = []
        for job in jobs:
            cfg = job_config(job)
            values = dict(o.split("=", 1) for o in job if "=" in o)
            tail = "_".join((values[k] if "." not in k else f"{k}={values[k]}").replace("/", "-") for k in extra_keys)
            base = run_name_for(cfg.run_name, cfg.variant, cfg.disc, cfg.optim.name, cfg.train.seed)
            group = swept_wandb_group(cfg, tail)
            extra = [f"run_name='{base}_{tail}'"] if cfg.run_name is None else []
            extra += [f"wandb.group='{group}'"] if cfg.wandb.group is None else []
            named.append(job + extra)
        return named

    def _launch(self, jobs: list[list[str]]) -> Any:
        """BasicSweeper.sweep's launch loop, over the jobs already expanded and checked; a signal stops
        the study (Note [Stopping a study] in :mod:`stiefel_gan.config.paths`), a failed job does not."""
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        (sweep_dir / STOP_FILE).unlink(missing_ok=True)  # left by an earlier study in this directory
        batch_size = self.max_batch_size or len(jobs)
        returns = []
        with _StopOnSignal(sweep_dir):
            for start in range(0, len(jobs), batch_size):
                if stop_requested(sweep_dir) is not None:
                    break
                batch = jobs[start:start + batch_size]
                self.validate_batch_is_legal(batch)
                try:
                    returns.append(self.launcher.launch(batch, initial_job_idx=start))
                except BaseException:
                    if stop_requested(sweep_dir) is None:
                        raise
                    # a second signal, or a worker that had not reached its first job died of the first:
                    # the launcher gave up on the batch (joblib kills the other workers)
                    print(f"stiefel-gan: {signal.Signals(stop_requested(sweep_dir)).name} stopped the study "
                          "before its jobs had ended: a job that was training keeps its last periodic "
                          "checkpoint (its status.json may still say running)", file=sys.stderr)
                    break
        signum = stop_requested(sweep_dir)
        (sweep_dir / STOP_FILE).unlink(missing_ok=True)
        lines, exit_status = study_ending(len(jobs), returns, signum, sweep_dir)
        for line in lines:
            print(line, file=sys.stderr)
        if exit_status:
            raise SystemExit(exit_status)
        return returns


def study_ending(n_jobs: int, returns: list[list[JobReturn]], signum: int | None, sweep_dir: Path) -> tuple[list[str], int]:
    """The lines a study prints at its end (each job that did not finish, then how many never started and
    why) and its exit status: 128 + signal when a signal stopped it, 1 when a job did not finish, else 0.

    ``signum`` is what the study's stop file says at the end. It can be gone while jobs were stopped by
    it: two sweeps writing into one study directory share the file (Note [Stopping a study]), and a sweep
    that starts there removes the one an earlier study left, so a signal to one sweep stops the other,
    whose file may then be removed by a third. Such a study names the stop file, not a signal."""
    failures = [failure for results in returns for failure in map(_failure, results) if failure is not None]
    lines = [f"stiefel-gan: {failure}" for failure in failures if failure.status != "not started"]
    not_started = n_jobs - sum(map(len, returns)) + sum(f.status == "not started" for f in failures)
    if not_started:
        cause = (f"{signal.Signals(signum).name} stopped the study" if signum is not None else
                 f"a stop request stopped the study (its file {Path(sweep_dir) / STOP_FILE} is gone: another sweep "
                 "into this directory wrote it, and a later one removed it)")
        lines.append(f"stiefel-gan: {not_started} of {n_jobs} jobs not started: {cause}")
    return lines, 128 + signum if signum is not None else int(bool(failures) or bool(not_started))


def _failure(result: JobReturn) -> JobFailed | None:
    """What kept a job from finishing (None when it finished): the task's :class:`JobFailed`, or an
    exception raised around the task (Hydra's job setup, a launcher), recorded as ``failed``. Read from
    ``_return_value``: the public ``return_value`` re-raises it after printing a line of its own."""
    if result.status == JobStatus.COMPLETED:
        return None
    error = result._return_value
    if isinstance(error, JobFailed):
        return error
    return JobFailed(str(result.hydra_cfg.hydra.runtime.output_dir), "failed",
                     f"{type(error).__name__}: {one_line(error)}")


class _StopOnSignal:
    """While a study's jobs run: the first SIGINT / SIGTERM to this process stops the study (a stop file,
    Note [Stopping a study]) instead of ending this process mid-launch (a KeyboardInterrupt in joblib's
    wait kills its workers mid-step); a second one goes to the previous handler, so a hung study still
    ends. Not :class:`stiefel_gan.run.signals.StopRequest`: the sweeper imports ``stiefel_gan.config``
    only, and this one has no training loop to poll it. Handlers can be installed from the main thread
    only; elsewhere none is.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, sweep_dir: Path):
        self.sweep_dir = sweep_dir
        self._stopping = False
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self._stopping:  # a second signal: the previous handler takes it now
            self._restore()
            signal.raise_signal(signum)
            return
        self._stopping = True
        request_stop(self.sweep_dir, signum)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> "_StopOnSignal":
        try:
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread
            self._previous = {}
        return self

    def __exit__(self, *exc) -> None:
        self._restore()
