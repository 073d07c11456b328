"""``stiefel-gan``: train one config, sweep many, run the main comparison, write reports.

    stiefel-gan train [overrides...]            one run (Hydra overrides: disc=stiefel_curve train.steps=500)
    stiefel-gan train -m [overrides...]         a sweep over comma-separated values (disc=sn,stiefel_fixed)
    stiefel-gan sweep [overrides...]            the same as train -m
    stiefel-gan compare [overrides...]          the main job: SN vs the three Stiefel spectra on digits
    stiefel-gan report RUN_OR_SWEEP_DIR...      report.md and plots from finished runs

Every config is composed (and checked) before any run starts: a bad override stops everything with
one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config import Config, register_configs

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class UsageError(ValueError):
    """A bad command line or config: reported as one line, exit status 2."""


def _one_line(error: BaseException) -> str:
    """Hydra and OmegaConf spread some messages over several lines (a list of available options):
    keep them, on one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines).replace("\t", " ")
    if "Available options" in text:
        head, _, options = text.partition("Available options")
        scope, _, names = options.partition(":")
        text = f"{head.strip()}; available options{scope}: {', '.join(names.split())}"
    return text


def compose_config(overrides: list[str]) -> Config:
    """Compose ``configs/config.yaml`` with Hydra overrides into a typed :class:`Config`."""
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            composed = compose("config", overrides=list(overrides))
        return OmegaConf.to_object(composed)
    except (HydraException, OmegaConfBaseException) as error:
        # Hydra says which override failed; OmegaConf's cause says why (a typed choice lists what is allowed)
        cause = error.__cause__
        detail = f": {str(cause).splitlines()[0]}" if isinstance(cause, OmegaConfBaseException) and str(cause) else ""
        raise UsageError(_one_line(error) + detail) from None
    finally:
        GlobalHydra.instance().clear()


def resume_config(overrides: list[str]) -> Config:
    """``resume=<run dir>``: the run's own saved config, plus ``key=value`` overrides (train.steps=...)."""
    from .runner import load_run_config

    resume = next(o.split("=", 1)[1] for o in overrides if o.startswith("resume="))
    saved = load_run_config(Path(resume))
    others = [o for o in overrides if not o.startswith("resume=")]
    groups = {"data", "model", "disc", "optim", "loss", "experiment"}
    bad = [o for o in others if "=" not in o or o.split("=", 1)[0].lstrip("+~") in groups]
    if bad:
        raise UsageError(f"{bad[0]!r} is not allowed with resume=: the run keeps its own config groups; "
                         "pass key=value overrides such as train.steps=2000")
    base = OmegaConf.structured(saved)
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(others), {"resume": resume})
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise UsageError(_one_line(error)) from None


def expand_sweep(overrides: list[str]) -> tuple[list[list[str]], set[str]]:
    """The Cartesian product of every sweep override (``a=1,2``, ``range(...)``, ``choice(...)``),
    parsed by Hydra's own override grammar; plain overrides are kept in every job.
    Returns the jobs and the swept keys."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise UsageError(_one_line(error)) from None
    axes, swept = [], set()
    for override in parsed:
        if override.is_sweep_override():
            key = override.get_key_element()
            swept.add(key)
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [list(job) for job in itertools.product(*axes)], swept


def plan_runs(overrides: list[str], multirun: bool) -> list[Config]:
    """Compose and check every job's config; nothing runs until all of them are valid."""
    from .runner import check_config, default_run_name

    if any(o.startswith("resume=") for o in overrides):
        if multirun:
            raise UsageError("resume= is not allowed with -m: resume one run directory at a time")
        configs = [resume_config(overrides)]
    elif not multirun:
        configs = [compose_config(overrides)]
    else:
        jobs, swept = expand_sweep(overrides)
        # the default name already says disc, optim, seed (or the variant); other swept values are appended
        named_elsewhere = {"disc", "optim", "train.seed", "variant"}
        configs = []
        for job in jobs:
            cfg = compose_config(job)
            if cfg.run_name is None:
                tail = [item.replace("/", "-") for item in job
                        if item.split("=", 1)[0] in swept - named_elsewhere]
                cfg.run_name = "_".join([default_run_name(cfg), *tail])
            configs.append(cfg)
    for cfg in configs:
        check_config(cfg)
    return configs


def launch(configs: list[Config], launcher: str, slurm: dict) -> list[Path]:
    """Run the jobs: one after the other in this process, or through submitit (Slurm when available,
    else local subprocesses)."""
    from .runner import prepare, execute

    if launcher == "local":
        prepared = [prepare(cfg) for cfg in configs]  # every job is checked before the first one trains
        return [execute(p) for p in prepared]
    import submitit

    from .runner import run

    folder = Path(configs[0].out_dir) / configs[0].name / "submitit"
    executor = submitit.AutoExecutor(folder=str(folder))
    executor.update_parameters(**{k: v for k, v in slurm.items() if v is not None})
    jobs = [executor.submit(run, cfg) for cfg in configs]
    print(f"submitted {len(jobs)} job(s) to {executor.cluster}; logs in {folder}", file=sys.stderr)
    return [job.result() for job in jobs]


def _train(args) -> int:
    configs = plan_runs(args.overrides, args.multirun)
    slurm = {"timeout_min": args.timeout_min, "slurm_partition": args.partition, "gpus_per_node": args.gpus,
             "slurm_array_parallelism": args.max_parallel}
    for run_dir in launch(configs, args.launcher, slurm):
        print(run_dir)
    return 0


def _compare(args) -> int:
    from .report import write_comparison
    from .runner import execute, prepare

    base = compose_config(["experiment=compare", *args.overrides])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(base.out_dir) / base.name / stamp
    configs = []
    for variant, seed in itertools.product(base.compare.variants, base.compare.seeds):
        cfg = compose_config(["experiment=compare", *args.overrides, f"disc={variant}", f"train.seed={seed}"])
        cfg.name, cfg.run_name = f"{base.name}/{stamp}", f"{variant}-s{seed}"
        configs.append(cfg)
    prepared = [prepare(cfg) for cfg in configs]
    run_dirs = []
    for p in prepared:
        print(f"[compare] {p.run_dir.name}", file=sys.stderr)
        run_dirs.append(execute(p))
    report = write_comparison(run_dirs, out)
    print(report)
    return 0


def _report(args) -> int:
    from .report import write_comparison, find_run_dirs

    for target in args.dirs:
        run_dirs = find_run_dirs(Path(target))
        print(write_comparison(run_dirs, Path(target)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stiefel-gan", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("train", "train one config (or a sweep with -m)"),
                            ("sweep", "train every combination of comma-separated overrides")):
        p = sub.add_parser(name, help=help_text)
        if name == "train":
            p.add_argument("-m", "--multirun", action="store_true", help="sweep over comma-separated values")
        p.add_argument("--launcher", choices=("local", "submitit"), default="local",
                       help="local: one after the other here; submitit: Slurm when available, else local processes")
        p.add_argument("--partition", help="Slurm partition (submitit)")
        p.add_argument("--timeout-min", type=int, default=None, help="per-job time limit in minutes (submitit)")
        p.add_argument("--gpus", type=int, default=None, help="GPUs per job (submitit)")
        p.add_argument("--max-parallel", type=int, default=None, help="jobs running at once (submitit array)")
        p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. disc=stiefel_curve train.steps=500")
    p = sub.add_parser("compare", help="the main job: SN baseline vs the three Stiefel spectra on digits")
    p.add_argument("overrides", nargs="*", help="Hydra overrides on top of experiment=compare")
    p = sub.add_parser("report", help="write report.md and plots for run or sweep directories")
    p.add_argument("dirs", nargs="+", help="run directories or directories holding runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sweep":
        args.multirun = True
    handlers = {"train": _train, "sweep": _train, "compare": _compare, "report": _report}
    from .gan.train import TrainingDiverged

    try:
        return handlers[args.command](args)
    except ValueError as error:  # UsageError, config checks, DatasetUnavailableError, bad checkpoints
        print(f"stiefel-gan: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"stiefel-gan: training diverged: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
