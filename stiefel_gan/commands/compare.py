"""``stiefel-gan compare``: the main job. SN and the three Stiefel spectra on the embedded digits, one
seed each, checked before the first trains, trained as one Hydra study, then compared in one report.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

from ..config.checks import check_job, check_study
from ..config.compose import UsageError, compose_config
from ..config.paths import RunDir

#: each run's directory is named after its ``disc`` option and seed (``sn-s0``), as before compare was a study
RUN_SUBDIR = "${hydra:runtime.choices.disc}-s${train.seed}"


def _cpu_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one: Linux, a Slurm job)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _compare_jobs(cfg, n_runs: int) -> int:
    """How many of ``n_runs`` runs ``compare`` trains at once (Note [parallel compare])."""
    jobs = cfg.compare.jobs
    if jobs is not None and jobs < 1:
        raise UsageError(f"compare.jobs={jobs} is not allowed: use an integer >= 1, or null for one per CPU core")
    return min(jobs or _cpu_cores(), n_runs)


def _new_output_dir(parent: Path) -> Path:
    """``<parent>/<timestamp>``, created by this command alone (a second compare started in the same
    second gets ``<timestamp>-2``), so that the report reads this command's runs and no other's."""
    from ..run.rundir import candidates

    for candidate in candidates(parent / time.strftime("%Y%m%d-%H%M%S")):
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise AssertionError("unreachable: candidates() never ends")


def compare(args) -> int:
    """The main job: every ``compare.variants`` x ``compare.seeds`` run checked, trained, then compared.

    The runs are one study of ``stiefel-gan train -m`` (the same Hydra task, launcher and sweeper, so
    each run directory gets its ``.hydra/`` records and a failed run does not stop the others: Note
    [A study survives one bad run]); the report lists a run that did not finish, and the exit status
    is then 1. A signal stops every run with its checkpoint written and leaves no report.

    Note [parallel compare]
        The main job's runs are independent, and a digits-sized model keeps two CPU threads busy only
        part of the time (small convolutions and per-parameter optimizer calls). Two runs side by side with
        one thread each finish sooner than the same runs one after another with two threads, and train
        the same numbers (CPU runs are deterministic for a given thread count). ``compare.jobs>1`` runs them
        in Hydra's joblib launcher (worker processes that each build and train one run at a time);
        ``compare.jobs=1`` runs them one by one in this process (Hydra's basic launcher).
    """
    from ..report.markdown import write_comparison
    from .train import run_train

    base = compose_config(["experiment=compare", *args.overrides])
    runs = list(itertools.product(base.compare.variants, base.compare.seeds))
    if not runs:
        raise UsageError(f"compare.variants={base.compare.variants} and compare.seeds={base.compare.seeds} are not "
                         "allowed: give at least one disc option and one seed")
    jobs = _compare_jobs(base, len(runs))
    common = ["experiment=compare", *args.overrides]
    threads = base.train.threads
    if jobs > 1:
        threads = threads or max(1, _cpu_cores() // jobs)
        common += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", f"train.threads={threads}",
                   "train.progress=false"]  # two progress bars on one terminal garble each other
    # every run checked, alone and with the others (report.comparisons), before anything is written;
    # nothing is built
    configs = [compose_config([*common, f"disc={variant}", f"train.seed={seed}"]) for variant, seed in runs]
    for cfg in configs:
        check_job(cfg)
    check_study(configs)
    out = _new_output_dir(Path(base.out_dir) / base.name)
    each = f" ({threads} thread{'s' if threads > 1 else ''} each)" if threads else ""
    print(f"[compare] {len(runs)} runs, {jobs} at a time{each}, in {out}", file=sys.stderr, flush=True)
    status = run_train(["-m", *common, f"name='{base.name}/{out.name}'", f"hydra.sweep.subdir='{RUN_SUBDIR}'",
                        f"disc={','.join(base.compare.variants)}",
                        f"train.seed={','.join(map(str, base.compare.seeds))}"])
    order = {f"{variant}-s{seed}": i for i, (variant, seed) in enumerate(runs)}  # the report's order, as listed
    run_dirs = sorted((d for d in out.iterdir() if RunDir(d).is_run()),
                      key=lambda d: (order.get(d.name, len(order)), d.name))
    if status >= 128 or not run_dirs:  # a signal stopped the study (the sweeper said so), or no run began
        return status
    print(write_comparison(run_dirs, out))
    return status
