"""``stiefel-gan compare``: the main job. SN and the three Stiefel spectra on the embedded digits, one
seed each, checked before the first trains, then compared in one report.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..config.compose import UsageError, compose_config, one_line


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


def _train_one(cfg) -> Path:
    """Prepare and train one run (in a worker process of a parallel ``compare``)."""
    from ..run.runner import execute, prepare

    started = time.perf_counter()
    run_dir = execute(prepare(cfg))
    print(f"[compare] {cfg.run_name} done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return run_dir


def _train_in_parallel(configs: list, jobs: int) -> list[Path]:
    """Train ``configs`` in ``jobs`` spawned worker processes (Note [parallel compare] in :func:`compare`)."""
    from ..run.signals import RunInterrupted

    print(f"[compare] {len(configs)} runs, {jobs} at a time ({configs[0].train.threads} threads each): "
          f"{', '.join(cfg.run_name for cfg in configs)}", file=sys.stderr, flush=True)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_train_one, cfg) for cfg in configs]
        try:
            return [future.result() for future in futures]
        except KeyboardInterrupt:  # the workers got the SIGINT too: each checkpoints and stops
            pool.shutdown(wait=True, cancel_futures=True)
            raise RunInterrupted("SIGINT stopped compare; each started run wrote its checkpoint",
                                 signal.SIGINT) from None


def compare(args) -> int:
    """The main job: every ``compare.variants`` x ``compare.seeds`` run checked, trained, then compared.

    Note [parallel compare]
        The main job's runs are independent, and a digits-sized model keeps two CPU threads busy only
        part of the time (small convolutions and per-parameter optimizer calls). Two runs side by side with
        one thread each finish sooner than the same runs one after another with two threads, and train
        the same numbers (CPU runs are deterministic for a given thread count). ``compare.jobs=1`` runs
        them one by one in this process.
    """
    from ..config.checks import check_study
    from ..report.markdown import write_comparison
    from ..run.runner import execute, prepare
    from ..run.signals import RunInterrupted

    base = compose_config(["experiment=compare", *args.overrides])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(base.out_dir) / base.name / stamp
    runs = list(itertools.product(base.compare.variants, base.compare.seeds))
    jobs = _compare_jobs(base, len(runs))
    configs = []
    for variant, seed in runs:
        cfg = compose_config(["experiment=compare", *args.overrides, f"disc={variant}", f"train.seed={seed}"])
        cfg.name, cfg.run_name = f"{base.name}/{stamp}", f"{variant}-s{seed}"
        if jobs > 1:
            cfg.train.progress = False  # two progress bars on one terminal garble each other
            if cfg.train.threads is None:
                cfg.train.threads = max(1, _cpu_cores() // jobs)
        configs.append(cfg)
    try:
        check_study(configs)
        prepared = [prepare(cfg) for cfg in configs]  # every run is checked before the first one trains
    except ValueError as error:
        raise UsageError(one_line(error)) from None
    try:
        if jobs == 1:
            run_dirs = []
            for p in prepared:
                print(f"[compare] {p.base.name}", file=sys.stderr)
                run_dirs.append(execute(p))
        else:
            del prepared  # the workers build their own
            run_dirs = _train_in_parallel(configs, jobs)
    except RunInterrupted as stopped:  # SIGINT / SIGTERM: the run (each worker's) wrote its checkpoint
        print(f"stiefel-gan: {stopped}", file=sys.stderr)
        return stopped.exit_status
    print(write_comparison(run_dirs, out))
    return 0
