"""``stiefel-gan``: train a run or a study, run the main comparison, write reports, W&B sweeps and dashboards.

    stiefel-gan train [hydra args...]          the Hydra app (stiefel_gan.app): one run, or -m for a study
    stiefel-gan compare [overrides...]         the main job: SN vs the three Stiefel spectra on digits
    stiefel-gan report RUN_OR_SWEEP_DIR...     report.md and plots from finished runs
    stiefel-gan sweep STUDY [--local]          the study as a W&B sweep (configs/sweeps/STUDY.yaml)
    stiefel-gan dashboard --entity E --project P --study S [--dry-run FILE]   a W&B workspace

Bad input stops with one line on stderr and exit status 2, before anything is written. A failure
during a run keeps its traceback (exit status 1); a run stopped by SIGTERM / SIGINT exits 128 + signal.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from . import __version__
from .app import UsageError, compose_config, one_line, run_train

__all__ = ["UsageError", "compose_config", "main"]


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
    from .runner import execute, prepare

    started = time.perf_counter()
    run_dir = execute(prepare(cfg))
    print(f"[compare] {cfg.run_name} done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return run_dir


def _train_in_parallel(configs: list, jobs: int) -> list[Path]:
    """Train ``configs`` in ``jobs`` spawned worker processes (Note [parallel compare] in :func:`_compare`)."""
    from .runner import RunInterrupted

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


def _compare(args) -> int:
    """The main job: every ``compare.variants`` x ``compare.seeds`` run checked, trained, then compared.

    Note [parallel compare]
        The main job's runs are independent, and a digits-sized model keeps two CPU threads busy only
        part of the time (small convolutions and per-parameter optimizer calls). Two runs side by side with
        one thread each finish sooner than the same runs one after another with two threads, and train
        the same numbers (CPU runs are deterministic for a given thread count). ``compare.jobs=1`` runs
        them one by one in this process.
    """
    from .report import write_comparison
    from .runner import RunInterrupted, execute, prepare

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


def _report(args) -> int:
    from .report import find_run_dirs, write_reports

    if args.out is not None and len(args.dirs) > 1:
        raise UsageError(f"--out {args.out} is not allowed with {len(args.dirs)} directories: give one directory "
                         "(its report goes to --out), or leave --out out (each report goes next to its runs)")
    try:
        targets = {Path(target): find_run_dirs(Path(target)) for target in args.dirs}
    except ValueError as error:
        raise UsageError(one_line(error)) from None
    for target, run_dirs in targets.items():
        for report in write_reports(run_dirs, args.out or target, all_seed_samples=args.samples == "all"):
            print(report)
    return 0


def _sweep(args) -> int:
    from .wandb_sweeps import create_sweep, run_local_sweep

    if args.local:
        return run_local_sweep(args.study, extra=args.overrides)
    if args.overrides:
        raise UsageError(f"{args.overrides[0]!r} is not allowed without --local: the sweep runs "
                         f"configs/sweeps/{args.study}.yaml as it is")
    try:
        _, agent_line = create_sweep(args.study, project=args.project, entity=args.entity)
    except UsageError:
        raise
    except ValueError as error:  # no server
        raise UsageError(one_line(error)) from None
    print(agent_line)
    return 0


def _dashboard(args) -> int:
    from .dashboard import save_workspace, write_spec

    if args.dry_run is not None:
        print(write_spec(args.entity, args.project, args.study, Path(args.dry_run)))
        return 0
    print(save_workspace(args.entity, args.project, args.study))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stiefel-gan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"stiefel-gan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="the Hydra app: one run, or a study with -m (stiefel-gan train --help)",
                   add_help=False)
    p = sub.add_parser("compare", help="the main job: SN baseline vs the three Stiefel spectra on digits")
    p.add_argument("overrides", nargs="*", help="Hydra overrides on top of experiment=compare")
    p = sub.add_parser("report", help="write report.md and plots for run or sweep directories (one report per "
                                      "dataset: runs on several go to <dir>/<dataset>/)")
    p.add_argument("dirs", nargs="+", help="run directories or directories holding runs")
    p.add_argument("--out", type=Path, help="write report.md and its figures here (default: into the directory "
                                            "given), e.g. docs/figures/<study> to publish a study's report")
    p.add_argument("--samples", choices=("all", "median"), default="all",
                   help="all: samples.png (each variant's median seed) and samples_all_seeds.png; median: "
                        "samples.png only (every figure then stays small enough to publish)")
    p = sub.add_parser("sweep", help="a study as a W&B sweep (configs/sweeps/STUDY.yaml): create it, or run it "
                                     "here with --local")
    p.add_argument("study", help="the name of a configs/sweeps/*.yaml file")
    p.add_argument("--local", action="store_true",
                   help="expand the sweep with W&B's own engine (the sweeps package) and run every job here, "
                        "with no server")
    p.add_argument("--project", default=None, help="W&B project (default: the config's wandb.project)")
    p.add_argument("--entity", default=None, help="W&B entity (default: your default entity)")
    p.add_argument("overrides", nargs="*", help="--local: Hydra overrides added to every job (train.steps=...)")
    p = sub.add_parser("dashboard", help="a W&B workspace comparing a study's variants with the SN baseline")
    p.add_argument("--entity", required=True)
    p.add_argument("--project", required=True)
    p.add_argument("--study", required=True, help="the study's experiment name (its runs' job_type)")
    p.add_argument("--dry-run", metavar="FILE", default=None,
                   help="write the workspace's JSON spec to FILE instead of saving it (no network)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "train":  # Hydra parses its own command line
        return run_train(argv[1:])
    parser = build_parser()
    # overrides may follow an option (sweep smoke --local train.steps=2): argparse leaves them unknown
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if not hasattr(args, "overrides") or any(item.startswith("-") for item in unknown):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.overrides += unknown
    handlers = {"compare": _compare, "report": _report, "sweep": _sweep, "dashboard": _dashboard}
    try:
        return handlers[args.command](args)
    except UsageError as error:  # raised before anything runs or is written; anything else is a bug
        print(f"stiefel-gan: error: {one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
