"""``stiefel-gan``: train a run or a study, run the main comparison, write reports, W&B sweeps and dashboards.

    stiefel-gan train [hydra args...]          the Hydra app (stiefel_gan.commands.train): one run, or -m for a study
    stiefel-gan compare [overrides...]         the main job: SN vs the three Stiefel spectra on digits
    stiefel-gan report RUN_OR_SWEEP_DIR... [report.KEY=VALUE...]   report.md and plots from finished runs
    stiefel-gan calibrate data=D [--out FILE]  what the metrics of D give samples of known quality (docs/metrics.md)
    stiefel-gan confirm STUDY_DIR [overrides]  a tuning study's confirm step: every method's best on its confirm seeds
    stiefel-gan sweep STUDY [--local]          the study as a W&B sweep (configs/sweeps/STUDY.yaml)
    stiefel-gan dashboard --entity E --project P --study S [--dry-run FILE]   a W&B workspace

Bad input stops with one line on stderr and exit status 2, before anything is written. A failure
during a run keeps its traceback (exit status 1); a run stopped by SIGTERM / SIGINT exits 128 + signal.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .. import __version__
from ..config.compose import UsageError, one_line
from .calibrate import calibrate_command
from .compare import compare
from .train import run_train

#: a ``stiefel-gan report`` argument that sets a report setting rather than naming a directory
REPORT_OVERRIDE = re.compile(r"^report\.\w+=")


def report_overrides(items: list[str]) -> dict:
    """``report.KEY=VALUE`` arguments of ``stiefel-gan report`` as ``{KEY: value}`` (values read as YAML,
    ``report.regress_on=[disc.tau, log(lipschitz/lower_bound@0)]``), checked against the schema's
    ``report`` section (:func:`~stiefel_gan.config.checks.check_report`): a UsageError in one line."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..config.checks import check_report
    from ..config.schema import ReportConfig

    if not items:
        return {}
    try:
        given = OmegaConf.from_dotlist(items)["report"]
        merged = OmegaConf.merge(OmegaConf.structured(ReportConfig), given)
        check_report(OmegaConf.to_object(merged))
    except (OmegaConfBaseException, ValueError) as error:
        raise UsageError(f"{' '.join(items)} is not allowed: {one_line(error)}") from None
    return {key: OmegaConf.to_container(merged)[key] for key in given}


def _report(args) -> int:
    from ..report.discovery import find_run_dirs
    from ..report.markdown import check_reports, write_reports

    # report.KEY=VALUE among the directories: settings over the runs' own report section
    overrides = report_overrides([item for item in args.dirs if REPORT_OVERRIDE.match(item)])
    args.dirs = [item for item in args.dirs if not REPORT_OVERRIDE.match(item)]
    if not args.dirs:
        raise UsageError("report with no directory is not allowed: give run directories or directories holding runs")
    if args.out is not None and len(args.dirs) > 1:
        raise UsageError(f"--out {args.out} is not allowed with {len(args.dirs)} directories: give one directory "
                         "(its report goes to --out), or leave --out out (each report goes next to its runs)")
    try:
        targets = {Path(target): find_run_dirs(Path(target)) for target in args.dirs}
        for run_dirs in targets.values():  # every directory's runs checked before the first report is written
            check_reports(run_dirs, overrides)
    except ValueError as error:
        raise UsageError(one_line(error)) from None
    for target, run_dirs in targets.items():
        for report in write_reports(run_dirs, args.out or target, all_seed_samples=args.samples == "all",
                                    overrides=overrides):
            print(report)
    return 0


def _confirm(args) -> int:
    from ..report.tuning import confirm_command, confirm_plan

    try:
        overrides = confirm_plan(Path(args.dir), args.overrides)
    except ValueError as error:
        raise UsageError(one_line(error)) from None
    print(confirm_command(overrides))
    return 0 if args.dry_run else run_train(["-m", *overrides])


def _sweep(args) -> int:
    from .sweeps import create_sweep, run_local_sweep

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
    p.add_argument("dirs", nargs="+", help="run directories or directories holding runs, and report.KEY=VALUE "
                                            "settings over the runs' own (report.regress_on=[disc.tau,...])")
    p.add_argument("--out", type=Path, help="write report.md and its figures here (default: into the directory "
                                            "given), e.g. docs/figures/<study> to publish a study's report")
    p.add_argument("--samples", choices=("all", "median"), default="all",
                   help="all: samples.png (each variant's median seed) and samples_all_seeds.png; median: "
                        "samples.png only (every figure then stays small enough to publish)")
    p = sub.add_parser("calibrate", help="the calibration table of a dataset's metrics (real, degraded and "
                                         "untrained-G samples), written into docs/metrics.md")
    p.add_argument("overrides", nargs="*", help="Hydra overrides: data=digits|ring8|grid25, metrics.n_samples=...")
    p.add_argument("--out", type=Path, help="the markdown file to write the dataset's block into (default: "
                                            "docs/metrics.md, from the repository's root)")
    p = sub.add_parser("confirm", help="a tuning study's confirm step: run every method's best setting (chosen on "
                                       "the selection seeds) on the study's confirm seeds (docs/studies.md)")
    p.add_argument("dir", help="the tuning study's directory (runs/tuning)")
    p.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    p.add_argument("overrides", nargs="*", help="the selection sweep's own overrides (train.steps=...), if any")
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
    # overrides may follow an option (sweep smoke --local train.steps=2, report DIR --out X report.alpha=0.01):
    # argparse leaves them unknown, and they join the command's trailing positional list
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        trailing = next((name for name in ("overrides", "dirs") if hasattr(args, name)), None)
        if trailing is None or any(item.startswith("-") for item in unknown):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        setattr(args, trailing, getattr(args, trailing) + unknown)
    handlers = {"compare": compare, "calibrate": calibrate_command, "report": _report, "confirm": _confirm,
                "sweep": _sweep, "dashboard": _dashboard}
    try:
        return handlers[args.command](args)
    except UsageError as error:  # raised before anything runs or is written; anything else is a bug
        print(f"stiefel-gan: error: {one_line(error)}", file=sys.stderr)
        return 2
