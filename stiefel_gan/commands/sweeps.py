"""A study as a W&B sweep: ``configs/sweeps/<study>.yaml`` in W&B's own sweep format.

The sweep's ``command`` passes Hydra overrides (``${args_no_hyphens}`` expands to ``key=value``), so
an agent runs exactly ``stiefel-gan train experiment=<study> variant=sn train.seed=0`` and so on.

- :func:`create_sweep` registers it on the W&B server and returns the ``wandb agent`` line;
- :func:`run_local_sweep` needs no server: W&B's own sweep engine (the ``sweeps`` package, which the
  server runs too) proposes the runs, and :func:`agent_command` turns each into the command line a
  ``wandb agent`` would run, built with wandb's own functions. So the YAML users send to W&B is the
  one that is tested.
"""

from __future__ import annotations

import signal
import sys
import time
import warnings
from typing import Sequence

import yaml

with warnings.catch_warnings():
    # sweeps 0.3 declares a pydantic-v1 config key that pydantic 2 renamed: harmless, printed on every import
    warnings.filterwarnings("ignore", message=r"Valid config keys have changed in V2", category=UserWarning)
    import sweeps
from wandb.sdk.launch.sweeps import utils as sweep_utils

from ..config.compose import JobFailed, UsageError, config_files, job_config, one_line
from ..config.paths import RunDir, run_base

SWEEPS_DIR = "sweeps"


def available_studies() -> list[str]:
    folder = config_files() / SWEEPS_DIR
    return sorted(entry.name[:-len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_sweep(study: str) -> dict:
    """The parsed ``configs/sweeps/<study>.yaml``, validated against W&B's sweep schema."""
    studies = available_studies()
    if study not in studies:
        raise UsageError(f"study {study!r} is not allowed: use one of {', '.join(studies)} (configs/sweeps/*.yaml)")
    sweep = yaml.safe_load((config_files() / SWEEPS_DIR / f"{study}.yaml").read_text())
    try:
        sweeps.SweepConfig(sweep)  # W&B's JSON schema of a sweep
    except Exception as error:  # jsonschema's ValidationError, or a ValueError
        raise UsageError(f"configs/sweeps/{study}.yaml is not a valid W&B sweep: {one_line(error)}") from None
    return sweep


def proposed_runs(sweep: dict) -> list[dict]:
    """Every run W&B's sweep engine proposes for a grid sweep, in its order: ``{param: value}``."""
    if sweep.get("method") != "grid":
        raise UsageError(f"method={sweep.get('method')!r} is not allowed here: run a sweep locally with method: grid")
    runs: list[sweeps.SweepRun] = []
    while (proposal := sweeps.next_run(sweep, runs, validate=True)) is not None:
        runs.append(sweeps.SweepRun(config=proposal.config, state=sweeps.RunState.finished))
    return [{key: item["value"] for key, item in run.config.items()} for run in runs]


def agent_command(sweep: dict, params: dict) -> list[str]:
    """The command line a ``wandb agent`` runs for one proposed run (wandb 0.31's ``Agent._command_run``:
    each ``${macro}`` element of the sweep's ``command`` is replaced by the list wandb builds for it)."""
    macros = sweep_utils.create_sweep_command_args({"args": {key: {"value": value} for key, value in params.items()}})
    command = []
    for element in sweep_utils.create_sweep_command(list(sweep["command"])):
        element = str(element)
        if element.startswith("${") and element.endswith("}"):
            command += macros.get(element[2:-1]) or []
        else:
            command.append(element)
    return command


def study_commands(study: str, extra: Sequence[str] = ()) -> list[list[str]]:
    """The agent's command lines for every run of the study, each job's config composed and checked, and
    the jobs together (a parameter that is not a config key, a value that is not allowed, a declared
    comparison the study does not run: one line, before anything runs)."""
    from ..config.checks import check_config, check_study

    sweep = load_sweep(study)
    commands = [agent_command(sweep, params) + list(extra) for params in proposed_runs(sweep)]
    configs = []
    for command in commands:
        if command[:2] != ["stiefel-gan", "train"]:
            raise UsageError(f"configs/sweeps/{study}.yaml: command {command[:2]} is not allowed: "
                             "use [stiefel-gan, train, experiment=<study>, \"${args_no_hyphens}\"]")
        try:
            configs.append(job_config(command[2:]))
            check_config(configs[-1])
        except ValueError as error:
            raise UsageError(f"configs/sweeps/{study}.yaml: {' '.join(command[2:])}: {one_line(error)}") from None
    try:
        check_study(configs)
    except ValueError as error:
        raise UsageError(f"configs/sweeps/{study}.yaml: {one_line(error)}") from None
    return commands


def run_local_sweep(study: str, extra: Sequence[str] = ()) -> int:
    """Run every job of the study here, one after the other, as a ``wandb agent`` would: a job that fails
    does not stop the others (Note [A study survives one bad run]), a signal stops the sweep. At the end,
    one line per job that did not finish, with its status (its ``status.json``); the exit status is 1
    when one did not, 128 + signal when a signal stopped the sweep."""
    from .train import run_train

    commands = study_commands(study, extra)
    failures, status = [], 0
    for done, command in enumerate(commands, start=1):
        print(f"[sweep {study}] {' '.join(command)}", file=sys.stderr)
        started = time.time()
        status = run_train(command[2:])
        if status != 0:
            failures.append(_failure(command, status, started))
        if status >= 128:  # the job's run was stopped by a signal (its line said how to continue it)
            break
    for failure in failures:
        print(f"stiefel-gan: {failure}", file=sys.stderr)
    if status >= 128:
        print(f"stiefel-gan: {len(commands) - done} of {len(commands)} jobs not started: "
              f"{signal.Signals(status - 128).name} stopped the sweep", file=sys.stderr)
        return status
    return 1 if failures else 0


def _failure(command: list[str], exit_status: int, started: float) -> JobFailed:
    """How a job that exited with ``exit_status`` ended: its run's ``status.json``, written since the job
    ``started`` (``time.time()``), in a directory of the job's name (the name itself, or a -2, -3...
    suffix where earlier runs hold it). A job refused before it claimed one is named by its command."""
    from ..run.records import read_status
    from ..run.rundir import candidates

    for candidate in candidates(run_base(job_config(command[2:]))):
        if not candidate.is_dir():
            break
        path = RunDir(candidate).status
        if path.is_file() and path.stat().st_mtime >= started:
            recorded = read_status(candidate)
            return JobFailed(str(candidate), recorded["status"], recorded["reason"])
    return JobFailed(" ".join(command[2:]), "failed", f"exit status {exit_status}")


def create_sweep(study: str, project: str | None, entity: str | None) -> tuple[str, str]:
    """Register the sweep on the W&B server; returns its id and the ``wandb agent`` line to run."""
    import wandb

    from ..run.tracker import require_online

    study_commands(study)  # every job checked before the sweep exists
    require_online("stiefel-gan sweep (use --local to run the sweep here without a server)")
    config = job_config([f"experiment={study}"])
    project = project or config.wandb.project
    entity = entity or config.wandb.entity
    sweep_id = wandb.sweep(sweep=load_sweep(study), project=project, entity=entity)
    agent = f"wandb agent {entity}/{project}/{sweep_id}" if entity else f"wandb agent --project {project} {sweep_id}"
    return sweep_id, agent
