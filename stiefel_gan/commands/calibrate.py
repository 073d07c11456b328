"""``stiefel-gan calibrate data=<dataset> [overrides...] [--out FILE]``: what each metric of the dataset
gives samples of known quality (:mod:`stiefel_gan.measure.calibration`), printed and written into
``docs/metrics.md`` (or ``--out``) as that dataset's block (:mod:`stiefel_gan.report.calibration`).

The config is composed like every command's, on top of the dataset's study budget (``budget=digits``
for the digits, ``budget=mixtures`` for ring8 / grid25) unless the overrides name a budget or an
experiment, so a calibration is at the sample count, image side and split the studies evaluate at.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path

from ..config.checks import check_config
from ..config.compose import UsageError, compose_config

#: the docs file the tables are published in, from the repository's root
DEFAULT_OUT = Path("docs/metrics.md")
#: each dataset's study budget (configs/budget/)
STUDY_BUDGET = {"digits": "digits", "ring8": "mixtures", "grid25": "mixtures"}
#: what decides the numbers: a table made with uncommitted changes here says so
SOURCE_PATHS = ("stiefel_gan", "configs")


def _dataset(overrides: list[str]) -> str:
    """The value of the last ``data=`` override, else the config's default (digits)."""
    values = [o.partition("=")[2] for o in overrides if o.lstrip("+~").partition("=")[0] == "data"]
    return values[-1] if values else "digits"


def _with_budget(overrides: list[str], dataset: str) -> list[str]:
    """``budget=X`` is an addition to the defaults list (``+budget=X``); without a budget or an experiment,
    the dataset's study budget comes first."""
    keys = [o.lstrip("+~").partition("=")[0] for o in overrides]
    if "budget" in keys:
        return [f"+{o}" if o.startswith("budget=") else o for o in overrides]
    if "experiment" in keys:
        return overrides
    return [f"+budget={STUDY_BUDGET[dataset]}", *overrides]


def _commit() -> str:
    """The checkout's short commit, with ``+ uncommitted changes`` when the code or configs differ from it."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        changes = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                  *SOURCE_PATHS], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an installed package (no git checkout)"
    return f"commit {commit}" + (" + uncommitted changes" if changes else "")


def _machine(threads: int) -> str:
    model = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {threads} torch thread{'s' if threads != 1 else ''}"


def calibrate_command(args) -> int:
    import torch

    from ..measure.calibration import CALIBRATED_DATASETS, calibrate
    from ..report.calibration import calibration_block, write_calibration_block

    overrides = list(args.overrides)
    dataset = _dataset(overrides)
    if dataset not in CALIBRATED_DATASETS:
        raise UsageError(f"data={dataset} is not allowed for calibrate: use one of {', '.join(CALIBRATED_DATASETS)} "
                         "(CIFAR-10 and STL-10 need Inception weights and the data on disk)")
    cfg = compose_config(_with_budget(overrides, dataset))
    try:
        check_config(cfg)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if dataset == "digits" and cfg.data.split != "train":
        raise UsageError(f"data.split={cfg.data.split} is not allowed for calibrate data=digits: use train (the "
                         "held-out digits are the reference a calibration row is measured against)")
    out = Path(args.out) if args.out is not None else DEFAULT_OUT
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory: give the markdown file the table goes into")
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    command = " ".join(["stiefel-gan calibrate", *([] if any(o.startswith("data=") for o in overrides)
                                                   else ["data=digits"]), *overrides])
    print(f"[calibrate] {dataset}: {cfg.metrics.n_samples} samples a row and seed", file=sys.stderr, flush=True)
    started = time.perf_counter()
    calibration = calibrate(cfg)
    seconds = time.perf_counter() - started
    provenance = f"{_commit()}, {_machine(torch.get_num_threads())}, {seconds:.1f} s, {time.strftime('%Y-%m-%d')}"
    block = calibration_block(calibration, command, provenance)
    write_calibration_block(out, dataset, block)
    print(block)
    print(f"[calibrate] {dataset}: {seconds:.1f} s; written to {out}", file=sys.stderr)
    return 0
