"""What the benchmark scripts share: the common arguments (device, threads, repetitions, JSON), their
checks, the environment record, round-robin timing with medians and quartiles, and the JSON output.

Every script runs from the repository root (``python benchmarks/<script>.py``), which puts this
directory on ``sys.path``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

# geoopt compiles helpers with torch.jit.script, which torch deprecates with a FutureWarning per helper
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")

import geoopt  # noqa: E402
import torch  # noqa: E402


def add_common_arguments(parser: argparse.ArgumentParser, *, reps: int | None, warmup: int | None,
                         device: bool = True) -> None:
    """``--threads``, ``--reps``, ``--json``, and ``--warmup`` / ``--device`` where the script has them
    (``warmup=None`` / ``device=False``: it has not). ``step_time.py`` passes ``reps=None`` and fills the
    defaults in itself (they depend on ``--quick``)."""
    if device:
        parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--reps", type=int, default=reps, help=f"timed rounds (default {reps})")
    if warmup is not None or device:
        parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed rounds first (default {warmup})")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall time, or this process's CPU time (for a loaded machine; default wall)")


def check_common_arguments(args: argparse.Namespace) -> None:
    """One-line ValueErrors for bad common values; turns ``args.device`` into a ``torch.device``."""
    for name in ("threads", "reps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} {getattr(args, name)} is not allowed: use an integer >= 1")
    if getattr(args, "warmup", None) is not None and args.warmup < 0:
        raise ValueError(f"--warmup {args.warmup} is not allowed: use an integer >= 0")
    if hasattr(args, "device"):
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise ValueError(f"--device {args.device!r} is not allowed: use cpu, cuda or cuda:N") from None
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"--device {args.device!r} is not allowed: use cpu, cuda or cuda:N")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device!r} is not allowed here: no CUDA device is available")
        args.device = device
    Clock(getattr(args, "device", torch.device("cpu")), args.clock)  # a bad combination fails here, in one line


def environment(device: torch.device | None = None) -> dict:
    """Versions, device, threads, commit and the load average at the start (the machine is shared)."""
    device = device or torch.device("cpu")
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    elif Path("/proc/cpuinfo").exists():
        device_name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                            if line.startswith("model name")), platform.processor())
    else:
        device_name = platform.processor()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "geoopt": geoopt.__version__, "python": platform.python_version(),
            "device": str(device), "device_name": device_name, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "git_commit": commit, "load_average_start": list(os.getloadavg())}


def summarize(seconds: list[float]) -> dict:
    """Median, quartiles, min, max in milliseconds."""
    ms = sorted(1e3 * s for s in seconds)
    quartiles = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else [ms[0]] * 3
    return {"median_ms": statistics.median(ms), "q1_ms": quartiles[0], "q3_ms": quartiles[2],
            "min_ms": ms[0], "max_ms": ms[-1], "n": len(ms)}


#: ``--clock``: ``wall`` (``time.perf_counter``) or ``cpu`` (this process's CPU time, ``time.process_time``).
CLOCKS = ("wall", "cpu")


class Clock:
    """Time reads that wait for the device first (CUDA kernels run asynchronously).

    Note [CPU time on a shared machine]
        On a machine whose cores are oversubscribed by other jobs, the wall time of a step is mostly
        time spent waiting for a core (and, with several threads, OpenMP workers waiting for each
        other). The process's CPU time is not: with ``--threads 1`` it is the work done, nearly
        independent of the load. ``--clock cpu`` reports that instead (CPU only: a CUDA kernel's time
        is not the host's CPU time).
    """

    def __init__(self, device: torch.device, kind: str = "wall"):
        if kind not in CLOCKS:
            raise ValueError(f"--clock {kind!r} is not allowed: use one of {', '.join(CLOCKS)}")
        if kind == "cpu" and device.type == "cuda":
            raise ValueError("--clock cpu is not allowed with a CUDA device: use --clock wall")
        self.cuda = device.type == "cuda"
        self.device = device
        self.read = time.process_time if kind == "cpu" else time.perf_counter

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return self.read()


@contextmanager
def gc_paused():
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def round_robin(calls: dict[str, Callable[[], None]], reps: int, warmup: int, clock: Clock) -> dict[str, list[float]]:
    """Seconds of each call over ``reps`` rounds; each round runs every call once, starting from a
    different one each time, so drift in the machine's load hits all alike. ``warmup`` untimed rounds
    first; the garbage collector is paused while timing."""
    names = list(calls)
    for _ in range(warmup):
        for call in calls.values():
            call()
    times = {name: [] for name in names}
    with gc_paused():
        for rep in range(reps):
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                start = clock.now()
                calls[name]()
                times[name].append(clock.now() - start)
    return times


def write_json(path: Path | None, report: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")
